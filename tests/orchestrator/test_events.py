"""EventRecorder: transitions become ordered events; a failing store loses events, not the run."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from orchestrator.events import EventRecorder, node_event, workflow_event
from orchestrator.state_writer import StateWriter
from orchestrator.write_behind import WriteBehind
from state.memory import MemoryStateStore
from state.models import NodeFailure, NodeRun, NodeStatus, WorkflowState, WorkflowStatus
from state.store import StateStoreError
from tests.fakes import settle


class DownStore(MemoryStateStore):
    """Takes no event: the backend is away."""

    async def append_event(self, workflow_id: str, event: Mapping[str, Any]) -> int:
        raise StateStoreError("down", backend="memory", operation="append_event")

    async def append_events(self, workflow_id: str, events: Sequence[Mapping[str, Any]]) -> int:
        raise StateStoreError("down", backend="memory", operation="append_events")


def workflow() -> WorkflowState:
    state = WorkflowState(workflow_id="w1", definition_name="chain", created_at=100.0)
    state.steps["a"] = NodeRun(step_id="a", kind="agent", agent="nlp")
    return state


async def test_transitions_are_told_once_in_order_and_the_terminal_event_last() -> None:
    store = MemoryStateStore()
    state = workflow()
    events = EventRecorder(store, state, clock=lambda: 200.0)
    state.status = WorkflowStatus.RUNNING
    events.workflow(state)
    events.workflow(state)  # no change: nothing told
    run = state.steps["a"]
    run.status, run.started_at = NodeStatus.RUNNING, 150.0
    events.node(run)
    events.retrying("nlp", "a", 2, 0.25, "agent_timeout")
    run.status, run.finished_at, run.attempts = NodeStatus.COMPLETED, 151.5, 2
    run.fallback = "nlp: timed out; used keyword_intent"
    state.status, state.finished_at = WorkflowStatus.DEGRADED, 152.0
    events.workflow(state)  # terminal: left to finish()
    await events.finish(state)

    logged = await store.events_since("w1")
    assert [(seq, e["type"]) for seq, e in logged] == [
        (1, "workflow.running"),
        (2, "step.started"),
        (3, "step.retrying"),
        (4, "step.fell_back"),
        (5, "workflow.degraded"),
    ]
    fell_back = logged[3][1]
    assert fell_back["attempts"] == 2 and fell_back["duration_ms"] == 1500.0
    assert logged[2][1]["attempt"] == 2 and logged[2][1]["delay_s"] == 0.25
    assert logged[4][1]["duration_ms"] == 52000.0


async def test_finish_tells_steps_whose_change_was_not_told() -> None:
    """An abort cancels running steps in bulk: finish() tells each before the end."""
    store = MemoryStateStore()
    state = workflow()
    events = EventRecorder(store, state)
    state.steps["a"].status = NodeStatus.CANCELLED
    state.status = WorkflowStatus.CANCELLED
    await events.finish(state)
    assert [e["type"] for _, e in await store.events_since("w1")] == [
        "step.cancelled",
        "workflow.cancelled",
    ]


async def test_a_store_outage_drops_events_with_one_warning() -> None:
    state = workflow()
    events = EventRecorder(DownStore(), state)
    with capture_logs() as logs:
        state.status = WorkflowStatus.RUNNING
        events.workflow(state)
        state.status = WorkflowStatus.COMPLETED
        await events.finish(state)
    names = [e["event"] for e in logs]
    assert names.count("event_write_failed") == 1
    # workflow.running and workflow.completed (the pending step had nothing to tell)
    assert {"event": "events_dropped", "count": 2, "log_level": "warning"} in logs


def _documented_node_event(workflow_id: str, run: NodeRun, at: float) -> dict[str, Any] | None:
    """A step's event as the module docstring and the SSE docs spell it, key order included."""
    names = {
        NodeStatus.RUNNING: "step.started",
        NodeStatus.COMPLETED: "step.fell_back" if run.fallback is not None else "step.completed",
        NodeStatus.FAILED: "step.failed",
        NodeStatus.SKIPPED: "step.skipped",
        NodeStatus.CANCELLED: "step.cancelled",
    }
    if run.status not in names:
        return None
    event: dict[str, Any] = {
        "type": names[run.status],
        "workflow_id": workflow_id,
        "step": run.step_id,
        "kind": run.kind,
        "agent": run.agent,
        "status": str(run.status.value),
        "at": at,
    }
    if run.status is NodeStatus.RUNNING:
        event["started_at"] = run.started_at
        return event
    event["attempts"] = run.attempts
    event["started_at"] = run.started_at
    event["finished_at"] = run.finished_at
    event["duration_ms"] = run.duration_ms
    if run.error is not None:
        event["error"] = {"type": run.error.type, "message": run.error.message}
    if run.fallback is not None:
        event["fallback"] = run.fallback
    if run.skip_reason is not None:
        event["reason"] = run.skip_reason
    return event


