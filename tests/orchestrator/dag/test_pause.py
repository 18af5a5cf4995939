"""Pausing a run: running nodes finish, no new one starts, and running again resumes it."""

from __future__ import annotations

import asyncio
from typing import Any

from agents.errors import AgentHTTPError
from state.models import NodeStatus, WorkflowState, WorkflowStatus

from .conftest import FakeAgents, Harness, agent, compile_def, new_state

DEFINITION: dict[str, Any] = {
    "options": {"on_failure": "continue"},
    "nodes": [
        agent("a"),
        agent("skipme", when="False"),
        agent("broken"),
        agent("b", depends_on=["a"]),
        agent("c", depends_on=["b"]),
    ],
}


async def test_pause_lets_running_nodes_finish_and_resume_runs_the_rest(
    harness: Harness, fake: FakeAgents
) -> None:
    """Paused while 'a' runs: 'a' completes, 'b' never starts, the state is PAUSED; a
    second run keeps every settled step (completed, skipped, failed) and runs only b, c."""
    fake.behaviours["broken"] = AgentHTTPError(agent="a", status=503, attempts=1)
    gate = fake.gate("a")
    pausing = False
    compiled = compile_def(DEFINITION)
    state = new_state(compiled.name)
    written: list[str] = []

    async def on_transition(s: WorkflowState) -> None:
        written.append(s.status.value)

    runner = harness.runner()
    task = asyncio.create_task(
        runner.run(compiled, state, on_transition=on_transition, pause_requested=lambda: pausing)
    )
    await fake.started_event("a").wait()
    pausing = True
    gate.set()
    await task
    assert state.status is WorkflowStatus.PAUSED
    assert written[-1] == "paused"
    assert state.finished_at is None
    assert {k: s.status.value for k, s in state.steps.items()} == {
        "a": "completed",
        "skipme": "skipped",
        "broken": "failed",
        "b": "pending",
        "c": "pending",
    }
    assert fake.order.count("a") == 1 and "b" not in fake.order

    pausing = False
    calls_before = len(fake.calls)
    await runner.run(compiled, state, on_transition=on_transition)
    assert state.status is WorkflowStatus.DEGRADED  # 'broken' failed with continue
    assert [c.node_id for c in fake.calls[calls_before:]] == ["b", "c"]
    assert state.steps["c"].status is NodeStatus.COMPLETED
    assert state.steps["skipme"].status is NodeStatus.SKIPPED


async def test_pause_requested_before_the_first_node_starts_nothing(
    harness: Harness, fake: FakeAgents
) -> None:
    """A pause already requested when the run begins pauses it before any node starts."""
    compiled = compile_def({"nodes": [agent("a")]})
    state = new_state(compiled.name)

    async def on_transition(s: WorkflowState) -> None:
        return None

    await harness.runner().run(
        compiled, state, on_transition=on_transition, pause_requested=lambda: True
    )
    assert state.status is WorkflowStatus.PAUSED
    assert fake.calls == []
