"""Benchmark: a chain of N trivial agent nodes, compiled and run to the end, for growing N.

    python -m bench.dag_chain [--sizes 1000,2000,5000,10000] [--repeat 3]

Each node calls a fake in-process agent (no HTTP) with a template reading the
previous node's output, so what is measured is the engine alone: compiling the
definition, scheduling, rendering, recording every transition through
`WorkflowOrchestrator` into the embedded memory store. Columns (best of --repeat):

- compile ms: `compile_workflow` (schema, model, validation);
- run ms: submit to terminal state, every transition written;
- us/node: (compile + run) per node;
- x first: us/node against the first (smallest) size: about 1.0 all the way down
  means the cost grows linearly with N (quadratic would double with each doubling);
- unpaced: the same run with the state writer's pacing turned off
  (`WorkflowOrchestrator(write_pace=0)`), at the smallest two sizes only: every
  transition then rewrites the whole document, which is what made a 10,000-node
  chain take minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Mapping
from typing import Any

SCRIPT = os.path.abspath(__file__)
sys.path.insert(0, os.path.dirname(os.path.dirname(SCRIPT)))

import structlog  # noqa: E402

from agents.registry import AgentRegistry, AgentSpec  # noqa: E402
from orchestrator.dag.compiler import compile_workflow  # noqa: E402
from orchestrator.dag.engine import DagEngine  # noqa: E402
from orchestrator.lifecycle import WorkflowOrchestrator  # noqa: E402
from state.memory import MemoryStateStore  # noqa: E402


class _Answer:
    __slots__ = ("attempts", "data")

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.attempts = 1


class FakeAgent:
    """Answers every call at once with a small object."""

    async def call(self, agent: str, payload: Mapping[str, Any], **_: Any) -> _Answer:
        return _Answer({"v": 1})


def chain(n: int) -> dict[str, Any]:
    nodes: list[dict[str, Any]] = [
        {"id": "n0", "kind": "agent", "agent": "a", "input": {"x": "{{ inputs.q }}"}}
    ]
    for i in range(1, n):
        nodes.append(
            {
                "id": f"n{i}",
                "kind": "agent",
                "agent": "a",
                "depends_on": [f"n{i - 1}"],
                "input": {"x": f"{{{{ n{i - 1}.v }}}}"},
            }
        )
    return {"name": "chain", "inputs": {"q": 1}, "options": {"timeout_s": 3600}, "nodes": nodes}


async def one_run(n: int, *, paced: bool) -> tuple[float, float]:
    raw = chain(n)
    started = time.perf_counter()
    workflow = compile_workflow(raw, agents={"a"})
    compiled = time.perf_counter()
    runner = DagEngine(
        agents=FakeAgent(), registry=AgentRegistry([AgentSpec(name="a", url="http://x")])
    )
    store = MemoryStateStore()
    engine = WorkflowOrchestrator(store=store, dag_engine=runner, write_pace=4.0 if paced else 0.0)
    await engine.start()
    accepted = await engine.submit(workflow, {}, definition=raw)
    final = await engine.wait(accepted.workflow_id)
    done = time.perf_counter()
    await engine.close()
    await store.close()
    assert final.status.value == "completed", final.error
    return compiled - started, done - compiled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,2000,5000,10000")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    print(f"{'nodes':>6} {'compile ms':>11} {'run ms':>9} {'us/node':>8} {'x first':>8} "
          f"{'unpaced run ms':>15}")
    first: float | None = None
    for index, n in enumerate(sizes):
        best = min(
            (asyncio.run(one_run(n, paced=True)) for _ in range(args.repeat)), key=sum
        )
        per_node = sum(best) / n * 1e6
        first = first or per_node
        unpaced = "-"
        if index < 2:
            _, run_s = asyncio.run(one_run(n, paced=False))
            unpaced = f"{run_s * 1000:.0f}"
        print(
            f"{n:>6} {best[0] * 1000:>11.1f} {best[1] * 1000:>9.1f} {per_node:>8.1f} "
            f"{per_node / first:>8.2f} {unpaced:>15}"
        )


if __name__ == "__main__":
    main()
