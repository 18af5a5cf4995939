"""The `StateStore` contract every backend (memory, Redis) fulfils.

Contract (tests/contract runs the same suite against every implementation):

- `save` writes the whole document and (re)sets its TTL, and the TTL of every
  other key of that workflow, in the same operation.
- A terminal document is final: `save` of a state whose stored copy is already
  terminal writes nothing and returns False (a late writer never flips a
  finished workflow back).
- `get` returns None for an unknown or expired workflow.
- `request_cancel` sets a cancel flag (readable with `cancel_requested`, with the
  workflow's TTL) and notifies every subscriber of `cancellations()`, in this
  process or any other process on the same backend. It never rewrites the
  document, which belongs to the replica running the workflow.
- `cancellations()` yields workflow ids as their cancel is requested, from the
  moment the iterator has started (`subscribe` returns once listening).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from state.models import WorkflowState


class StateStore(Protocol):
    @property
    def ttl_s(self) -> int:
        """Seconds every key of a workflow lives after its last write."""
        ...

    @property
    def backend(self) -> str:
        """Short name for logs and start-up lines: "memory" or "redis"."""
        ...

    async def save(self, state: WorkflowState) -> bool:
        """Write the document and refresh the workflow's TTL; False if already terminal."""
        ...

    async def get(self, workflow_id: str) -> WorkflowState | None: ...

    async def request_cancel(self, workflow_id: str) -> None:
        """Set the cancel flag and notify every replica."""
        ...

    async def cancel_requested(self, workflow_id: str) -> bool: ...

    async def subscribe_cancellations(self) -> AsyncIterator[str]:
        """Start listening; the returned iterator yields workflow ids to cancel."""
        ...

    async def ping(self) -> bool:
        """True when the backend answers (readiness)."""
        ...

    async def close(self) -> None: ...
