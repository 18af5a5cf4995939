"""What speaking A2A costs per agent call, against the native `POST /process` contract.

    python -m bench.a2a [--calls 300] [--cap-s 30]

The reference Viz agent, served three ways on 127.0.0.1 in this process: the native
contract, A2A v1.0 and A2A v0.3. Each row makes `--calls` calls through
`AgentClient.call` (breaker, retry, bulkhead, timeouts) one after another, every call
a new step (so the A2A agent never answers from its messageId cache), and prints
calls/s, p50 and p99 latency, and the p50 relative to the native row. An A2A call is
two round trips here: SendMessage (answered at once with a working task) and one
GetTask after the first 2 ms poll pause, plus building and checking the JSON-RPC
envelopes with a2a-sdk's types.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import time
from typing import Any

import structlog
from aiohttp import web

from agents.client import AgentClient
from agents.reference import start_agent
from agents.reference.a2a_service import start_a2a_agent
from agents.registry import AgentRegistry, AgentSpec
from agents.transport import create_transport

INPUT: dict[str, Any] = {
    "intent": {
        "metric": "revenue",
        "aggregation": "sum",
        "group_by": ["region"],
        "filters": [],
        "chart_hint": "bar",
    },
    "columns": ["region", "sum_revenue"],
    "rows": [{"region": r, "sum_revenue": i} for i, r in enumerate(["APAC", "EMEA", "NA"])],
}


async def _row(client: AgentClient, agent: str, calls: int, cap_s: float) -> list[float]:
    latencies: list[float] = []
    deadline = time.perf_counter() + cap_s
    for i in range(calls):
        if time.perf_counter() > deadline:
            break
        started = time.perf_counter()
        await client.call(agent, INPUT, workflow_id="bench", node_id=f"{agent}-{i}")
        latencies.append(time.perf_counter() - started)
    return latencies


async def main(calls: int, cap_s: float) -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    runners: list[web.AppRunner] = []
    native, native_port = await start_agent("viz")
    v10, v10_port = await start_a2a_agent("viz", version="1.0")
    v03, v03_port = await start_a2a_agent("viz", version="0.3")
    runners += [native, v10, v03]
    registry = AgentRegistry(
        [
            AgentSpec(name="native", url=f"http://127.0.0.1:{native_port}"),
            AgentSpec(name="a2a-1.0", url=f"http://127.0.0.1:{v10_port}", protocol="a2a"),
            AgentSpec(name="a2a-0.3", url=f"http://127.0.0.1:{v03_port}", protocol="a2a"),
        ]
    )
    http = create_transport()
    client = AgentClient(registry, http)
    try:
        await client.discover()
        rows: list[tuple[str, list[float]]] = []
        for name in registry:
            await _row(client, name, 20, cap_s)  # warm-up
            rows.append((name, await _row(client, name, calls, cap_s)))
        base = statistics.median(rows[0][1])
        print(
            f"{'row':<10}{'calls':>7}{'calls/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'p50 x native':>14}"
        )
        for name, lat in rows:
            lat.sort()
            p50, p99 = statistics.median(lat), lat[int(0.99 * (len(lat) - 1))]
            print(
                f"{name:<10}{len(lat):>7}{len(lat) / sum(lat):>10.0f}{p50 * 1e3:>9.2f}"
                f"{p99 * 1e3:>9.2f}{p50 / base:>14.2f}"
            )
    finally:
        await client.aclose()
        await http.aclose()
        for runner in runners:
            await runner.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--cap-s", type=float, default=30.0)
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.cap_s))
