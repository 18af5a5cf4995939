"""Progress events of a workflow: what a `GET /api/workflow/{id}/events` stream carries.

`EventRecorder` turns a running workflow's transitions into events and appends them,
in order, to the workflow's event log in the state store (which numbers them and
publishes them to every replica: state/events.py). One recorder per run, owned by
the lifecycle:

- `workflow(state)` on every transition: `workflow.running` once the DAG engine starts;
- `step(step)` when the DAG engine says a step changed: `step.started`,
  `step.completed`, `step.fell_back`, `step.failed`, `step.skipped`,
  `step.cancelled`;
- `retrying(...)` from the agent client (through `agents.observe.retry_listener`):
  `step.retrying` with the next attempt and the delay before it;
- `finish(state)` once the terminal document is written: an event for every step
  whose last change was not told (e.g. the steps an abort cancelled), then the
  terminal `workflow.<status>` event, always the last one;
- or, instead, `last(state)` just before the terminal write: the same events, handed to
  the write to carry (`StateStore.save(events=...)`), so they cost no operation of
  their own after the answer (on Redis a script and a round trip per workflow).

Events are progress, not state: the document stays the truth. An event the store
fails to take is logged and dropped; the terminal event is still attempted.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import msgspec
import structlog

from orchestrator.write_behind import WriteBehind
from state.models import NodeRun, NodeStatus, WorkflowState, WorkflowStatus, milliseconds
from state.store import StateStore

log = structlog.get_logger(__name__)

Event = dict[str, Any]

# (event type, status as a plain str) per node status that has an event: looked up once
# per event, where reading a StrEnum member's `.value` is a descriptor call each time.
_NODE_EVENT = {
    status: (name, status.value)
    for status, name in (
        (NodeStatus.RUNNING, "step.started"),
        (NodeStatus.COMPLETED, "step.completed"),
        (NodeStatus.FAILED, "step.failed"),
        (NodeStatus.SKIPPED, "step.skipped"),
        (NodeStatus.CANCELLED, "step.cancelled"),
    )
}
# The two statuses every node event is checked for, as names of this module: on Python
# 3.11 a read of a member off its enum class takes attribute lookup's slow path (EnumType
# has a `__getattr__`), five times a global's (orchestrator/dag/engine.py).
_RUNNING = NodeStatus.RUNNING
_COMPLETED = NodeStatus.COMPLETED
# (event type, status as a plain str, terminal?) per workflow status.
_WORKFLOW_EVENT = {s: (f"workflow.{s.value}", s.value, s.is_terminal) for s in WorkflowStatus}

# Events one append carries at most (a wide fan-out can queue thousands in one turn).
_BATCH = 500

TERMINAL_EVENTS = frozenset(f"workflow.{s.value}" for s in WorkflowStatus if s.is_terminal)


def is_terminal(event: Event) -> bool:
    return event.get("type") in TERMINAL_EVENTS


def node_event(workflow_id: str, run: NodeRun, at: float) -> Event | None:
    status = run.status
    if status is _RUNNING:
        return {
            "type": "step.started",
            "workflow_id": workflow_id,
            "step": run.step_id,
            "kind": run.kind,
            "agent": run.agent,
            "status": "running",
            "at": at,
            "started_at": run.started_at,
        }
    named = _NODE_EVENT.get(status)
    if named is None:
        return None
    name, value = named
    fallback = run.fallback
    if fallback is not None and status is _COMPLETED:
        name = "step.fell_back"
    started_at = run.started_at
    finished_at = run.finished_at
    event: Event = {
        "type": name,
        "workflow_id": workflow_id,
        "step": run.step_id,
        "kind": run.kind,
        "agent": run.agent,
        "status": value,
        "at": at,
        "attempts": run.attempts,
        "started_at": started_at,
        "finished_at": finished_at,
        # run.duration_ms, without its property's frame
        "duration_ms": (
            None
            if started_at is None or finished_at is None
            else milliseconds(finished_at - started_at)
        ),
    }
    error = run.error
    if error is not None:
        event["error"] = {"type": error.type, "message": error.message}
    if fallback is not None:
        event["fallback"] = fallback
    if run.skip_reason is not None:
        event["reason"] = run.skip_reason
    return event


def workflow_event(state: WorkflowState, at: float) -> Event:
    name, value, terminal = _WORKFLOW_EVENT[state.status]
    event: Event = {
        "type": name,
        "workflow_id": state.workflow_id,
        "status": value,
        "definition": state.definition_name,
        "at": at,
    }
    if terminal:
        event["finished_at"] = state.finished_at
        event["duration_ms"] = (
            milliseconds(state.finished_at - state.created_at)
            if state.finished_at is not None
            else None
        )
        event["error"] = None if state.error is None else msgspec.to_builtins(state.error)
        event["fallbacks"] = state.fallbacks
    return event


class Carrier(Protocol):
    """A workflow's document writer (StateWriter), whose writes can carry its events."""

    def write_due_by(self, when: float) -> bool: ...


