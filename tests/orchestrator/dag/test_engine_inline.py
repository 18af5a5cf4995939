"""A node that is the only one able to run (every node of a chain) runs in the workflow's
own task: cancel, the workflow's deadline, pause, fallbacks and log context hold there
exactly as they do for nodes running beside others."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import structlog

from agents.errors import AgentHTTPError
from agents.registry import AgentRegistry
from orchestrator.dag.engine import DagEngine
from orchestrator.logs import merge_node_context
from state.models import NodeRun, NodeStatus, WorkflowState, WorkflowStatus

from .conftest import FakeAgents, Harness, agent, compile_def, new_state

CHAIN: dict[str, Any] = {
    "nodes": [
        agent("a"),
        agent("b", depends_on=["a"]),
        agent("c", depends_on=["b"]),
    ]
}


async def wait(event: asyncio.Event) -> None:
    # Guards against a hang only; the assertions never depend on time.
    await asyncio.wait_for(event.wait(), timeout=10)


async def test_cancelling_a_chain_aborts_the_running_node_and_records_it(
    harness: Harness, fake: FakeAgents
) -> None:
    fake.gate("b")
    task, run = harness.start(CHAIN)
    await wait(fake.started_event("b"))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert fake.cancelled == ["b"]
    assert run.state.status is WorkflowStatus.CANCELLED
    assert run.statuses() == {"a": "completed", "b": "cancelled", "c": "cancelled"}
    assert run.snapshots[-1]["status"] == "cancelled"
    assert "c" not in fake.order


async def test_the_workflow_deadline_ends_a_chain_node_that_has_a_fallback(
    harness: Harness, fake: FakeAgents
) -> None:
    """The deadline is the workflow's, not the node's failure: no fallback is taken."""
    fake.gate("b")
    definition = {
        "options": {"timeout_s": 0.05},
        "nodes": [
            agent("a"),
            agent("b", depends_on=["a"], fallback={"value": {"from": "fallback"}}),
            agent("c", depends_on=["b"]),
        ],
    }
    run = await harness.run(definition)
    assert run.state.status is WorkflowStatus.FAILED
    assert run.state.error is not None and run.state.error.code == "workflow_timeout"
    assert run.statuses() == {"a": "completed", "b": "cancelled", "c": "cancelled"}
    assert run.node("b").output is None
    assert fake.cancelled == ["b"]


async def test_a_node_timeout_in_a_chain_takes_the_fallback_and_the_chain_goes_on(
    harness: Harness, fake: FakeAgents
) -> None:
    fake.gate("b")
    definition = {
        "nodes": [
            agent("a"),
            agent("b", depends_on=["a"], timeout_s=0.02, fallback={"value": {"v": 1}}),
            agent("c", depends_on=["b"]),
        ]
    }
    run = await harness.run(definition)
    assert run.state.status is WorkflowStatus.DEGRADED
    assert run.node("b").output == {"v": 1}
    assert run.node("b").error.type == "node_timeout"
    assert run.node("c").status is NodeStatus.COMPLETED


async def test_a_pause_asked_while_a_chain_node_runs_stops_after_it(
    harness: Harness, fake: FakeAgents
) -> None:
    gate = fake.gate("a")
    pausing = False
    compiled = compile_def(CHAIN)
    state = new_state(compiled.name)
    written: list[WorkflowState] = []

    async def on_transition(s: WorkflowState) -> None:
        written.append(s)

    runner = harness.runner()
    task = asyncio.create_task(
        runner.run(compiled, state, on_transition=on_transition, pause_requested=lambda: pausing)
    )
    await wait(fake.started_event("a"))
    pausing = True
    gate.set()
    await task
    assert state.status is WorkflowStatus.PAUSED
    assert {k: s.status.value for k, s in state.steps.items()} == {
        "a": "completed",
        "b": "pending",
        "c": "pending",
    }
    pausing = False
    await runner.run(compiled, state, on_transition=on_transition)
    assert state.status is WorkflowStatus.COMPLETED
    assert fake.order == ["a", "b", "c"]


async def test_a_stop_failure_in_a_chain_fails_the_workflow_and_cancels_the_rest(
    harness: Harness, fake: FakeAgents
) -> None:
    fake.behaviours["b"] = AgentHTTPError(agent="b", status=503, attempts=2)
    run = await harness.run({"options": {"on_failure": "stop"}, **CHAIN})
    assert run.state.status is WorkflowStatus.FAILED
    assert run.state.error is not None and run.state.error.step_id == "b"
    assert run.statuses() == {"a": "completed", "b": "failed", "c": "cancelled"}


def line_context() -> dict[str, Any]:
    """The context a log line logged here would carry (both merging processors)."""
    return dict(merge_node_context(None, "info", structlog.contextvars.get_contextvars()))


async def test_a_chain_nodes_log_context_is_its_own_and_does_not_outlive_it(
    harness: Harness, fake: FakeAgents
) -> None:
    """Inside a node every line carries its node and agent; after the run, nothing of the
    nodes is left bound in the caller's context."""
    seen: list[dict[str, Any]] = []

    def record(payload: Any) -> dict[str, Any]:
        seen.append(line_context())
        return {"ok": True}

    fake.behaviours["a"] = record
    fake.behaviours["b"] = record
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(workflow_id="w-1")
    try:
        run = await harness.run(
            {"nodes": [agent("a", "nlp"), agent("b", "data", depends_on=["a"])]}
        )
        after = line_context()
    finally:
        structlog.contextvars.clear_contextvars()
    assert run.state.status is WorkflowStatus.COMPLETED
    assert [(s["node"], s["agent"], s["workflow_id"]) for s in seen] == [
        ("a", "nlp", "w-1"),
        ("b", "data", "w-1"),
    ]
    assert after == {"workflow_id": "w-1"}


