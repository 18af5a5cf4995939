"""Makespan of a DAG with uneven node latencies against its critical path.

    python -m bench.dag_makespan [--nodes 60] [--mean-ms 20] [--runs 5] [--seed 7]

A stub agent (aiohttp, in a child process on 127.0.0.1) answers the agent contract
after `input.delay_ms` (slept precisely: see `precise_sleep`). A random DAG of
--nodes agent nodes (node i depends on 1-3 of the 8 nodes before it) gets
per-node latencies drawn uniformly from [0.25, 1.75] x --mean-ms. Its critical
path length is the plan's, with each node's latency as its `estimate_ms`: no
executor can finish sooner.

Rows, median of --runs each, all through the real `AgentClient` (breaker, retry,
bulkhead, timeouts) over one keep-alive HTTP client:

- eager: `DagEngine` (a node starts as soon as its own dependencies are done);
- level-by-level: `plan.levels` one after the other, each level waiting for its
  slowest node (written here for comparison only);
- floor: the critical path's nodes called one after the other: what the hops
  cost (HTTP + client) before any engine.

Each row prints the makespan and its ratio to the critical path
(target for eager: <= 1.05 at 20 ms mean agent latency).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import structlog
from aiohttp import web

SCRIPT = os.path.abspath(__file__)
# Runnable as `python bench/dag_makespan.py` too: make the project importable.
sys.path.insert(0, os.path.dirname(os.path.dirname(SCRIPT)))

from agents.client import AgentClient  # noqa: E402
from agents.registry import AgentRegistry, AgentSpec  # noqa: E402
from agents.transport import create_transport  # noqa: E402
from circuit.config import RetryConfig  # noqa: E402
from orchestrator.dag.compiler import CompiledWorkflow, compile_workflow  # noqa: E402
from orchestrator.dag.engine import DagEngine  # noqa: E402
from orchestrator.dag.plan import Plan, plan_workflow  # noqa: E402
from state.models import WorkflowState, WorkflowStatus  # noqa: E402

AGENT = "stub"
TARGET = 1.05


# -- the stub agent (child process) ------------------------------------------------------


async def precise_sleep(seconds: float) -> None:
    """Sleep `seconds`, not ~0.7 ms more: the event loop's timers wake late (epoll
    timeouts are whole milliseconds, rounded up), which would bill the stub's own
    lateness to the executor under test. The last 1.5 ms are spent yielding."""
    loop = asyncio.get_running_loop()
    until = loop.time() + seconds
    if seconds > 0.0015:
        await asyncio.sleep(seconds - 0.0015)
    # A spin to a deadline: there is no event to wait for.
    while loop.time() < until:  # noqa: ASYNC110
        await asyncio.sleep(0)


async def _serve() -> None:
    async def process(request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        delay_ms = float(body["input"].get("delay_ms", 0))
        await precise_sleep(delay_ms / 1000.0)
        answer = {"status": "success", "data": {"step": body["step_id"], "delay_ms": delay_ms}}
        return web.Response(body=orjson.dumps(answer), content_type="application/json")

    app = web.Application()
    app.router.add_post("/process", process)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(runner.addresses[0][1], flush=True)
    try:
        # Serve until the parent closes our stdin.
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    finally:
        await runner.cleanup()


# -- the workload ---------------------------------------------------------------------------


def random_definition(nodes: int, mean_ms: float, rng: random.Random) -> dict[str, Any]:
    out = []
    for i in range(nodes):
        window = range(max(0, i - 8), i)
        deps = sorted(rng.sample(window, min(len(window), rng.randint(1, 3)))) if i else []
        delay = round(rng.uniform(0.25, 1.75) * mean_ms, 1)
        out.append(
            {
                "id": f"n{i}",
                "kind": "agent",
                "agent": AGENT,
                "depends_on": [f"n{d}" for d in deps],
                "input": {"delay_ms": delay},
                "estimate_ms": delay,
            }
        )
    return {"name": "makespan", "options": {"max_parallel": nodes}, "nodes": out}


async def run_eager(runner: DagEngine, compiled: CompiledWorkflow, n: int) -> float:
    state = WorkflowState(workflow_id=f"eager-{n}", definition_name=compiled.name)

    async def nothing(_: WorkflowState) -> None:
        return None

    start = time.perf_counter()
    await runner.run(compiled, state, on_transition=nothing)
    elapsed = time.perf_counter() - start
    assert state.status is WorkflowStatus.COMPLETED, state.error
    return elapsed * 1000.0


async def run_levels(client: AgentClient, compiled: CompiledWorkflow, plan: Plan, n: int) -> float:
    """The baseline: every level starts when the previous level's slowest node is done."""
    start = time.perf_counter()
    for level in plan.levels:
        await asyncio.gather(
            *(
                client.call(
                    AGENT,
                    compiled.nodes[node].node.params["input"],
                    workflow_id=f"levels-{n}",
                    node_id=node,
                )
                for node in level
            )
        )
    return (time.perf_counter() - start) * 1000.0