# Events due this close before a queued document write are left to it to carry: a
# transition queues both in one go (microseconds apart), and the events then reach the
# store at most this much later than their own delay.
_CARRY_WITHIN_S = 0.001


class EventRecorder:
    """Appends one workflow's events to the store in the order they were recorded.

    Events are appended by the orchestrator's one flusher (`flusher`,
    orchestrator/write_behind.py; a recorder made without one gets its own), not by
    a task per burst. With `delay_s` (the state writer's ORCH_STATE_WRITE_DELAY_S),
    they are written behind like transitions: the first of a burst waits up to
    `delay_s` for the ones that follow, so a burst costs one append (one Redis
    command) instead of one per event, and a workflow that ends within the delay
    appends all of its events at once, after its terminal write. Events due with a
    document write of their workflow go with it (`carry_with`, `carry`, `last`): one
    store operation for both. `finish` never waits for the delay.
    """

    # One per workflow run: slots, not a dict per instance.
    __slots__ = (
        "_appending", "_busy", "_carrier", "_clock", "_delay_s", "_due", "_failed",
        "_flusher", "_last", "_queue", "_queued", "_status", "_store", "_told",
        "_workflow_id",
    )

    def __init__(
        self,
        store: StateStore,
        state: WorkflowState,
        *,
        clock: Callable[[], float] = time.time,
        delay_s: float = 0.0,
        flusher: WriteBehind | None = None,
    ) -> None:
        self._store = store
        self._workflow_id = state.workflow_id
        self._clock = clock
        self._delay_s = delay_s
        self._flusher = flusher if flusher is not None else WriteBehind()
        # What the log already says about each step, so nothing is told twice.
        # (A new run's steps are made later, by the DAG engine: most start with none.)
        self._told: dict[str, NodeStatus] = (
            {sid: s.status for sid, s in state.steps.items()} if state.steps else {}
        )
        self._status: WorkflowStatus | None = None
        self._queue: deque[Event] = deque()
        # In the flusher's queue (at most once; due at `_due` on its clock), and True
        # while an append is in flight.
        self._queued = False
        self._due = 0.0
        self._busy = False
        # Resolved when the append in flight ends; made only once someone waits for it
        # (most appends are waited for by nobody: no future made and resolved for each).
        self._appending: asyncio.Future[None] | None = None
        self._failed = 0
        # What `last` handed to the terminal write (handed again if that write is retried).
        self._last: list[Event] | None = None
        # The workflow's document writer, whose writes carry the events queued by then
        # (`carry_with`).
        self._carrier: Carrier | None = None

    def workflow(self, state: WorkflowState) -> None:
        if state.status is self._status or state.status.is_terminal:
            return  # the terminal event is `finish`'s, after the document is written
        self._status = state.status
        self._push(workflow_event(state, self._clock()))

    def node(self, run: NodeRun) -> None:
        if self._told.get(run.step_id) is run.status:
            return
        event = node_event(self._workflow_id, run, self._clock())
        if event is not None:
            self._told[run.step_id] = run.status
            self._push(event)

    def retrying(self, agent: str, node_id: str, attempt: int, delay_s: float, error: str) -> None:
        self._push(
            {
                "type": "step.retrying",
                "workflow_id": self._workflow_id,
                "step": node_id,
                "agent": agent,
                "attempt": attempt,
                "delay_s": round(delay_s, 3),
                "error": {"type": error},
                "at": self._clock(),
            }
        )

    def finish(self, state: WorkflowState) -> Awaitable[None]:
        """Tell what is left, then the terminal event, now; the append of them all to await.

        Appended in the caller's task: neither the delay nor the flusher's queue is waited.
        The append's own coroutine is handed back: no coroutine of this method's around it.
        Nothing to do once `last` handed them to the terminal write."""
        if self._last is not None:
            return _nothing()
        self._queued = True  # what is pushed from here on is appended below, not queued
        self._tell_untold(state)
        self._push(workflow_event(state, self._clock()))
        self._queued = False
        return self._append_queued(last=True)

    def last(self, state: WorkflowState) -> list[Event] | None:
        """The run's last events (what is queued, what is left untold, then the terminal
        event), taken for the terminal write to carry: `finish` then has nothing to do.

        None while an append is in flight: the events follow it, by `finish` (an append
        sent later on another connection could reach Redis first)."""
        if self._last is not None:
            return self._last
        if self._busy:
            return None
        queued, self._queued = self._queued, True  # (as in `finish`: nothing queued anew)
        self._tell_untold(state)
        self._queued = queued
        queue = self._queue
        last = self._last = list(queue)
        queue.clear()
        last.append(workflow_event(state, self._clock()))
        return last

    def _tell_untold(self, state: WorkflowState) -> None:
        """An event for every step whose last change was not told (e.g. the steps an
        abort cancelled)."""
        told = self._told
        for run in state.steps.values():
            # `node(run)`'s own check first: most steps were told already (no call each).
            if told.get(run.step_id) is not run.status:
                self.node(run)

    @property
    def carried(self) -> bool:
        """True once `last` handed the run's last events to the terminal write."""
        return self._last is not None

    def _push(self, event: Event) -> None:
        self._queue.append(event)
        if not self._queued and not self._busy:
            self._queued = True
            self._due = self._flusher.add_after(self, self._delay_s)

    def carry_with(self, carrier: Carrier | None) -> None:
        """Let `carrier`'s writes (the workflow's document writes) carry the events queued
        by then: a flusher's turn that finds a document write queued leaves its events
        to it (`carry`), one store operation (one Redis script) for both."""
        self._carrier = carrier

    def carry(self) -> list[Event] | None:
        """The events queued (up to a batch), taken for a document write to carry; None
        when there are none, or while an append is in flight (the events follow it).

        Until `carry_ended` is called this recorder counts as appending: nothing is appended
        (and `finish` waits) meanwhile, so the events stay in order."""
        queue = self._queue
        if self._busy or not queue or self._last is not None:
            return None
        if len(queue) <= _BATCH:
            batch = list(queue)
            queue.clear()
        else:
            batch = [queue.popleft() for _ in range(_BATCH)]
        self._busy = True
        return batch

    def carry_ended(self, batch: list[Event], *, written: bool) -> None:
        """`carry`'s write ended (`written`: the store took the document and `batch`)."""
        self._busy = False
        appending, self._appending = self._appending, None
        if appending is not None:
            appending.set_result(None)
        if not written:
            self._failed += len(batch)
        if self._queue and not self._queued:
            # Told while the write was in flight: no second delay.
            self._queued = True
            self._due = self._flusher.add_after(self, 0.0)

    def write_behind(self) -> Awaitable[None] | None:
        """Append every event queued so far, in order (the flusher's turn, or `finish`):
        the append to await, or None when nothing is owed (the flusher's turn after
        `finish` appended it all) or when the document write queued will carry them: no
        coroutine made for nothing."""
        self._queued = False
        if not self._queue:
            # (With an append in flight too: it queues this recorder again when it ends,
            # if anything was told meanwhile.)
            return None
        carrier = self._carrier
        if carrier is not None and carrier.write_due_by(self._due + _CARRY_WITHIN_S):
            # The workflow's document write is queued, due with these events (both were
            # queued by the same transition, as a rule) and takes them (`carry`).
            return None
        return self._append_queued()

    async def _append_queued(self, *, last: bool = False) -> None:
        """Append what is queued (`last`: all of it, the run's final append, which reports
        what was dropped). The flusher's turn appends one batch: what is pushed while it is
        in flight is queued anew for the flusher's next turn, so one workflow's stream of
        events never holds the flusher's turn (and every job written with it) open."""
        while self._busy:
            if self._appending is None:
                self._appending = asyncio.get_running_loop().create_future()
            # shield: the workflow task may be cancelled while its last events are written.
            await asyncio.shield(self._appending)
        self._busy = True
        try:
            queue = self._queue
            while queue:
                # Every event queued so far in one append (one Redis command), in order.
                if len(queue) <= _BATCH:
                    batch = list(queue)  # all of them (as a rule): no Python step per event
                    queue.clear()
                else:
                    batch = [queue.popleft() for _ in range(_BATCH)]
                try:
                    await self._store.append_events(self._workflow_id, batch)
                except Exception:
                    # Once per workflow: during a store outage every transition would fail.
                    self._failed += len(batch)
                    if self._failed == len(batch):
                        log.warning(
                            "event_write_failed", event_type=batch[0]["type"], exc_info=True
                        )
                if not last:
                    break
        finally:
            self._busy = False
            appending, self._appending = self._appending, None
            if appending is not None:
                appending.set_result(None)
            if self._queue and not self._queued and not last:
                # Pushed while the append was in flight: no second delay.
                self._queued = True
                self._due = self._flusher.add_after(self, 0.0)
        if last and self._failed:
            log.warning("events_dropped", count=self._failed)


async def _nothing() -> None:
    """`finish` once the terminal write carried the run's last events."""
