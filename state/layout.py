"""How a `WorkflowState` is laid out as hash fields, and what a save must send.

Both stores keep a workflow as fields (state/keys.py lists them): a small header,
the inputs and definition written once (`spec`), the step order, one field per
step and the result. `FieldCache` remembers, per workflow this process writes,
a cheap fingerprint of every field it last sent, so a transition sends the
header plus the steps that changed — not the whole document. A step's
fingerprint holds the identity of its output and error: the DAG engine replaces
them, it never mutates them in place (the DAG engine assigns new values).

Every field is one typed document of state/models.py, encoded and decoded by
msgspec there. A terminal state is written *compacted*: the whole final document
without the client's definition (only a resume needed it), as zlib-compressed JSON (workflow
documents are repetitive JSON: a 3-step chain shrinks about 3x), and the header
uncompressed (history reads it), in place of the per-step fields. A store may ask
for documents under a size to be kept as plain JSON instead (`compress_from`): both
stores do, as zlib costs more CPU than a small document is worth saving. The two forms
go under two field names (`docz`, `doc`), so a reader never guesses an encoding
from the bytes and a dump of the hash says which one it holds.
"""

from __future__ import annotations

import zlib
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from state import keys
from state.models import (
    HistoryEntry,
    NodeRun,
    WorkflowHeader,
    WorkflowSpec,
    WorkflowState,
    decode,
    encode,
)

# Workflows whose fingerprints a process remembers; an evicted one is written whole once.
_CACHE_WORKFLOWS = 10_000
# zlib level of compacted documents: the fastest; most of the gain is in any level.
_COMPACT_LEVEL = 1


@dataclass(slots=True)
class WriteStats:
    """What saves sent to the backend: counts for tests and bench/."""

    saves: int = 0
    fields: int = 0
    nbytes: int = 0

    def add(self, fields: Mapping[str, bytes], nbytes: int | None = None) -> None:
        """Count one save of `fields`; `nbytes` (names and values) when the caller has
        summed them already, as the memory store does while merging them in."""
        self.saves += 1
        self.fields += len(fields)
        self.nbytes += sum(len(k) + len(v) for k, v in fields.items()) if nbytes is None else nbytes


def _run_print(run: NodeRun) -> tuple[Any, ...]:
    return (
        run.status, run.attempts, run.started_at, run.finished_at, run.fallback,
        run.skip_reason, run.kind, run.agent, id(run.output), id(run.error),
    )


# Made on every save, so msgspec Structs rather than dataclasses: built in C, without a
# Python `__init__` frame each (two per save).
class _Written(msgspec.Struct, gc=False):
    order: tuple[str, ...]
    steps: dict[str, tuple[Any, ...]]
    result_id: int


class Changes(msgspec.Struct, gc=False):
    """What one save sends, and the fingerprints to remember once the backend took it.

    Both are taken in the same instant: the state may change while the write is in
    flight, and what is remembered must be what was sent.
    """

    workflow_id: str
    fields: dict[str, bytes]
    written: _Written


class FieldCache:
    """Per workflow: fingerprints of the fields this process last wrote."""

    def __init__(self, capacity: int = _CACHE_WORKFLOWS) -> None:
        self._capacity = capacity
        self._written: OrderedDict[str, _Written] = OrderedDict()

    def changes(self, state: WorkflowState, *, full: bool = False) -> Changes:
        """The fields to send for `state`: all of them the first time (or with `full`)."""
        written = None if full else self._written.get(state.workflow_id)
        fields = {keys.DOC_HEADER_FIELD: encode(WorkflowHeader.of(state))}
        order = tuple(state.steps)
        prints = {sid: _run_print(s) for sid, s in state.steps.items()}
        if written is None:
            fields[keys.DOC_SPEC_FIELD] = encode(WorkflowSpec(state.inputs, state.definition))
        if written is None or written.order != order:
            fields[keys.DOC_ORDER_FIELD] = encode(order)
        old_prints = written.steps if written is not None else {}
        for sid, run in state.steps.items():
            if old_prints.get(sid) != prints[sid]:
                fields[keys.DOC_NODE_PREFIX + sid] = encode(run)
        if written is None or written.result_id != id(state.result):
            fields[keys.DOC_RESULT_FIELD] = encode(state.result)
        return Changes(state.workflow_id, fields, _Written(order, prints, id(state.result)))

    def remember(self, changes: Changes) -> None:
        """The backend now holds what `changes` sent."""
        self._written[changes.workflow_id] = changes.written
        self._written.move_to_end(changes.workflow_id)
        while len(self._written) > self._capacity:
            self._written.popitem(last=False)

    def forget(self, workflow_id: str) -> None:
        self._written.pop(workflow_id, None)

    def knows(self, workflow_id: str) -> bool:
        return workflow_id in self._written


def compacted(state: WorkflowState, *, compress_from: int = 0) -> dict[str, bytes]:
    """The fields of a finished workflow: the final document (no definition) and its header.

    The document is zlib-compressed (`docz`) when its JSON is at least `compress_from`
    bytes long (always, by default: what Redis stores), else kept as it is (`doc`).
    """
    # A copy without the definition only when there is one (a built-in has none).
    final = encode(
        state if state.definition is None else msgspec.structs.replace(state, definition=None)
    )
    head = encode(WorkflowHeader.of(state))
    if len(final) < compress_from:
        return {keys.DOC_FINAL_FIELD: final, keys.DOC_HEADER_FIELD: head}
    return {
        keys.DOC_COMPACT_FIELD: zlib.compress(final, _COMPACT_LEVEL),
        keys.DOC_HEADER_FIELD: head,
    }


def assemble(fields: Mapping[str, bytes]) -> WorkflowState | None:
    """The document from its stored fields (either layout); None when there is none."""
    final = fields.get(keys.DOC_FINAL_FIELD)
    if final is not None:
        return decode(final, WorkflowState)
    packed = fields.get(keys.DOC_COMPACT_FIELD)
    if packed is not None:
        return decode(zlib.decompress(packed), WorkflowState)
    head = fields.get(keys.DOC_HEADER_FIELD)
    if head is None:
        return None  # only a lease claim so far: no document was written yet
    header = decode(head, WorkflowHeader)
    spec = decode(fields.get(keys.DOC_SPEC_FIELD, b"{}"), WorkflowSpec)
    order = decode(fields.get(keys.DOC_ORDER_FIELD, b"[]"), list[str])
    steps = {
        sid: decode(fields[keys.DOC_NODE_PREFIX + sid], NodeRun)
        for sid in order
        if keys.DOC_NODE_PREFIX + sid in fields
    }
    return WorkflowState(
        workflow_id=header.workflow_id,
        definition_name=header.definition_name,
        status=header.status,
        inputs=spec.inputs,
        steps=steps,
        result=decode(fields.get(keys.DOC_RESULT_FIELD, b"null"), Any),
        error=header.error,
        created_at=header.created_at,
        updated_at=header.updated_at,
        finished_at=header.finished_at,
        owner=header.owner,
        definition=spec.definition,
        tenant=header.tenant,
        submit_key=header.submit_key,
    )


def summary(head: bytes) -> HistoryEntry:
    """A history entry from a stored header (without the Idempotency-Key)."""
    return decode(head, HistoryEntry)
