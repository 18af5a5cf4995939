"""Fault injection: whatever fails at whichever await point, a run ends in a terminal state.

The runner awaits in a few kinds of places: a transition callback (every state
change), a node's agent call, a node kind's own work, and the final write. Each
test first counts the await points of one kind in a clean run, then re-runs the
workflow once per point with a fault injected there, and checks the workflow is
terminal, that the terminal state was handed to the callback, and (for internal
faults) that it says `internal_error`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any, cast

import pytest
import structlog

from agents.errors import AgentError
from agents.registry import AgentRegistry
from orchestrator.dag.compiler import compile_workflow
from orchestrator.dag.engine import DagEngine
from orchestrator.dag.kinds import NodeContext, NodeKindRegistry, default_kinds
from orchestrator.dag.kinds.base import BaseKind, Compiled
from orchestrator.dag.model import NodeDef
from orchestrator.errors import WorkflowAlreadyFinished
from orchestrator.lifecycle import WorkflowOrchestrator
from state.memory import MemoryStateStore
from state.models import NodeStatus, WorkflowState, WorkflowStatus
from tests.orchestrator.dag.conftest import AGENTS, FakeAgents, Result, compile_def, new_state

# Every built-in kind, a `when`, a fallback, a fan-in and an output template.
DEFINITION: dict[str, Any] = {
    "name": "faults",
    "inputs": {"q": "hello"},
    "nodes": [
        {"id": "a", "kind": "agent", "agent": "a", "input": {"q": "{{ inputs.q }}"}},
        {"id": "c", "kind": "condition", "depends_on": ["a"], "expr": "len(a.echo.q) > 0"},
        {"id": "t", "kind": "transform", "depends_on": ["a"], "select": "echo"},
        {"id": "v", "kind": "validate", "depends_on": ["t"], "schema": {"type": "object"}},
        {
            "id": "b",
            "kind": "agent",
            "agent": "b",
            "depends_on": ["c", "t"],
            "when": "c.value",
            "input": {"x": "{{ t.value }}"},
            "fallback": {"value": {"fallback": True}},
        },
        {"id": "g", "kind": "aggregate", "depends_on": ["b", "v"], "op": "merge"},
    ],
    "output": {"g": "{{ g.value }}", "b": "{{ b }}"},
}


class Injected(RuntimeError):
    """The fault this module injects; never raised by the code under test."""


class CountingAgents(FakeAgents):
    """A FakeAgents that misbehaves on its `fail_at`-th call with `fault`."""

    def __init__(self, *, fail_at: int = 0, fault: Any = None) -> None:
        super().__init__()
        self.count = 0
        self.fail_at = fail_at
        self.fault = fault

    async def call(self, agent: str, payload: Mapping[str, Any], **kwargs: Any) -> Result:
        self.count += 1
        if self.count == self.fail_at:
            await asyncio.sleep(0)
            if isinstance(self.fault, BaseException):
                raise self.fault
            return Result(self.fault)
        return await super().call(agent, payload, **kwargs)


def _registry() -> AgentRegistry:
    from agents.registry import AgentSpec

    return AgentRegistry([AgentSpec(name=n, url=f"http://127.0.0.1:1/{n}") for n in AGENTS])


async def _run(
    agents: FakeAgents, *, fail_transition_at: int = 0, cancel_at: int = 0
) -> tuple[WorkflowState, list[dict[str, Any]], int]:
    compiled = compile_def(DEFINITION)
    state = new_state(compiled.name)
    seen: list[dict[str, Any]] = []
    calls = 0
    task: asyncio.Task[None] | None = None

    async def on_transition(current: WorkflowState) -> None:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0)
        if calls == cancel_at and task is not None:
            task.cancel()
        if calls == fail_transition_at:
            raise Injected(f"transition {calls} failed")
        seen.append(current.to_dict())

    runner = DagEngine(agents=agents, registry=_registry())
    # Captured, not rendered: the internal errors are logged with their tracebacks.
    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(runner.run(compiled, state, on_transition=on_transition))
        try:
            await task
        except asyncio.CancelledError:
            pass
    if fail_transition_at and state.error is not None and state.error.code == "internal_error":
        # An escape from the engine itself is logged, traceback included, once.
        assert [e["event"] for e in logs].count("engine_internal_error") == 1
    return state, seen, calls


async def test_a_clean_run_completes() -> None:
    state, seen, _ = await _run(CountingAgents())
    assert state.status is WorkflowStatus.COMPLETED, state.error
    assert seen[-1]["status"] == "completed"


async def test_a_failing_transition_at_every_point_ends_failed_with_internal_error() -> None:
    _, _, points = await _run(CountingAgents())
    assert points >= 10
    for k in range(1, points + 1):
        state, seen, _ = await _run(CountingAgents(), fail_transition_at=k)
        assert state.status.is_terminal, k
        # The terminal state reached the callback (re-emitted after the fault).
        assert seen and seen[-1]["status"] == state.status.value, k
        if state.status is WorkflowStatus.FAILED:
            assert state.error is not None and state.error.code == "internal_error", k
            assert not any(s.status is NodeStatus.RUNNING for s in state.steps.values()), k


async def test_a_cancel_at_every_point_ends_cancelled() -> None:
    _, _, points = await _run(CountingAgents())
    for k in range(1, points + 1):
        state, seen, _ = await _run(CountingAgents(), cancel_at=k)
        assert state.status.is_terminal, k
        assert seen[-1]["status"] == state.status.value, k
        assert not any(s.status is NodeStatus.RUNNING for s in state.steps.values()), k


@pytest.mark.parametrize(
    "fault",
    [
        Injected("agent client bug"),
        KeyError("missing"),
        {"n": 2**2000},  # no float holds it: refused at the boundary
        {"n": float("nan")},
    ],
    ids=["runtime-error", "key-error", "huge-int", "nan"],
)
async def test_a_bad_agent_call_at_every_point_ends_terminal(fault: Any) -> None:
    clean = CountingAgents()
    await _run(clean)
    assert clean.count == 2
    for k in range(1, clean.count + 1):
        state, seen, _ = await _run(CountingAgents(fail_at=k, fault=fault))
        assert state.status.is_terminal, k
        assert seen[-1]["status"] == state.status.value, k
        errors = [s.error.type for s in state.steps.values() if s.error is not None]
        expected = "internal_error" if isinstance(fault, Exception) else "value_out_of_range"
        assert expected in errors, (k, errors)


async def test_big_integers_within_float_range_become_floats_like_a_request_body() -> None:
    state, _, _ = await _run(CountingAgents(fail_at=1, fault={"echo": {"q": "x"}, "n": 2**70}))
    assert state.status is WorkflowStatus.COMPLETED
    assert state.steps["a"].output == {"echo": {"q": "x"}, "n": float(2**70)}


class _BrokenNode(NodeDef, tag="broken", frozen=True):
    mode: str = ""


class _BrokenKind(BaseKind):
    """A node kind with a bug: its run raises, or returns something that is not JSON."""

    name = "broken"
    node_type = _BrokenNode

    def compile(self, node: NodeDef) -> Compiled:
        return Compiled()

    async def run(self, node: NodeDef, ctx: NodeContext) -> Any:
        await asyncio.sleep(0)
        if cast(_BrokenNode, node).mode == "raise":
            raise ZeroDivisionError("bug in a node kind")
        return {"value": object()}


@pytest.mark.parametrize(("mode", "code"), [("raise", "internal_error"), ("object", "not_json")])
async def test_a_buggy_node_kind_fails_its_step_and_the_workflow(mode: str, code: str) -> None:
    kinds: NodeKindRegistry = default_kinds()
    kinds.register(_BrokenKind())
    compiled = compile_workflow(
        {"name": "w", "nodes": [{"id": "x", "kind": "broken", "mode": mode}]},
        agents=set(AGENTS),
        kinds=kinds,
    )
    state = new_state("w")

    async def on_transition(_: WorkflowState) -> None:
        return None

    with structlog.testing.capture_logs():
        await DagEngine(agents=FakeAgents(), registry=_registry(), kinds=kinds).run(
            compiled, state, on_transition=on_transition
        )
    assert state.status is WorkflowStatus.FAILED
    assert state.steps["x"].error is not None and state.steps["x"].error.type == code


class FlakyStore(MemoryStateStore):
    """The memory store whose `fail_at`-th save raises, as a store outage would."""

    def __init__(self, fail_at: int) -> None:
        super().__init__()
        self.saves = 0
        self.fail_at = fail_at

    async def save(
        self,
        state: WorkflowState,
        *,
        token: int | None = None,
        events: Sequence[Mapping[str, Any]] = (),
    ) -> bool:
        self.saves += 1
        await asyncio.sleep(0)
        if self.saves == self.fail_at:
            raise ConnectionError("store away")
        return await super().save(state, token=token, events=events)


async def test_a_failed_state_write_at_every_point_still_leaves_a_terminal_document() -> None:
    """Status shows the end, sync callers get the document, and cancel answers 409."""
    compiled = compile_def(DEFINITION)
    for k in range(1, 8):
        store = FlakyStore(k)
        engine = WorkflowOrchestrator(
            store=store, dag_engine=DagEngine(agents=CountingAgents(), registry=_registry())
        )
        await engine.start()
        try:
            accepted = await engine.submit(compiled, {})
            done = await engine.wait(accepted.workflow_id)
            assert done.status.is_terminal, k
            if k > 1:  # the first save is the submission itself, which the caller sees fail
                stored = await engine.status(accepted.workflow_id)
                assert stored.status.is_terminal, k
                with pytest.raises(WorkflowAlreadyFinished):
                    await engine.cancel(accepted.workflow_id)
        except ConnectionError:
            assert k == 1  # submit's own write failed: nothing was accepted
        finally:
            await engine.close()
            await store.close()


def test_agent_errors_are_not_internal() -> None:
    """An AgentError keeps its own code (the runner only labels what it cannot name)."""
    from orchestrator.dag.engine import error_code

    assert error_code(AgentError("x", agent="a")) == "agent_error"
    assert error_code(Injected("x")) == "internal_error"
