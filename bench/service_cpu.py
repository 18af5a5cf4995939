"""Benchmark: the service's CPU per request at a sustained N in flight, trees interleaved.

    REDIS_URL=redis://127.0.0.1:6390/14 .venv/bin/python -m bench.service_cpu \
        [--vs /path/to/other/checkout ...] [--requests 3000] [--blocks 5] \
        [--concurrency 50] [--store redis|memory] [--loop auto|asyncio|uvloop]

bench.targets' "service with Redis: wf/s @50" row keeps 50 requests in flight for the
whole row, and the service is the process that saturates its core, so its throughput
is about 1 / (its CPU per request). bench.service_ab measures CPU per request in
rounds of N requests, counting only while a round is in flight: whatever a service
does after a round's last answer (the events appended after the answer, the
write-behind, the leases' unlisting) lands between rounds and is not counted. That
made the service look ~10 % cheaper there than under bench.targets' steady load.

Here each block drives one server at a steady N in flight (N workers, each sending
its next request as soon as its answer came back), as bench.targets does, and reads
the server's CPU time (/proc schedstat, every thread) from just before the block to
a pause after it, so the housekeeping of the block's last workflows is counted too;
the pause before the next block lets the previous server's own finish without
sharing the machine. Blocks rotate between floor_service, this tree's service and
each `--vs` tree, so every server meets the same minutes of the machine. Printed:
each server's median CPU per request and throughput over its blocks, and their ratios
to floor_service's.

Every server is a child process on 127.0.0.1 (stub agents answering at once, as in
bench.targets). Bounded: a fixed number of requests per block and blocks per run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import Mapping
from pathlib import Path

import aiohttp

from bench.chain import post_query
from bench.service_ab import _cpu_s, serving
from orchestrator.settings import Settings

# The pause around a block: the previous server's housekeeping ends before the next
# block starts, and this block's own is counted (its last workflows' events, unlisting).
_SETTLE_S = 0.3


async def _steady(session: aiohttp.ClientSession, port: int, count: int, concurrency: int) -> None:
    """`count` queries to `port`, `concurrency` in flight all along."""
    remaining = count

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await post_query(session, port)

    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(concurrency))), timeout=300)


async def _blocks(
    ports: Mapping[str, int], pids: Mapping[str, int], args: argparse.Namespace
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    cpu_ms: dict[str, list[float]] = {name: [] for name in ports}
    per_s: dict[str, list[float]] = {name: [] for name in ports}
    connector = aiohttp.TCPConnector(limit=max(128, 2 * args.concurrency))
    async with aiohttp.ClientSession(connector=connector) as session:
        for port in ports.values():  # warm-up: connections, caches
            await _steady(session, port, 200, args.concurrency)
        names = list(ports)
        for block in range(args.blocks):
            k = block % len(names)
            for name in names[k:] + names[:k]:  # who goes first rotates
                await asyncio.sleep(_SETTLE_S)
                before = _cpu_s(pids[name])
                start = time.perf_counter()
                await _steady(session, ports[name], args.requests, args.concurrency)
                took = time.perf_counter() - start
                await asyncio.sleep(_SETTLE_S)
                cpu_ms[name].append((_cpu_s(pids[name]) - before) / args.requests * 1000.0)
                per_s[name].append(args.requests / took)
    return cpu_ms, per_s


async def main(args: argparse.Namespace, trees: Mapping[str, Path]) -> None:
    async with serving(trees, args.store) as (ports, pids):
        cpu_ms, per_s = await _blocks(ports, pids, args)
    print(
        f"{args.store} store, {args.concurrency} in flight, steady, {args.blocks} blocks of "
        f"{args.requests} requests per server, interleaved; medians\n"
    )
    floor_cpu = statistics.median(cpu_ms["floor_service"])
    floor_rate = statistics.median(per_s["floor_service"])
    print(f"{'server':24} {'CPU ms/req':>10} {'x floor':>8} {'wf/s':>7} {'x floor':>8}  per block")
    for name in ports:
        cpu = statistics.median(cpu_ms[name])
        rate = statistics.median(per_s[name])
        blocks = " ".join(f"{c:.3f}" for c in cpu_ms[name])
        print(
            f"{name:24} {cpu:>10.3f} {cpu / floor_cpu:>7.2f}x {rate:>7.0f} "
            f"{rate / floor_rate:>7.2f}x  {blocks}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--vs", action="append", default=[], help="another checkout whose service runs beside"
    )
    parser.add_argument("--requests", type=int, default=3000, help="requests per block")
    parser.add_argument("--blocks", type=int, default=5, help="blocks per server")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--store", choices=["redis", "memory"], default="redis")
    parser.add_argument("--loop", choices=["auto", "asyncio", "uvloop"], default="auto")
    parsed = parser.parse_args()
    os.environ["ORCH_EVENT_LOOP"] = parsed.loop
    os.environ.setdefault("ORCH_GC_THRESHOLD", str(Settings().gc_threshold))
    here = Path(__file__).resolve().parent.parent
    chosen = {"service (this tree)": here}
    chosen.update({f"service (--vs {i + 1})": Path(t).resolve() for i, t in enumerate(parsed.vs)})
    asyncio.run(asyncio.wait_for(main(parsed, chosen), timeout=1800))
