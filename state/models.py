"""Workflow and node-run state: the documents every store keeps, as plain value types.

Field names are the wire's (`steps`, `step_id`: the status document's words, a
public contract; see "Names" in README.md); everything else in the code says "node".

A `WorkflowState` is saved after its transitions; stores write only the fields
that changed (state/layout.py) in one atomic write, so any replica reading it
sees a consistent picture.

Each document is one typed model, a msgspec Struct, and msgspec is the only
(de)serialisation path (`encode` / `decode_*` below; state/layout.py splits a
workflow into fields with them): nothing is converted by hand. Decoding is strict
about types (a stored document that does not fit its model fails loudly) and
ignores keys it does not know, so documents written before these models — which
also carried the derived `duration_ms` of each step and the workflow's
`fallbacks` — still load. Derived values are properties, computed when read, and
not stored.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum
from typing import Any, TypeVar

import msgspec

JSON = Any

# Added to and taken from a float under 2**51 in magnitude, it rounds that float to a
# whole number, half to even, in float arithmetic (the addition's own rounding).
_TO_WHOLE = 6755399441055744.0  # 2**52 + 2**51


def milliseconds(seconds: float) -> float:
    """`round(seconds * 1000.0, 3)`, the same float, without its decimal conversion.

    Every step's and workflow's `duration_ms` is one of these, several per workflow
    (its events, its answer), and `round(x, 3)` converts `x` to decimal digits and back:
    ~3.5 K instructions, several times this. Here the microseconds are rounded in
    float arithmetic; that whole number of microseconds is the one `round` finds
    unless the product `ms * 1000.0` was itself rounded across a half (it is within
    a quarter-millionth of one when under 2**31 in magnitude), and divided by 1000.0
    it is the float nearest that decimal, as `round` returns. A number near a half,
    zero (round keeps the sign of a zero) or out of that range takes `round` itself.
    tests/state/test_milliseconds.py holds the two to the same float.
    """
    ms = seconds * 1000.0
    scaled = ms * 1000.0
    whole = scaled + _TO_WHOLE - _TO_WHOLE
    if whole and -0.4999 < scaled - whole < 0.4999 and -2147483648.0 < whole < 2147483648.0:
        return whole / 1000.0
    return round(ms, 3)


class WorkflowStatus(StrEnum):
    # Set on every member below: read on every transition, an attribute costs no call.
    is_terminal: bool

    PENDING = "pending"
    RUNNING = "running"
    # Stopped between nodes on request; resumable from any replica. Not terminal.
    PAUSED = "paused"
    COMPLETED = "completed"
    DEGRADED = "degraded"
    FAILED = "failed"
    CANCELLED = "cancelled"


_TERMINAL_WORKFLOW = frozenset(
    {
        WorkflowStatus.COMPLETED,
        WorkflowStatus.DEGRADED,
        WorkflowStatus.FAILED,
        WorkflowStatus.CANCELLED,
    }
)
for _workflow_status in WorkflowStatus:
    _workflow_status.is_terminal = _workflow_status in _TERMINAL_WORKFLOW


class NodeStatus(StrEnum):
    # Set on every member below, as WorkflowStatus's.
    is_terminal: bool

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


for _node_status in NodeStatus:
    _node_status.is_terminal = _node_status not in (NodeStatus.PENDING, NodeStatus.RUNNING)


class NodeFailure(msgspec.Struct):
    """Why a node failed: kept on its run so status can explain it."""

    type: str
    message: str
    agent: str | None = None
    attempts: int = 0
    input: JSON = None


class NodeRun(msgspec.Struct):
    """One node's run in a workflow: what the status document shows under `steps`.

    Fields are named as on the wire (`step_id`), since this is that document.
    """

    step_id: str
    kind: str
    agent: str | None = None
    status: NodeStatus = NodeStatus.PENDING
    attempts: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    output: JSON = None
    error: NodeFailure | None = None
    # Set when the output came from the node's fallback instead of the node itself.
    fallback: str | None = None
    skip_reason: str | None = None

    @property
    def duration_ms(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return milliseconds(self.finished_at - self.started_at)


class WorkflowError(msgspec.Struct):
    code: str
    message: str
    step_id: str | None = None
    agent: str | None = None


class WorkflowState(msgspec.Struct):
    workflow_id: str
    definition_name: str
    status: WorkflowStatus = WorkflowStatus.PENDING
    inputs: dict[str, JSON] = msgspec.field(default_factory=dict)
    steps: dict[str, NodeRun] = msgspec.field(default_factory=dict)
    result: JSON = None
    error: WorkflowError | None = None
    created_at: float = msgspec.field(default_factory=time.time)
    updated_at: float = msgspec.field(default_factory=time.time)
    finished_at: float | None = None
    # Which replica runs it; status readers use it for display only.
    owner: str | None = None
    # The client's definition (None for built-in workflows), so any replica can resume it.
    definition: JSON = None
    # The schedule that started it (None: started by a client).
    schedule_id: str | None = None
    # The tenant that submitted it: only that tenant (and admins) can see or cancel it.
    tenant: str | None = None
    # The Idempotency-Key it was submitted with (per tenant), if any.
    submit_key: str | None = None

    @property
    def fallbacks(self) -> list[dict[str, JSON]]:
        """Nodes whose output came from a fallback, and why (wire keys)."""
        return [
            {"step_id": s.step_id, "reason": s.fallback}
            for s in self.steps.values()
            if s.fallback is not None
        ]

    def to_dict(self) -> dict[str, JSON]:
        """The document as JSON-ready builtins, with its derived `fallbacks` and each
        step's `duration_ms` (what the status document has always shown)."""
        document: dict[str, JSON] = msgspec.to_builtins(self)
        for sid, run in self.steps.items():
            document["steps"][sid]["duration_ms"] = run.duration_ms
        document["fallbacks"] = self.fallbacks
        return document