async def call_chain(client: AgentClient, delays: list[float], n: int) -> float:
    start = time.perf_counter()
    for i, delay in enumerate(delays):
        await client.call(AGENT, {"delay_ms": delay}, workflow_id=f"chain-{n}", node_id=f"c{i}")
    return (time.perf_counter() - start) * 1000.0


async def median_ms(fn: Callable[[int], Awaitable[float]], runs: int) -> float:
    await fn(-1)  # warm-up: connections, caches
    return statistics.median([await fn(i) for i in range(runs)])


async def _main(args: argparse.Namespace) -> None:
    server = await asyncio.create_subprocess_exec(
        sys.executable,
        SCRIPT,
        "--serve",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert server.stdout is not None
        port = int((await server.stdout.readline()).decode())
        spec = AgentSpec(
            name=AGENT,
            url=f"http://127.0.0.1:{port}",
            concurrency=args.nodes,
            retry=RetryConfig(max_attempts=1),
        )
        registry = AgentRegistry([spec])
        raw = random_definition(args.nodes, args.mean_ms, random.Random(args.seed))
        compiled = compile_workflow(raw, agents=set(registry))
        plan = plan_workflow(compiled)
        http = create_transport()
        try:
            client = AgentClient(registry, http)
            runner = DagEngine(agents=client, registry=registry)
            delays = [
                compiled.nodes[n].node.params["input"]["delay_ms"] for n in plan.critical_path
            ]
            rows = {
                "eager": await median_ms(lambda i: run_eager(runner, compiled, i), args.runs),
                "level-by-level": await median_ms(
                    lambda i: run_levels(client, compiled, plan, i), args.runs
                ),
                "floor": await median_ms(lambda i: call_chain(client, delays, i), args.runs),
            }
        finally:
            await http.aclose()
    finally:
        if server.stdin is not None:
            server.stdin.close()
        await server.wait()
    cp = plan.critical_path_length
    print(
        f"DAG: {args.nodes} nodes, {len(plan.levels)} levels, widest {plan.max_parallelism}; "
        f"latency {args.mean_ms:g} ms mean (x0.25-1.75); critical path "
        f"{len(plan.critical_path)} nodes, {cp:.1f} ms; median of {args.runs} runs"
    )
    print(f"{'row':<16} {'makespan ms':>12} {'x critical path':>16}")
    for name, ms in rows.items():
        print(f"{name:<16} {ms:>12.1f} {ms / cp:>16.3f}")
    eager = rows["eager"]
    verdict = "met" if eager / cp <= TARGET else "NOT met"
    hop = (rows["floor"] - cp) / len(plan.critical_path)
    print(
        f"eager / critical path = {eager / cp:.3f} (target <= {TARGET}: {verdict}); "
        f"eager / floor = {eager / rows['floor']:.3f}; "
        f"one hop costs {hop:.2f} ms over its latency here"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--nodes", type=int, default=60)
    parser.add_argument("--mean-ms", type=float, default=20.0)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(_serve())
        return
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    asyncio.run(_main(args))


if __name__ == "__main__":
    main()
