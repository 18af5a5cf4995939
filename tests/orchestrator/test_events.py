"""EventRecorder: transitions become ordered events; a failing store loses events, not the run."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from structlog.testing import capture_logs

from orchestrator.events import EventRecorder
from state.memory import MemoryStateStore
from state.models import NodeRun, NodeStatus, WorkflowState, WorkflowStatus
from state.store import StateStoreError


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