class WorkflowHeader(msgspec.Struct):
    """The small part of a workflow that status and history read without the rest
    (no steps, inputs, result or definition): stored apart (state/layout.py)."""

    workflow_id: str
    definition_name: str
    status: WorkflowStatus
    error: WorkflowError | None
    created_at: float
    updated_at: float
    finished_at: float | None
    owner: str | None
    tenant: str | None
    submit_key: str | None

    @classmethod
    def of(cls, state: WorkflowState) -> WorkflowHeader:
        return cls(
            state.workflow_id,
            state.definition_name,
            state.status,
            state.error,
            state.created_at,
            state.updated_at,
            state.finished_at,
            state.owner,
            state.tenant,
            state.submit_key,
        )


class HistoryEntry(msgspec.Struct, frozen=True):
    """A workflow as the history lists it: its stored header without the Idempotency-Key
    (decoded from the header, whose `submit_key` it does not read)."""

    workflow_id: str
    definition_name: str
    status: WorkflowStatus
    error: WorkflowError | None
    created_at: float
    updated_at: float
    finished_at: float | None
    owner: str | None
    tenant: str | None


class WorkflowSpec(msgspec.Struct):
    """What a workflow was started with: written once, at accept."""

    inputs: dict[str, JSON] = msgspec.field(default_factory=dict)
    definition: JSON = None


T = TypeVar("T")

_ENCODER = msgspec.json.Encoder()


# JSON of any document above (or of a plain JSON value: a result, an order). The
# encoder's own method: no Python frame around each of the several encodes per save.
encode: Callable[[Any], bytes] = _ENCODER.encode


_DECODERS: dict[Any, msgspec.json.Decoder[Any]] = {}


def decode(blob: bytes, model: type[T]) -> T:
    """`blob` as `model` (strict types, unknown keys ignored); raises
    `msgspec.ValidationError` (a `ValueError`) when it does not fit."""
    decoder = _DECODERS.get(model)
    if decoder is None:
        decoder = _DECODERS[model] = msgspec.json.Decoder(model)
    found: T = decoder.decode(blob)
    return found