async def test_parallel_nodes_each_log_with_their_own_context(
    harness: Harness, fake: FakeAgents
) -> None:
    """Nodes run in tasks of their own (a fan-out) carry their own node, agent and attempt
    0 (the fake caller makes no attempt), and none of it leaks into the caller's context."""
    seen: dict[str, dict[str, Any]] = {}

    def record(name: str) -> Any:
        def behaviour(payload: Any) -> dict[str, Any]:
            seen[name] = line_context()
            return {"ok": True}

        return behaviour

    for name in ("root", "left", "right"):
        fake.behaviours[name] = record(name)
    structlog.contextvars.clear_contextvars()
    try:
        run = await harness.run(
            {
                "nodes": [
                    agent("root", "nlp"),
                    agent("left", "data", depends_on=["root"]),
                    agent("right", "viz", depends_on=["root"]),
                ]
            }
        )
        after = line_context()
    finally:
        structlog.contextvars.clear_contextvars()
    assert run.state.status is WorkflowStatus.COMPLETED
    assert {name: (c["node"], c["agent"], c["attempt"]) for name, c in seen.items()} == {
        "root": ("root", "nlp", 0),
        "left": ("left", "data", 0),
        "right": ("right", "viz", 0),
    }
    assert after == {}


async def test_a_cancel_while_the_terminal_record_is_written_still_has_it_written(
    registry: AgentRegistry, fake: FakeAgents
) -> None:
    """The terminal record is written in the workflow's own task; a cancel that
    interrupts that write has it written again (shielded) before the run ends cancelled."""
    engine = DagEngine(agents=fake, registry=registry)
    state = new_state("chain")
    writing = asyncio.Event()
    release = asyncio.Event()
    told: list[str] = []
    interrupted: list[str] = []

    async def on_transition(current: WorkflowState) -> None:
        if current.status.is_terminal and not interrupted:
            writing.set()
            try:
                await release.wait()  # a store write in flight
            except asyncio.CancelledError:
                interrupted.append(current.status.value)
                raise
        told.append(current.status.value)

    task = asyncio.create_task(engine.run(compile_def(CHAIN), state, on_transition=on_transition))
    await wait(writing)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert interrupted == ["completed"]
    assert told[-1] == "completed"  # written again, whole
    assert state.status is WorkflowStatus.COMPLETED


def _busy(loop: asyncio.AbstractEventLoop) -> Any:
    def busy(_: Any) -> dict[str, Any]:
        # Holds the loop past the inline turn without yielding (a CPU-bound answer).
        start = loop.time()
        while loop.time() - start < 0.003:
            pass
        return {"ok": True}

    return busy


async def _run_ticking(harness: Harness) -> list[tuple[str, ...]]:
    """Run a -> b, logging each transition and each turn another task got meanwhile."""
    compiled = compile_def({"nodes": [agent("a"), agent("b", depends_on=["a"])]})
    state = new_state(compiled.name)
    log: list[tuple[str, ...]] = []

    async def on_transition(s: WorkflowState) -> None:
        log.append((s.status.value, s.steps["a"].status.value, s.steps["b"].status.value))

    async def ticker() -> None:
        while True:
            log.append(("tick",))
            await asyncio.sleep(0)

    ticking = asyncio.create_task(ticker())
    try:
        await harness.runner().run(compiled, state, on_transition=on_transition)
    finally:
        ticking.cancel()
    assert state.status is WorkflowStatus.COMPLETED
    return log


async def test_inline_nodes_give_the_loop_a_turn_between_them_but_not_after_the_last(
    harness: Harness, fake: FakeAgents
) -> None:
    """Past the inline turn (2 ms) without the loop having had one, the next node waits
    for the loop to have a turn; after the last node the terminal transition follows at
    once (a turn there would only let the write-behind save a state about to be final)."""
    busy = _busy(asyncio.get_running_loop())
    fake.behaviours.update({"a": busy, "b": busy})
    fake.never_wait.update({"a", "b"})
    log = await _run_ticking(harness)
    a_done = log.index(("running", "completed", "pending"))
    b_starts = log.index(("running", "completed", "running"))
    assert ("tick",) in log[a_done:b_starts]
    b_done = log.index(("running", "completed", "completed"))
    assert log[b_done + 1] == ("completed", "completed", "completed")


