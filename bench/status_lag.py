"""Benchmark: how far status read on another replica trails a running workflow (Redis).

    REDIS_URL=redis://127.0.0.1:6390/14 .venv/bin/python -m bench.status_lag \
        [--vs /path/to/other/checkout ...] [--workflows 3000] [--concurrency 50] \
        [--delay-s 0.005] [--agent-ms 0] [--loop asyncio|uvloop]

Issue 11 asks that transitions be written behind "within a bounded delay" and that
status still show progress within it. The replica running a workflow answers status
from memory; any other replica reads Redis. This measures what that other replica
sees: chains run in-process at N in flight against the stub agents (127.0.0.1,
answering at once), with the store on Redis, while a sampler reads running workflows'
documents through a second store on its own connection (another replica's view). For
each sample, the lag is how long ago the oldest step change the stored copy does not
show yet happened in the live run (0 when it shows them all), measured when the read's
answer arrived (so an answer's own round trip counts against the store).

Printed per tree: lag percentiles over all samples, the share of samples trailing by
more than the delay, and the running document writes per chain. Each tree runs in a
child process of its own (`--vs` trees in turn, then this one), so trees share nothing
but the machine and the Redis server; every run uses a key prefix of its own and, at
its end, deletes the keys under it (nothing else).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import time
import uuid
from typing import Any

# Samples at most this often, and at most this many workflows each time (a bounded
# extra load on Redis: a few thousand reads a second, sent together).
_SAMPLE_EVERY_S = 0.002
_PER_SAMPLE = 8


async def _batches(keys: Any, size: int = 1000) -> Any:
    batch: list[Any] = []
    async for key in keys:
        batch.append(key)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _unreflected_since(live: Any, stored: Any) -> float | None:
    """When the oldest step change of `live` that `stored` does not show happened."""
    oldest: float | None = None
    for step_id, run in list(live.steps.items()):
        seen = None if stored is None else stored.steps.get(step_id)
        if seen is not None and seen.status is run.status:
            continue
        changed = run.finished_at if run.finished_at is not None else run.started_at
        if changed is not None and (oldest is None or changed < oldest):
            oldest = changed
    return oldest


async def _run(
    workflows: int, concurrency: int, delay_s: float, agent_s: float, redis_url: str
) -> None:
    from agents.transport import create_transport
    from bench.chain import _free_port, _registry, _serve_stubs, _start, _wait_listening
    from bench.defaults import _serve_slow_stubs
    from bench.targets import QUERY, _chain_definition, _drive, _engine_and_workflow
    from orchestrator.lifecycle import WorkflowOrchestrator
    from orchestrator.logs import configure_logging
    from state.connect import connect
    from state.models import WorkflowState
    from state.redis import RedisStateStore

    configure_logging("error")
    stub_port = _free_port()
    stubs = (
        _start(_serve_stubs, stub_port)
        if agent_s <= 0
        else _start(_serve_slow_stubs, stub_port, agent_s)
    )
    prefix = f"lag:{uuid.uuid4().hex[:8]}:"
    client, reader_client = connect(redis_url), connect(redis_url)
    saves = 0

    class Counting(RedisStateStore):
        async def save(self, state: WorkflowState, **kwargs: Any) -> bool:
            nonlocal saves
            if not state.status.is_terminal:
                saves += 1
            return await super().save(state, **kwargs)

    store = Counting(client, prefix=prefix)
    reader = RedisStateStore(reader_client, prefix=prefix)
    registry = _registry(stub_port)
    transport = create_transport()
    engine, chain = _engine_and_workflow(registry, transport, _chain_definition())
    orchestrator = WorkflowOrchestrator(store=store, dag_engine=engine, write_delay_s=delay_s)
    lags: list[float] = []
    driving = True

    async def read_one(live: WorkflowState) -> None:
        stored = await reader.get(live.workflow_id)
        now = time.time()
        if live.status.is_terminal or not live.steps:
            return  # ended meanwhile (its terminal write is awaited), or no step yet
        since = _unreflected_since(live, stored)
        lags.append(0.0 if since is None else max(0.0, now - since))

    async def sample() -> None:
        while driving:
            await asyncio.sleep(_SAMPLE_EVERY_S)
            running = list(orchestrator.running.values())
            picked = random.sample(running, min(_PER_SAMPLE, len(running)))
            await asyncio.gather(*(read_one(live) for live in picked))

    try:
        await _wait_listening(stub_port)
        await orchestrator.start()

        async def one() -> None:
            state = await orchestrator.submit(chain, {"query": QUERY})
            await orchestrator.wait(state.workflow_id)

        sampler = asyncio.create_task(sample())
        try:
            row = await _drive("lag", one, concurrency=concurrency, count=workflows)
        finally:
            driving = False
            await sampler
    finally:
        await orchestrator.close()
        await transport.aclose()
        await store.close()
        await reader.close()
        # This run's keys only (its own prefix): a long bench session would otherwise
        # leave hundreds of thousands behind until their TTL.
        async for keys in _batches(client.scan_iter(match=f"{prefix}*", count=1000)):
            await client.unlink(*keys)
        await client.aclose()
        await reader_client.aclose()
        stubs.terminate()
        stubs.join(timeout=5)
    lags.sort()
    n = len(lags)

    def pct(q: float) -> float:
        return lags[min(int(q * n), n - 1)] * 1000.0 if n else float("nan")

    late = sum(1 for lag in lags if lag > delay_s) / n if n else float("nan")
    total = workflows + min(50, workflows)
    print(
        f"  lag ms p50 {pct(0.5):6.1f}  p90 {pct(0.9):6.1f}  p99 {pct(0.99):6.1f}  "
        f"max {pct(1.0):6.1f}  over the delay {100 * late:5.1f} %  "
        f"({n} samples; {saves / total:.2f} running writes per chain; "
        f"{row.per_s:.0f} wf/s, p50 {row.pct(0.5):.1f} ms)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vs", action="append", default=[], help="another checkout to run")
    parser.add_argument("--workflows", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--delay-s", type=float, default=0.005)
    parser.add_argument(
        "--agent-ms", type=float, default=0.0, help="each stub agent answers this much late"
    )
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    redis_url = os.environ.get("REDIS_URL")
    if not redis_url:
        sys.exit("REDIS_URL must name a Redis to run against (e.g. redis://127.0.0.1:6390/14)")
    if args.child:
        if args.loop == "uvloop":
            import uvloop

            uvloop.install()
        asyncio.run(
            _run(args.workflows, args.concurrency, args.delay_s, args.agent_ms / 1000, redis_url)
        )
        return
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    print(
        f"status lag on another replica: chains at {args.concurrency} in flight, write delay "
        f"{args.delay_s * 1000:g} ms, agents answering {args.agent_ms:g} ms late, {args.loop}"
    )
    for tree in [*args.vs, here]:
        print(f"{tree}:", flush=True)
        # This script from this checkout; everything it imports from the tree under test.
        child = [sys.executable, os.path.abspath(__file__), "--child"]
        child += ["--workflows", str(args.workflows), "--concurrency", str(args.concurrency)]
        child += ["--delay-s", str(args.delay_s), "--loop", args.loop]
        child += ["--agent-ms", str(args.agent_ms)]
        env = {**os.environ, "PYTHONPATH": tree}
        subprocess.run(child, env=env, check=True, cwd=tree, timeout=600)


if __name__ == "__main__":
    main()