@settings(max_examples=150, deadline=None)
@given(
    status=st.sampled_from(list(NodeStatus)),
    agent=st.none() | st.just("nlp"),
    attempts=st.integers(0, 5),
    started=st.none() | st.floats(0, 1e9),
    finished=st.none() | st.floats(0, 1e9),
    error=st.booleans(),
    fallback=st.none() | st.just("agent down"),
    reason=st.none() | st.just("'when' is false"),
)
def test_a_step_event_holds_exactly_the_documented_fields_in_order(
    status: NodeStatus,
    agent: str | None,
    attempts: int,
    started: float | None,
    finished: float | None,
    error: bool,
    fallback: str | None,
    reason: str | None,
) -> None:
    run = NodeRun(
        step_id="s",
        kind="agent",
        agent=agent,
        status=status,
        attempts=attempts,
        started_at=started,
        finished_at=finished,
        error=NodeFailure(type="agent_timeout", message="slow") if error else None,
        fallback=fallback,
        skip_reason=reason,
    )
    event = node_event("wf", run, 12.5)
    expected = _documented_node_event("wf", run, 12.5)
    assert event == expected
    if event is not None and expected is not None:
        assert list(event) == list(expected)
        assert type(event["status"]) is str  # a plain str, not the enum member


@pytest.mark.parametrize("status", list(WorkflowStatus))
def test_a_workflow_event_names_its_status_as_a_plain_string(status: WorkflowStatus) -> None:
    state = WorkflowState(workflow_id="wf", definition_name="chain", status=status)
    state.finished_at = state.created_at + 1.0 if status.is_terminal else None
    event = workflow_event(state, 3.0)
    assert event["type"] == f"workflow.{status.value}"
    assert event["status"] == status.value and type(event["status"]) is str
    assert ("finished_at" in event) is status.is_terminal
    if status.is_terminal:
        assert event["duration_ms"] == 1000.0


async def test_the_flushers_turn_after_finish_has_nothing_to_await() -> None:
    """`finish` appended every event in the workflow's task: the flusher's later turn for
    the queued ones returns nothing to await and appends nothing; with events owed it
    returns the append, which appends them in order."""
    store = MemoryStateStore()
    state = workflow()
    events = EventRecorder(store, state, clock=lambda: 200.0, delay_s=3600.0)
    state.status = WorkflowStatus.RUNNING
    events.workflow(state)  # queued behind, for the flusher's turn
    owed = events.write_behind()  # that turn, taken now
    assert owed is not None
    await owed
    assert [e["type"] for _, e in await store.events_since("w1")] == ["workflow.running"]
    assert events.write_behind() is None  # nothing queued: nothing made to await
    state.status, state.finished_at = WorkflowStatus.COMPLETED, 201.0
    await events.finish(state)
    assert events.write_behind() is None
    assert [e["type"] for _, e in await store.events_since("w1")] == [
        "workflow.running",
        "workflow.completed",
    ]