async def test_a_node_that_waited_gave_the_loop_its_turn_so_the_next_starts_at_once(
    harness: Harness, fake: FakeAgents
) -> None:
    """A node whose call waited (as every call over the network does) let others run:
    the next node starts in the same turn as the first one settles, so no other task runs
    (and no write-behind writes the settled node on its own) in between; the loop still
    gets its turn inside every node."""
    busy = _busy(asyncio.get_running_loop())
    fake.behaviours.update({"a": busy, "b": busy})
    log = await _run_ticking(harness)
    a_done = log.index(("running", "completed", "pending"))
    assert log[a_done + 1] == ("running", "completed", "running")
    b_done = log.index(("running", "completed", "completed"))
    assert ("tick",) in log[a_done + 1 : b_done]
    assert log[b_done + 1] == ("completed", "completed", "completed")


async def test_a_deadline_passed_before_the_run_first_waits_for_node_tasks_ends_it(
    harness: Harness, fake: FakeAgents
) -> None:
    """The deadline's timer is armed when the run first waits for node tasks (a chain run
    inline never does); a deadline already past by then ends the run at once, as a timer
    armed at the start would have."""
    fake.gate("b")
    fake.gate("c")
    compiled = compile_def(
        {
            "options": {"timeout_s": 0.05},
            "nodes": [agent("a"), agent("b", depends_on=["a"]), agent("c", depends_on=["a"])],
        }
    )
    state = new_state(compiled.name)
    loop = asyncio.get_running_loop()
    started = loop.time()

    async def before_start() -> None:
        if state.steps["a"].status is NodeStatus.COMPLETED:
            # The time the deadline measures passes here, outside any node's own cap.
            await asyncio.sleep(max(0.0, started + 0.06 - loop.time()))

    async def on_transition(_: WorkflowState) -> None:
        return None

    runner = harness.runner()
    await asyncio.wait_for(
        runner.run(compiled, state, on_transition=on_transition, before_start=before_start),
        timeout=10,
    )
    assert state.status is WorkflowStatus.FAILED
    assert state.error is not None and state.error.code == "workflow_timeout"
    assert {k: v.status.value for k, v in state.steps.items()} == {
        "a": "completed",
        "b": "cancelled",
        "c": "cancelled",
    }


def test_one_engine_runs_chains_on_one_loop_after_another(
    harness: Harness, fake: FakeAgents
) -> None:
    """An engine finds a run's task on the loop it last ran on: on a new loop (a second
    `asyncio.run`) it looks the loop up again, and the run's caps (the workflow's deadline,
    a node's timeout) are on that run's own task."""
    engine = harness.runner()
    definition = {
        "options": {"timeout_s": 30},
        "nodes": [
            agent("a"),
            agent("b", depends_on=["a"], timeout_s=0.02, fallback={"value": {"v": 1}}),
            agent("c", depends_on=["b"]),
        ],
    }
    compiled = compile_def(definition)

    async def one(gated: bool) -> WorkflowState:
        if gated:
            fake.gate("b")
        state = new_state(compiled.name)

        async def on_transition(_: WorkflowState) -> None:
            return None

        run = engine.run(compiled, state, on_transition=on_transition)
        await asyncio.wait_for(run, timeout=10)  # a guard against a hang only
        return state

    first = asyncio.run(one(gated=False))
    second = asyncio.run(one(gated=True))
    assert first.status is WorkflowStatus.COMPLETED
    assert second.status is WorkflowStatus.DEGRADED
    assert second.steps["b"].error is not None
    assert second.steps["b"].error.type == "node_timeout"
    assert second.steps["c"].status is NodeStatus.COMPLETED


async def test_a_nodes_start_is_the_states_last_change_whether_inline_or_in_a_task(
    fake: FakeAgents, registry: AgentRegistry
) -> None:
    """One reading of the clock per start: the state's `updated_at`, told with a node's
    start, is that node's `started_at` (a chain's node inline, a fan-out's branches)."""
    ticks = iter(range(1, 1_000))
    runner = DagEngine(agents=fake, registry=registry, clock=lambda: float(next(ticks)))
    definition = {
        "nodes": [
            agent("a"),
            agent("b", depends_on=["a"]),
            agent("c", depends_on=["a"]),
            agent("d", depends_on=["b", "c"]),
        ]
    }
    compiled = compile_def(definition)
    state = new_state(compiled.name)
    started: list[tuple[str, float | None, float | None]] = []

    def on_node(run: NodeRun) -> None:
        if run.status is NodeStatus.RUNNING:
            started.append((run.step_id, run.started_at, state.updated_at))

    async def on_transition(_: WorkflowState) -> None:
        return None

    await runner.run(compiled, state, on_transition=on_transition, on_node=on_node)
    assert state.status is WorkflowStatus.COMPLETED
    assert [s[0] for s in started] == ["a", "b", "c", "d"]
    assert all(at is not None and at == updated for _, at, updated in started)
