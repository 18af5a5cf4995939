"""Benchmark: what the state layer costs Redis, per workflow and per replica-second.

    eval "$(scripts/redis.sh)"
    python -m bench.state_layout                    # this checkout
    BENCH_CODE_ROOT=/path/to/old/checkout python bench/state_layout.py --label before

Runs real `WorkflowOrchestrator`s (fake in-process agents, no HTTP) on the Redis of
REDIS_URL, under a prefix of its own (deleted after), and reads the server's own
counters: `INFO commandstats` (commands) and `INFO stats` total_net_input_bytes
(bytes sent to Redis). Counts, not timings, are what this prints: the machine is
shared, commands and bytes are not noisy. `BENCH_CODE_ROOT` runs the same
measurements against another checkout's code (e.g. the one before per-step writes)
so "before" and "after" come from the same script on the same server.

Sections:

1. per workflow: chains of 3, 20 and 1,000 nodes run to the end on one replica:
   Redis commands and bytes in, and the memory of what stays (MEMORY USAGE of the
   finished workflow's keys).
2. one transition: a document of 3 and 10,000 steps already stored; one step
   changes; the save's bytes and event-loop CPU (process time).
3. per replica-second: 2 replicas idle, then 2 replicas each holding 50 running
   workflows (agents that never answer), for --seconds with a 3 s lease.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from collections.abc import Mapping
from typing import Any

SCRIPT = os.path.abspath(__file__)
# Run as a file, Python puts bench/ itself first on the path, where bench/a2a.py would
# shadow the a2a package: drop it, and put the code under test first.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(SCRIPT)]
sys.path.insert(0, os.environ.get("BENCH_CODE_ROOT") or os.path.dirname(os.path.dirname(SCRIPT)))

import redis.asyncio as aioredis  # noqa: E402
import structlog  # noqa: E402

from agents.registry import AgentRegistry, AgentSpec  # noqa: E402
from orchestrator.dag.compiler import compile_workflow  # noqa: E402
from orchestrator.dag.engine import DagEngine  # noqa: E402
from orchestrator.lifecycle import WorkflowOrchestrator  # noqa: E402
from state.models import NodeRun, NodeStatus, WorkflowState, WorkflowStatus  # noqa: E402
from state.redis import RedisStateStore  # noqa: E402


class _Answer:
    __slots__ = ("attempts", "data")

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.attempts = 1


class FakeAgent:
    """Answers at once with a small object, or never (`hang`)."""

    def __init__(self, *, hang: bool = False) -> None:
        self._hang = hang

    async def call(self, agent: str, payload: Mapping[str, Any], **_: Any) -> _Answer:
        if self._hang:
            await asyncio.Event().wait()
        return _Answer({"v": 1, "rows": [{"region": "EU", "total": 12.5}]})


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


class Counters:
    def __init__(self, client: aioredis.Redis) -> None:
        self._client = client

    async def read(self) -> tuple[int, int]:
        """(commands served, bytes received) so far, the INFO commands themselves excluded."""
        stats = await self._client.info("commandstats")
        calls = sum(v["calls"] for k, v in stats.items() if k != "cmdstat_info")
        net = (await self._client.info("stats"))["total_net_input_bytes"]
        return int(calls), int(net)


def _engine(store: RedisStateStore, agent: FakeAgent, replica: str, lease_s: float) -> Any:
    runner = DagEngine(agents=agent, registry=AgentRegistry([AgentSpec(name="a", url="http://x")]))
    return WorkflowOrchestrator(
        store=store, dag_engine=runner, replica_id=replica, leases=store.leases(), lease_s=lease_s
    )


async def per_workflow(url: str, prefix: str, n: int) -> dict[str, float]:
    probe = aioredis.Redis.from_url(url)
    counters = Counters(probe)
    store = RedisStateStore.from_url(url, prefix=prefix)
    engine = _engine(store, FakeAgent(), "r1", 15.0)
    raw = chain(n)
    workflow = compile_workflow(raw, agents={"a"})
    await engine.start()
    await asyncio.sleep(0.05)
    calls0, bytes0 = await counters.read()
    accepted = await engine.submit(workflow, {}, definition=raw)
    final = await engine.wait(accepted.workflow_id)
    calls1, bytes1 = await counters.read()
    assert final.status is WorkflowStatus.COMPLETED, final.error
    memory = 0
    async for key in probe.scan_iter(match=f"{prefix}*{accepted.workflow_id}*"):
        memory += int(await probe.memory_usage(key) or 0)
    await engine.close()
    await store.close()
    await probe.aclose()
    # The engine's start-up and background commands during the run are in the count
    # too (a heartbeat at most); runs are far shorter than a beat.
    return {"commands": calls1 - calls0, "bytes": bytes1 - bytes0, "memory": memory}


def _document(n: int) -> WorkflowState:
    steps = {
        f"n{i}": NodeRun(step_id=f"n{i}", kind="agent", agent="a", status=NodeStatus.PENDING)
        for i in range(n)
    }
    return WorkflowState(
        workflow_id=uuid.uuid4().hex,
        definition_name="chain",
        status=WorkflowStatus.RUNNING,
        inputs={"q": 1},
        steps=steps,
        definition=chain(n),
    )


async def transition(url: str, prefix: str, n: int) -> dict[str, float]:
    probe = aioredis.Redis.from_url(url)
    counters = Counters(probe)
    store = RedisStateStore.from_url(url, prefix=prefix)
    state = _document(n)
    await store.save(state)
    best_cpu = float("inf")
    sent = 0
    for i in range(min(n, 5)):
        run = state.steps[f"n{i}"]
        run.status = NodeStatus.COMPLETED
        run.output = {"v": i, "rows": [{"region": "EU", "total": 12.5}]}
        _, before = await counters.read()
        cpu0 = time.process_time()
        await store.save(state)
        cpu = time.process_time() - cpu0
        _, after = await counters.read()
        best_cpu = min(best_cpu, cpu)
        sent = after - before
    await store.close()
    await probe.aclose()
    return {"bytes": sent, "cpu_ms": best_cpu * 1000}


async def per_replica_second(url: str, prefix: str, running: int, seconds: float) -> float:
    probe = aioredis.Redis.from_url(url)
    counters = Counters(probe)
    engines, stores = [], []
    raw = chain(2)
    workflow = compile_workflow(raw, agents={"a"})
    for r in range(2):
        store = RedisStateStore.from_url(url, prefix=prefix)
        engine = _engine(store, FakeAgent(hang=True), f"r{r}", 3.0)
        await engine.start()
        for _ in range(running):
            await engine.submit(workflow, {}, definition=raw)
        engines.append(engine)
        stores.append(store)
    await asyncio.sleep(1.0)  # submits and first transitions written
    calls0, _ = await counters.read()
    await asyncio.sleep(seconds)
    calls1, _ = await counters.read()
    for engine in engines:
        for workflow_id in list(engine.running):
            engine._cancel_local(workflow_id, reason="bench over")
    for engine, store in zip(engines, stores, strict=True):
        await engine.close()
        await store.close()
    await probe.aclose()
    return (calls1 - calls0) / seconds / 2


async def clean(url: str, prefix: str) -> None:
    client = aioredis.Redis.from_url(url)
    keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=1000)]
    for i in range(0, len(keys), 500):
        await client.delete(*keys[i : i + 500])
    await client.aclose()


async def main_async(args: argparse.Namespace) -> None:
    url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6390/15"
    prefix = f"bench:{uuid.uuid4().hex[:8]}:"
    label = args.label
    try:
        print(f"== {label}: per workflow (one replica, chain of n agent nodes)")
        print(f"{'nodes':>6} {'commands':>9} {'KB in':>9} {'KB kept':>8}")
        for n in (3, 20, 1000):
            row = await per_workflow(url, prefix, n)
            print(f"{n:>6} {row['commands']:>9.0f} {row['bytes'] / 1024:>9.1f} "
                  f"{row['memory'] / 1024:>8.1f}")
        print(f"== {label}: one transition (one step completes) of a stored document")
        print(f"{'steps':>6} {'bytes in':>9} {'cpu ms':>7}")
        for n in (3, 10_000):
            row = await transition(url, prefix, n)
            print(f"{n:>6} {row['bytes']:>9.0f} {row['cpu_ms']:>7.2f}")
        print(f"== {label}: Redis commands per replica-second (2 replicas, lease 3 s)")
        for running in (0, 50):
            rate = await per_replica_second(url, prefix, running, args.seconds)
            print(f"running per replica {running:>4}: {rate:>7.1f} commands/s")
    finally:
        await clean(url, prefix)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--label", default="after")
    parser.add_argument("--seconds", type=float, default=6.0)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