class BatchLog(MemoryStateStore):
    """Records the length of every batch appended."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    async def append_events(self, workflow_id: str, events: Sequence[Mapping[str, Any]]) -> int:
        self.batches.append(len(events))
        return await super().append_events(workflow_id, events)


@pytest.mark.parametrize("count", [1, 500, 501, 1234])
async def test_queued_events_are_appended_all_in_order_in_batches_of_at_most_500(
    count: int,
) -> None:
    """What a turn owes goes in one append when it fits (the queue taken whole) and in
    batches of 500 otherwise, one per turn of the flusher (the rest queued anew, with no
    second delay): every event, in the order recorded."""
    store = BatchLog()
    state = workflow()
    events = EventRecorder(store, state, clock=lambda: 200.0, delay_s=3600.0)
    for attempt in range(count):
        events.retrying("nlp", "a", attempt, 0.0, "agent_timeout")
    owed = events.write_behind()
    assert owed is not None
    await owed
    assert store.batches == [min(count, 500)]
    await settle()
    assert store.batches == [500] * (count // 500) + ([count % 500] if count % 500 else [])
    logged = await store.events_since("w1")
    assert [e["attempt"] for _, e in logged] == list(range(count))


class HeldAppends(MemoryStateStore):
    """Holds every append until `release` is set (an append in flight)."""

    def __init__(self) -> None:
        super().__init__()
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def append_events(self, workflow_id: str, events: Sequence[Mapping[str, Any]]) -> int:
        self.started.set()
        await self.release.wait()
        return await super().append_events(workflow_id, events)


async def test_last_hands_over_what_is_queued_untold_and_the_terminal_event() -> None:
    """`last` takes the queue, the steps not told yet and the terminal event, in that
    order, for the terminal write; the same list again if asked again (a retried write),
    and neither the flusher's turn nor `finish` appends anything after it."""
    store = MemoryStateStore()
    state = workflow()
    events = EventRecorder(store, state, clock=lambda: 200.0, delay_s=3600.0)
    state.status = WorkflowStatus.RUNNING
    events.workflow(state)
    state.steps["a"].status = NodeStatus.CANCELLED
    state.status, state.finished_at = WorkflowStatus.CANCELLED, 201.0
    last = events.last(state)
    assert last is not None and events.carried
    assert [e["type"] for e in last] == ["workflow.running", "step.cancelled",
                                         "workflow.cancelled"]
    assert events.last(state) is last
    assert events.write_behind() is None
    await events.finish(state)
    assert await store.events_since("w1") == []  # (the terminal write would carry them)


async def test_last_leaves_the_end_to_finish_while_an_append_is_in_flight() -> None:
    """With an append in flight, `last` hands over nothing: the run's last events follow
    that append, by `finish`, in order."""
    store = HeldAppends()
    state = workflow()
    events = EventRecorder(store, state, clock=lambda: 200.0, delay_s=3600.0)
    state.status = WorkflowStatus.RUNNING
    events.workflow(state)
    owed = events.write_behind()
    assert owed is not None
    appending = asyncio.ensure_future(owed)
    await store.started.wait()  # the append is in flight, held
    state.status, state.finished_at = WorkflowStatus.COMPLETED, 201.0
    assert events.last(state) is None and not events.carried
    store.release.set()
    await appending
    await events.finish(state)
    assert [e["type"] for _, e in await store.events_since("w1")] == [
        "workflow.running",
        "workflow.completed",
    ]


async def _persist_nothing(state: WorkflowState) -> bool:
    return True


async def test_events_due_with_a_queued_document_write_are_left_to_it_to_carry() -> None:
    """One transition queues the document write and the events together: the events'
    turn leaves them to the write (`carry`), which takes them whole; while carried, the
    recorder counts as appending (nothing more is taken), and what is told meanwhile is
    queued for the flusher once the write ends. Events due well before any document
    write are appended on their own."""
    store, flusher = MemoryStateStore(), WriteBehind()
    state = workflow()
    events = EventRecorder(store, state, clock=lambda: 1.0, delay_s=3600.0, flusher=flusher)
    writer = StateWriter(_persist_nothing, state, delay_s=3600.0, flusher=flusher)
    events.carry_with(writer)
    state.status = WorkflowStatus.RUNNING
    events.workflow(state)
    writer.mark_dirty()
    assert events.write_behind() is None  # left to the document write
    carried = events.carry()
    assert carried is not None and [e["type"] for e in carried] == ["workflow.running"]
    assert events.carry() is None
    events.retrying("nlp", "a", 2, 0.5, "AgentTimeout")
    events.carry_ended(carried, written=True)
    await settle()  # the flusher appends what was told meanwhile, with no second delay
    assert [e["type"] for _, e in await store.events_since("w1")] == ["step.retrying"]

    other = WorkflowState(workflow_id="w2", definition_name="chain", created_at=100.0)
    early = EventRecorder(store, other, clock=lambda: 1.0, flusher=WriteBehind())
    late = StateWriter(_persist_nothing, other, delay_s=3600.0, flusher=WriteBehind())
    early.carry_with(late)
    other.status = WorkflowStatus.RUNNING
    early.workflow(other)
    late.mark_dirty()  # the document write is due an hour after the events
    appended = early.write_behind()
    assert appended is not None
    await appended
    assert [e["type"] for _, e in await store.events_since("w2")] == ["workflow.running"]
