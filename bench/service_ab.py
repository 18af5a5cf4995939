"""Benchmark: the service against floor_service, and against another tree, request by request.

    REDIS_URL=redis://127.0.0.1:6390/14 .venv/bin/python -m bench.service_ab \
        [--vs /path/to/other/checkout] [--requests 600] [--concurrency 1] \
        [--store redis|memory] [--loop auto|asyncio|uvloop]

bench.targets measures each row in a block of its own: on a shared machine the p50 at
1 in flight then moves with whatever else ran in that block (single runs spread
1.5-3.2x). Here every round sends one request to each server in turn (floor_service,
this tree's service, and with `--vs` the same service run from another checkout, e.g.
the commit a change branched from), rotating who goes first, so every server meets the
same minutes of the machine; the ratios are of medians taken over the same rounds.

With `--concurrency N` each round is N requests in flight to one server, then to the
next. Beside latency, each server's CPU time per request is read from /proc (user +
system of its process): a figure the machine's other work hardly moves.

Every server is a child process on 127.0.0.1 (stub agents answering at once, as in
bench.targets); the services run `orchestrator serve` with the tree's own code.
Bounded: a fixed number of requests, and the run by a time cap.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import aiohttp

from bench.chain import (
    _free_port,
    _serve_stubs,
    _start,
    _wait_listening,
    post_query,
    service_env,
)
from bench.targets import _serve_floor_service


def _cpu_s(pid: int) -> float:
    """CPU seconds of process `pid` so far, every thread, to the nanosecond (schedstat:
    /proc/<pid>/stat counts in clock ticks of 10 ms, coarser than one request)."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat", encoding="ascii") as f:
                total += int(f.read().split()[0])
        except FileNotFoundError:  # a thread that ended meanwhile
            continue
    return total / 1e9


def _service(
    tree: Path, port: int, stub_port: int, redis_url: str | None
) -> subprocess.Popen[bytes]:
    """`orchestrator serve` with `tree`'s code (its own module search path, this venv)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_") or k in _PASSED_ON}
    env.pop("REDIS_URL", None)
    env.update(service_env(port, stub_port, redis_url), PYTHONPATH=str(tree))
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "serve"],
        cwd=tree,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


# What the services are told of the run (the event loop, the collector), as bench.targets does.
_PASSED_ON = frozenset({"ORCH_EVENT_LOOP", "ORCH_GC_THRESHOLD"})


async def _rounds(
    ports: Mapping[str, int], pids: Mapping[str, int], requests: int, concurrency: int
) -> tuple[dict[str, list[float]], dict[str, float]]:
    latencies: dict[str, list[float]] = {name: [] for name in ports}
    cpu: dict[str, float] = dict.fromkeys(ports, 0.0)
    connector = aiohttp.TCPConnector(limit=max(128, 2 * concurrency))
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(port: int) -> float:
            start = time.perf_counter()
            await post_query(session, port)
            return (time.perf_counter() - start) * 1000.0

        names = list(ports)
        for name in names:  # warm-up: connections, caches
            for _ in range(50):
                await one(ports[name])
        rounds = max(1, requests // concurrency)
        for i in range(rounds):
            k = i % len(names)
            for name in names[k:] + names[:k]:  # who goes first rotates
                before = _cpu_s(pids[name])
                took = await asyncio.gather(*(one(ports[name]) for _ in range(concurrency)))
                cpu[name] += _cpu_s(pids[name]) - before
                latencies[name].extend(took)
    return latencies, cpu


@contextlib.asynccontextmanager
async def serving(
    trees: Mapping[str, Path], store: str
) -> AsyncIterator[tuple[dict[str, int], dict[str, int]]]:
    """The stub agents, floor_service and `orchestrator serve` of each tree (on Redis with
    `store` "redis"), listening; yields each server's port and pid by name (floor_service
    first), and stops them all on the way out. Shared by bench.service_cpu."""
    redis_url = os.environ.get("REDIS_URL") if store == "redis" else None
    if store == "redis" and not redis_url:
        raise SystemExit("--store redis needs REDIS_URL")
    stub_port = _free_port()
    children = [_start(_serve_stubs, stub_port)]
    servers: list[subprocess.Popen[bytes]] = []
    ports: dict[str, int] = {"floor_service": _free_port()}
    pids: dict[str, int] = {}
    try:
        floor = _start(_serve_floor_service, ports["floor_service"], stub_port)
        children.append(floor)
        pids["floor_service"] = floor.pid or 0
        for name, tree in trees.items():
            ports[name] = _free_port()
            server = _service(tree, ports[name], stub_port, redis_url)
            servers.append(server)
            pids[name] = server.pid
        await _wait_listening(stub_port)
        for port in ports.values():
            await _wait_listening(port)
        yield ports, pids
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=10)
        for child in children:
            child.terminate()
            child.join(timeout=5)


async def main(args: argparse.Namespace, trees: Mapping[str, Path]) -> None:
    async with serving(trees, args.store) as (ports, pids):
        latencies, cpu = await _rounds(ports, pids, args.requests, args.concurrency)
    floor_p50 = statistics.median(latencies["floor_service"])
    floor_cpu = cpu["floor_service"] / len(latencies["floor_service"]) * 1000.0
    print(
        f"{args.store} store, {args.concurrency} in flight, {args.requests} requests each, "
        f"interleaved\n"
    )
    print(
        f"{'server':24} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'p50 x floor':>12} "
        f"{'CPU ms/req':>11} {'x floor':>8}"
    )
    for name, took in latencies.items():
        ordered = sorted(took)
        p50 = statistics.median(ordered)
        cpu_ms = cpu[name] / len(took) * 1000.0
        print(
            f"{name:24} {p50:>8.3f} {ordered[int(0.9 * len(ordered))]:>8.3f} "
            f"{ordered[min(int(0.99 * len(ordered)), len(ordered) - 1)]:>8.3f} "
            f"{p50 / floor_p50:>11.2f}x {cpu_ms:>11.3f} {cpu_ms / floor_cpu:>7.2f}x"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--vs", help="another checkout whose service runs beside this one")
    parser.add_argument("--requests", type=int, default=600, help="requests per server")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--store", choices=["redis", "memory"], default="redis")
    parser.add_argument("--loop", choices=["auto", "asyncio", "uvloop"], default="auto")
    parsed = parser.parse_args()
    from orchestrator.settings import Settings

    # Every server, floor_service included, on the same loop and collector settings.
    os.environ["ORCH_EVENT_LOOP"] = parsed.loop
    os.environ.setdefault("ORCH_GC_THRESHOLD", str(Settings().gc_threshold))
    trees = {"service (this tree)": Path(__file__).resolve().parent.parent}
    if parsed.vs:
        trees["service (--vs)"] = Path(parsed.vs).resolve()
    asyncio.run(asyncio.wait_for(main(parsed, trees), timeout=900))
