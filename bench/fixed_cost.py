"""What a workflow costs whatever its nodes, and what each agent node adds.

    .venv/bin/python -m bench.fixed_cost [--workflows 3000] [--repeats 5]

Runs linear chains of 1, 3 and 9 agent nodes (each node's input reads the one before it)
and the built-in chain through the engine in-process on the memory store, 50 in flight,
against `bench.targets`' fake transport (no sockets: orchestration only), and prints the
CPU time per workflow of each (medians over `--repeats`). A straight line through the 1-
and 9-node costs splits it: the slope is the cost of one agent node, what is left at 1
node less one slope is the fixed cost of a workflow (submit, accept, its task, the run's
set-up, the terminal transition and write, the last events, metrics, the wait). Compare
two trees by running it in each, interleaved (`cd <tree> && PYTHONPATH=<tree> ...`).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
from typing import Any

import bench.targets as targets

CONCURRENCY = 50
LENGTHS = (1, 3, 9)


def linear_chain(length: int) -> dict[str, Any]:
    """`length` agent nodes in a line, each reading its predecessor's answer."""
    nodes: list[dict[str, Any]] = [
        {"id": "n0", "kind": "agent", "agent": "nlp", "input": {"query": "{{ inputs.query }}"}}
    ]
    for i in range(1, length):
        nodes.append(
            {
                "id": f"n{i}",
                "kind": "agent",
                "agent": "nlp",
                "depends_on": [f"n{i - 1}"],
                "input": {"intent": "{{ " + f"n{i - 1}.intent" + " }}"},
            }
        )
    return {"name": f"linear{length}", "nodes": nodes}


async def _ms_per_workflow(definition: dict[str, Any], workflows: int) -> float:
    # The stub port is never dialled: the fake transport answers every agent in-process.
    _, cpu, nodes = await targets._engine_row(
        "fixed_cost", 1, definition, CONCURRENCY, workflows, fake=True
    )
    return cpu / (nodes / len(definition["nodes"])) * 1000.0


async def main(args: argparse.Namespace) -> None:
    from orchestrator.logs import configure_logging

    configure_logging("error")
    logging.disable(logging.WARNING)
    shapes = {str(n): linear_chain(n) for n in LENGTHS}
    shapes["chain"] = targets._chain_definition()
    runs: dict[str, list[float]] = {name: [] for name in shapes}
    for _ in range(args.repeats):
        for name, definition in shapes.items():
            runs[name].append(await _ms_per_workflow(definition, args.workflows))
    median = {name: statistics.median(values) for name, values in runs.items()}
    for name, values in runs.items():
        label = "built-in chain" if name == "chain" else f"{name}-node linear chain"
        cells = " ".join(f"{v:.4f}" for v in values)
        print(f"{label:22} {median[name]:.4f} ms per workflow   runs: {cells}")
    first, last = LENGTHS[0], LENGTHS[-1]
    per_node = (median[str(last)] - median[str(first)]) / (last - first)
    print(f"per agent node         {per_node:.4f} ms")
    print(f"fixed per workflow     {median[str(first)] - first * per_node:.4f} ms")


if __name__ == "__main__":
    from orchestrator.collector import tune_collector
    from orchestrator.settings import Settings

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workflows", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=5)
    parsed = parser.parse_args()
    tune_collector(Settings().gc_threshold)  # the collector as `orchestrator serve` sets it
    asyncio.run(main(parsed))
