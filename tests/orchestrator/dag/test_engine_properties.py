"""Properties of the runner on random DAGs: edges respected, limits held, skips propagated."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from agents.registry import AgentRegistry, AgentSpec
from orchestrator.dag.compiler import compile_workflow
from orchestrator.dag.engine import DagEngine
from state.models import NodeStatus, WorkflowState, WorkflowStatus

from .conftest import Result, new_state
from .strategies import dags


class RecordingAgent:
    """Logs ("start"|"end", step); each call yields to the loop a scripted number of times
    so completions interleave differently from run to run."""

    def __init__(self, yields: Mapping[str, int]) -> None:
        self.yields = yields
        self.log: list[tuple[str, str]] = []
        self.in_flight = 0
        self.peak = 0

    async def call(self, agent: str, payload: Mapping[str, Any], **kw: Any) -> Result:
        node = kw["node_id"]
        self.log.append(("start", node))
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        for _ in range(self.yields[node]):
            await asyncio.sleep(0)
        self.in_flight -= 1
        self.log.append(("end", node))
        return Result({"node": node})


def run_dag(
    deps: dict[str, tuple[str, ...]],
    *,
    max_parallel: int,
    yields: Mapping[str, int],
    skipped: set[str] = frozenset(),  # type: ignore[assignment]
) -> tuple[WorkflowState, RecordingAgent]:
    raw = {
        "options": {"max_parallel": max_parallel},
        "nodes": [
            {
                "id": n,
                "kind": "agent",
                "agent": "a",
                "depends_on": list(ds),
                **({"when": "False"} if n in skipped else {}),
            }
            for n, ds in deps.items()
        ],
    }
    compiled = compile_workflow(raw, agents={"a"})
    caller = RecordingAgent(yields)
    state = new_state()

    async def go() -> None:
        async def noop(_: WorkflowState) -> None:
            return None

        runner = DagEngine(
            agents=caller, registry=AgentRegistry([AgentSpec(name="a", url="http://x")])
        )
        await runner.run(compiled, state, on_transition=noop)

    asyncio.run(go())
    return state, caller


@given(dags(max_nodes=20), st.integers(min_value=1, max_value=5), st.data())
@settings(max_examples=60, deadline=None)
def test_run_order_respects_every_edge_and_the_parallel_limit(
    deps: dict[str, tuple[str, ...]], max_parallel: int, data: st.DataObject
) -> None:
    """Every node starts only after each dependency ended; never over max_parallel at once."""
    yields = {n: data.draw(st.integers(min_value=0, max_value=4)) for n in deps}
    state, caller = run_dag(deps, max_parallel=max_parallel, yields=yields)
    assert state.status is WorkflowStatus.COMPLETED
    position = {event: i for i, event in enumerate(caller.log)}
    assert len(position) == 2 * len(deps)
    for node, ds in deps.items():
        for d in ds:
            assert position[("end", d)] < position[("start", node)]
    assert caller.peak <= max_parallel


@given(dags(max_nodes=20), st.data())
@settings(max_examples=60, deadline=None)
def test_skips_propagate_to_exactly_the_dependents(
    deps: dict[str, tuple[str, ...]], data: st.DataObject
) -> None:
    """With the default trigger rules (no failures here) a node is skipped iff its `when`
    is false or every one of its dependencies was skipped."""
    off = data.draw(st.sets(st.sampled_from(sorted(deps))))
    state, caller = run_dag(deps, max_parallel=4, yields=dict.fromkeys(deps, 0), skipped=off)
    expected: dict[str, bool] = {}

    def is_skipped(node: str) -> bool:
        if node not in expected:
            ds = deps[node]
            expected[node] = node in off or (bool(ds) and all(is_skipped(d) for d in ds))
        return expected[node]

    for node in deps:
        status = state.steps[node].status
        assert status is (NodeStatus.SKIPPED if is_skipped(node) else NodeStatus.COMPLETED)
    assert {node for kind, node in caller.log if kind == "start"} == {
        n for n in deps if not is_skipped(n)
    }
