"""Where the CPU goes: the chain, engine in-process at 50 in flight, by layer (cProfile).

    .venv/bin/python -m bench.profile [--workflows 1500] [--store memory|redis]
        [--transport http|fake] [--shape chain|fanout]

Runs the built-in chain against zero-latency stub agents (a child process on
127.0.0.1) under cProfile and sums each function's own time (`tottime`) by the
layer its file belongs to. Time the loop spends waiting in epoll is idle, not CPU,
and is left out of the shares. Garbage collection is timed apart, through
`gc.callbacks`. Written to run against older trees of this project too (it finds
the agent HTTP client either way), so a before/after table comes from one script.

`--service` profiles `orchestrator serve` itself instead (a child process running the
service under cProfile, driven over HTTP with POST /api/query at 50 in flight; the
profile is written when SIGINT stops it): what the HTTP server side adds to the engine.
`--store redis` (with REDIS_URL) runs either on Redis.

`--transport fake` answers every agent call at once in-process (bench.targets'
FakeTransport): no sockets, so what is left is the orchestration's own CPU, the
figure behind the "CPU per node" target. `--shape fanout` runs the 20-node fan-out
(root -> 18 in parallel -> join) instead of the chain.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import os
import pstats
import time
import uuid
from collections import defaultdict
from typing import Any

from bench.chain import (
    _free_port,
    _registry,
    _serve_api,
    _serve_stubs,
    _service,
    _start,
    _wait_listening,
)

LAYERS: tuple[tuple[str, str], ...] = (
    ("/orchestrator/lifecycle.py", "engine (orchestrator/engine, state_writer)"),
    ("/orchestrator/state_writer.py", "engine (orchestrator/engine, state_writer)"),
    ("/orchestrator/dag/", "DAG engine + node kinds + templates"),
    ("/orchestrator/api/", "API handlers + middleware (ours)"),
    ("/orchestrator/access/", "API handlers + middleware (ours)"),
    ("/orchestrator/metrics.py", "metrics (ours + prometheus_client)"),
    ("/orchestrator/metered_store.py", "metrics (ours + prometheus_client)"),
    ("/site-packages/prometheus_client/", "metrics (ours + prometheus_client)"),
    ("/agents/", "agent client + transport (ours)"),
    ("/circuit/", "breaker + retry (ours)"),
    ("/state/", "state store (ours)"),
    ("/site-packages/redis/", "redis-py"),
    ("/site-packages/httpx_aiohttp/", "httpx / httpcore / httpx-aiohttp"),
    ("/site-packages/httpx/", "httpx / httpcore / httpx-aiohttp"),
    ("/site-packages/httpcore/", "httpx / httpcore / httpx-aiohttp"),
    ("/site-packages/h11/", "httpx / httpcore / httpx-aiohttp"),
    ("/site-packages/anyio/", "httpx / httpcore / httpx-aiohttp"),
    ("/site-packages/aiohttp/web", "aiohttp server"),
    ("/site-packages/aiohttp/", "aiohttp client"),
    ("/site-packages/yarl/", "aiohttp client"),
    ("/site-packages/multidict/", "aiohttp client"),
    ("/site-packages/structlog/", "structlog"),
    ("/asyncio/", "asyncio event loop"),
    ("/bench/", "bench driver"),
)


def _layer(filename: str, name: str) -> str:
    if filename == "~":
        if "epoll" in name and "poll" in name:
            return "idle (epoll wait)"
        if any(k in name for k in ("_asyncio", "Task", "Future", "_contextvars", "socket")):
            return "asyncio event loop"
        return "builtins (C)"
    for fragment, layer in LAYERS:
        if fragment in filename:
            return layer
    return "stdlib / other"


class _GcTimer:
    def __init__(self) -> None:
        self.total = 0.0
        self._start = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.total += time.perf_counter() - self._start


async def _run(
    stub_port: int, count: int, store_kind: str, transport: str, shape: str
) -> tuple[cProfile.Profile, float]:
    import agents.transport as transport_module
    from agents.client import AgentClient
    try:
        from orchestrator.builtins import BUILTIN_FALLBACKS
    except ImportError:  # trees before orchestrator/builtins.py
        from orchestrator.app import BUILTIN_FALLBACKS
    from orchestrator.chain import CHAIN_DEFINITION
    from orchestrator.dag.compiler import compile_workflow
    from orchestrator.dag.engine import DagEngine
    from orchestrator.dag.kinds import default_kinds
    from orchestrator.lifecycle import WorkflowOrchestrator
    from state.memory import MemoryStateStore
    from state.redis import RedisStateStore

    registry = _registry(stub_port)
    make = getattr(transport_module, "create_transport", None)
    if transport == "fake":
        from bench.targets import FakeTransport

        make = FakeTransport
    elif make is None:  # trees before the transport seam
        make = transport_module.create_http_client
    http = make()
    client = AgentClient(registry, http)
    kinds = default_kinds()
    runner = DagEngine(agents=client, registry=registry, kinds=kinds, builtins=BUILTIN_FALLBACKS)
    store: Any
    if store_kind == "redis":
        store = RedisStateStore.from_url(
            os.environ["REDIS_URL"], prefix=f"bench:{uuid.uuid4().hex[:6]}:"
        )
    else:
        store = MemoryStateStore()
    orchestrator = WorkflowOrchestrator(store=store, dag_engine=runner)
    definition: Any = CHAIN_DEFINITION
    if shape == "fanout":
        from bench.targets import FANOUT_DEFINITION

        definition = FANOUT_DEFINITION
    chain = compile_workflow(
        definition, agents=list(registry), kinds=kinds, builtins=list(BUILTIN_FALLBACKS)
    )
    await orchestrator.start()
    remaining = count

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            state = await orchestrator.submit(chain, {"query": "average revenue by region"})
            await orchestrator.wait(state.workflow_id)

    try:
        await asyncio.gather(*(worker() for _ in range(50)))  # warm-up, unprofiled
        remaining = count
        profile = cProfile.Profile()
        start = time.perf_counter()
        profile.enable()
        await asyncio.gather(*(worker() for _ in range(50)))
        profile.disable()
        wall = time.perf_counter() - start
        return profile, wall
    finally:
        await orchestrator.close()
        await http.aclose()
        await store.close()


def _profiled_service(port: int, stub_port: int, redis_url: str | None, out: str) -> None:
    """Child process: `orchestrator serve` under cProfile until SIGINT; stats to `out`."""
    profile = cProfile.Profile()
    profile.enable()
    try:
        _serve_api(port, stub_port, redis_url)
    finally:
        profile.disable()
        profile.dump_stats(out)


async def _drive_service(port: int, count: int) -> float:
    await _wait_listening(port)
    row = await _service("service", port, 50, count)
    return row.seconds


def _service_profile(stub_port: int, count: int, store_kind: str) -> tuple[pstats.Stats, float]:
    import signal
    import tempfile

    redis_url = os.environ["REDIS_URL"] if store_kind == "redis" else None
    port = _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "service.prof")
        child = _start(_profiled_service, port, stub_port, redis_url, out)
        try:
            wall = asyncio.run(asyncio.wait_for(_drive_service(port, count), timeout=300))
        finally:
            if child.pid is not None:
                os.kill(child.pid, signal.SIGINT)
            child.join(timeout=30)
        return pstats.Stats(out), wall


def _table(
    profile: cProfile.Profile | pstats.Stats,
    wall: float,
    gc_s: float,
    count: int,
    shape: str,
    top: int,
) -> None:
    stats = profile if isinstance(profile, pstats.Stats) else pstats.Stats(profile)
    by_layer: dict[str, float] = defaultdict(float)
    for (filename, _line, name), row in stats.stats.items():  # type: ignore[attr-defined]
        by_layer[_layer(filename, name)] += row[2]
    idle = by_layer.pop("idle (epoll wait)", 0.0)
    busy = sum(by_layer.values())
    print(
        f"{count} {shape} workflows at 50 in flight: {count / wall:.0f} wf/s under the profiler; "
        f"profiled CPU {busy:.2f} s, idle in epoll {idle:.2f} s, "
        f"gc {gc_s:.2f} s ({100 * gc_s / wall:.1f} % of wall)"
    )
    print(f"{'layer':48} {'s':>7} {'share':>7}")
    for layer, seconds in sorted(by_layer.items(), key=lambda kv: -kv[1]):
        print(f"{layer:48} {seconds:>7.2f} {100 * seconds / busy:>6.1f}%")
    if top:
        print()
        stats.sort_stats("tottime").print_stats(top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workflows", type=int, default=1_500)
    parser.add_argument("--store", choices=["memory", "redis"], default="memory")
    parser.add_argument("--transport", choices=["http", "fake"], default="http")
    parser.add_argument("--shape", choices=["chain", "fanout"], default="chain")
    parser.add_argument("--top", type=int, default=0, help="also print the N costliest functions")
    parser.add_argument("--service", action="store_true", help="profile `orchestrator serve`")
    args = parser.parse_args()
    try:  # the service's own logging set-up (level error), loggers cached as it caches them
        from orchestrator.logs import configure_logging

        configure_logging("error")
    except ImportError:  # trees older than orchestrator/logs.py
        import logging

        import structlog

        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    stub_port = _free_port()
    stubs = _start(_serve_stubs, stub_port)
    if args.service:
        try:
            asyncio.run(_wait_listening(stub_port))
            stats, wall = _service_profile(stub_port, args.workflows, args.store)
        finally:
            stubs.terminate()
            stubs.join(timeout=5)
        print("service process (gc not timed apart: it is in the rows where it ran)")
        _table(stats, wall, 0.0, args.workflows, "chain (service)", args.top)
        return
    try:  # the collector as `orchestrator serve` sets it (trees before it: CPython's)
        from orchestrator.collector import tune_collector
        from orchestrator.settings import Settings

        tune_collector(Settings.from_env().gc_threshold)
    except ImportError:
        pass
    timer = _GcTimer()
    try:
        asyncio.run(_wait_listening(stub_port))
        gc.callbacks.append(timer)
        profile, wall = asyncio.run(
            asyncio.wait_for(
                _run(stub_port, args.workflows, args.store, args.transport, args.shape), timeout=300
            )
        )
        gc.callbacks.remove(timer)
    finally:
        stubs.terminate()
        stubs.join(timeout=5)
    _table(profile, wall, timer.total, args.workflows, args.shape, args.top)


if __name__ == "__main__":
    main()
