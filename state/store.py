"""The `StateStore` contract every backend (memory, Redis) fulfils.

Contract (tests/state/test_store_contract.py runs one suite against every
implementation):

- `save` writes the document and (re)sets its TTL, and the TTL of every other
  key of that workflow, in the same operation. It sends only what changed since
  this store's last save of the workflow (the header and the changed steps;
  inputs and definition once), counted in `write_stats`. A terminal save
  compacts the workflow (the final document without the client's definition)
  and keeps it for `retention_s` instead of `ttl_s`.
- Fencing: an owner's `save` carries its lease token (the generation its
  `leases().claim` returned). The store refuses, with `LeaseLost` and without
  writing, a save whose token is not the workflow's current generation,
  checked in the same atomic operation as the write. A save without a token
  is accepted only while nobody ever claimed the workflow. When nothing of the
  workflow is left at all (expired, or lost by a Redis restart without
  persistence) there is no newer owner to protect: a save with a token writes
  it again and that token becomes the current generation.
- A terminal document is final: `save` of a state whose stored copy is already
  terminal writes nothing and returns False (a late writer never flips a
  finished workflow back).
- `accept` is a new workflow's first `save`, together with its first lease claim
  (the workflow listed under its owner, the owner kept alive, the token its
  generation): one operation, so accepting a workflow costs one round trip. It
  refuses (`LeaseLost`) an id of which anything exists.
- `get` returns None for an unknown or expired workflow.
- `completes_in_turn`: when True, no operation but the subscriptions' streams ever
  suspends its caller (the contract suite drives each one's coroutine a single step).
- `request_cancel` sets a cancel flag (readable with `cancel_requested`, expiring
  with the workflow's document, or after `ttl_s` if there is none) and notifies
  the workflow's owner only — the subscribers of `subscribe_cancellations(owner)`
  in any process on the same backend — or, for a workflow nobody claimed, every
  subscriber. It never rewrites the document's fields, which belong to the
  replica running the workflow (it marks the workflow watched, below).
- `set_pause(id, True)` sets a pause flag (readable with `pause_requested`,
  expiring like the cancel flag); `set_pause(id, False)` clears it. Like a
  cancel, it never rewrites the document and is delivered to the owner's
  `subscribe_cancellations(owner)` stream (the id: the owner reads the flags).
- `subscribe_cancellations(owner)` returns once listening; its iterator yields
  workflow ids as their cancel (or pause, or resume) is requested from then on
  (at least once: after a lost connection the Redis store replays the ids of every
  workflow listed under `owner` — never a keyspace scan — since a cancel, pause or
  resume may have been missed; an id may come twice): read its flags. The iterator ends when
  the store is closed, or when the caller closes it (`CancellationStream.aclose()`).
- `append_event` appends a JSON object to the workflow's event log, numbers it
  (1, 2, 3, ... per workflow, by the store, whichever replica appends) and
  publishes it to every `subscribe_events` stream of that workflow on any
  replica. The log shares the document's TTL. `append_events` appends several, in
  order, in one operation, numbered consecutively. `events_since(id, after)` returns
  the logged events with a sequence number above `after`, in order.
  `subscribe_events(id)` returns once listening (state/events.py).
- A `save` that writes the terminal document of a *watched* workflow (a cancel
  was requested, or someone called `watch_finish`) notifies every subscriber of
  `subscribe_finishes()` (any process on the same backend) with the workflow id:
  a caller waiting for a workflow to end is woken, it does not poll. A
  notification is a wake-up, not a record: after one, read the document.
- `history(query)` lists workflows newest first (state/history.py); an entry
  goes when its document expires.
- `reserve_submit(tenant, key, workflow_id=, digest=)` takes a tenant's
  Idempotency-Key for a new workflow atomically across replicas, or returns the (id, digest) already
  holding it; it expires with the workflow (`ttl_s`, then `retention_s` from its
  terminal save). `release_submit` frees a key whose submit failed.
- Backend failures surface as `StateStoreError`, never as the backend's own
  exceptions; `ping` returns False instead of raising. A Redis store that
  cannot reach Redis when a subscription starts still returns the stream, and
  starts listening (replaying standing cancel flags) once Redis answers.

Errors::

    StateError
    ├── StateStoreError   the backend failed: unreachable, timed out, no pooled
    │                     connection free in time (the API answers 503)
    ├── LeaseLost         a fenced write refused: another replica owns the workflow now
    └── BadCursor         (state/history.py) a history cursor this service did not hand
                          out (the API answers 400); also a ValueError

`StateError` itself lives in state/errors.py, which imports nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from state.cancellations import CancellationStream, WorkflowIdStream
from state.errors import StateError
from state.events import EventStream, StoredEvent
from state.history import HistoryPage, HistoryQuery
from state.layout import WriteStats
from state.models import WorkflowState

if TYPE_CHECKING:
    from state.leases import LeaseStore
    from state.schedules import ScheduleStore


class StateStoreError(StateError):
    """The backend failed (unreachable, timed out, refused the command).

    Raised `from` the backend's own exception, which stays on `__cause__`.
    """

    def __init__(
        self, message: str, *, backend: str, operation: str, workflow_id: str | None = None
    ) -> None:
        super().__init__(message)
        self.backend = backend
        self.operation = operation
        self.workflow_id = workflow_id


class LeaseLost(StateError):
    """A write carried a lease token that is no longer the workflow's current one.

    The writer was presumed dead and another replica claimed the workflow: it must
    stop the workflow and write nothing more (the new owner's progress stands).
    """

    def __init__(self, workflow_id: str, *, token: int | None) -> None:
        super().__init__(f"workflow {workflow_id!r}: lease token {token} is not current")
        self.workflow_id = workflow_id
        self.token = token


class StateStore(Protocol):
    @property
    def ttl_s(self) -> int:
        """Seconds every key of a workflow lives after its last write."""
        ...

    @property
    def retention_s(self) -> int:
        """Seconds a finished workflow is kept after its terminal write."""
        ...

    @property
    def backend(self) -> str:
        """Short name for logs and start-up lines: "memory", "redis" or "redis-cluster"."""
        ...

    @property
    def write_stats(self) -> WriteStats:
        """What saves sent (fields, bytes): for tests and bench/."""
        ...

    @property
    def completes_in_turn(self) -> bool:
        """True when every operation (all but the subscriptions' streams) completes in its
        caller's turn of the event loop, never suspending: an in-process store, no I/O.

        Nothing can then interrupt an operation half-way (a cancel lands only where a
        coroutine suspends), so the lifecycle awaits `accept` directly instead of carrying
        it through its caller's cancel in a task of its own, and yields no loop turns
        before a finished workflow's housekeeping (it has no I/O to put behind an answer).
        A store that may suspend (any network store; a test fake that waits) says False.
        """
        ...

    async def save(
        self,
        state: WorkflowState,
        *,
        token: int | None = None,
        events: Sequence[Mapping[str, Any]] = (),
    ) -> bool:
        """Write the document and refresh the workflow's TTL; False if already terminal.

        `events` (those told with the document: a running write's since the last append,
        a terminal write's last ones) are appended to the workflow's event log
        in the same operation, after the document, as `append_events` would append them,
        and only when the document is written (True): an already terminal one had its
        last events told by whoever ended it (or by this very write, when its answer was
        lost and it is sent again). On Redis that is one script, not a command more.

        Raises `LeaseLost` (writing nothing) when `token` is not the current lease
        generation of the workflow.
        """
        ...

    async def accept(self, state: WorkflowState, *, lease_s: float | None = None) -> int | None:
        """Write a new workflow's first document; with `lease_s`, claim its lease for
        `state.owner` in the same operation, as `leases().claim` would, and return the
        fencing token (None without `lease_s`).

        One round trip on Redis. Raises `LeaseLost` (writing nothing) when anything of
        the workflow exists already: a new workflow's id is never taken.
        """
        ...

    async def get(self, workflow_id: str) -> WorkflowState | None: ...

    async def request_cancel(self, workflow_id: str) -> None:
        """Set the cancel flag and notify the workflow's owner."""
        ...

    async def watch_finish(self, workflow_id: str) -> None:
        """Have this workflow's terminal write published to `subscribe_finishes()`."""
        ...

    async def cancel_requested(self, workflow_id: str) -> bool: ...

    async def set_pause(self, workflow_id: str, paused: bool) -> None:
        """Set (True) or clear (False) the workflow's pause flag and notify its owner."""
        ...

    async def pause_requested(self, workflow_id: str) -> bool: ...

    async def subscribe_cancellations(self, owner: str | None = None) -> CancellationStream:
        """Start listening; the returned iterator yields workflow ids to cancel.

        Returns once the subscription is live (for Redis: SUBSCRIBE confirmed).
        `aclose()` on the stream (or `async with`) stops it early.
        """
        ...

    async def append_event(self, workflow_id: str, event: Mapping[str, Any]) -> int:
        """Log and publish a progress event; returns its sequence number."""
        ...

    async def append_events(self, workflow_id: str, events: Sequence[Mapping[str, Any]]) -> int:
        """Log and publish several events, in order, in one operation (one Redis command);
        returns the last one's sequence number. Raises ValueError when `events` is empty."""
        ...

    async def events_since(self, workflow_id: str, after: int = 0) -> list[StoredEvent]:
        """The logged events numbered above `after`, oldest first."""
        ...

    async def subscribe_events(self, workflow_id: str) -> EventStream:
        """Start listening to one workflow's events; returns once the subscription is live."""
        ...

    async def subscribe_finishes(self) -> WorkflowIdStream:
        """Start listening; the iterator yields ids of workflows whose terminal document
        was just written (by any replica). Same lifetime rules as cancellations."""
        ...

    async def history(self, query: HistoryQuery) -> HistoryPage:
        """One page of workflows, newest first; raises `BadCursor` for a forged cursor."""
        ...

    async def reserve_submit(
        self, tenant: str | None, idempotency_key: str, *, workflow_id: str, digest: str
    ) -> tuple[str, str] | None:
        """Take the key for `workflow_id`; or the (id, digest) that already holds it.

        A workflow saved with `submit_key` = the key (and its tenant) keeps it alive
        for its retention once it ends.
        """
        ...

    async def release_submit(
        self, tenant: str | None, idempotency_key: str, *, workflow_id: str
    ) -> None: ...

    async def ping(self) -> bool:
        """True when the backend answers (readiness)."""
        ...

    def leases(self) -> LeaseStore:
        """Owner leases on the same backend (state/leases.py)."""
        ...

    def schedules(self) -> ScheduleStore:
        """Schedules on the same backend (state/schedules.py); the same object every call."""
        ...

    async def close(self) -> None:
        """Release connections; every subscription's iterator then ends."""
        ...
