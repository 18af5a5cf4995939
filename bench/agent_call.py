"""CPU of one agent call through our layers: `AgentClient.call` and the aiohttp transport.

    .venv/bin/python -m bench.agent_call [--calls 20000] [--http-calls 4000] [--runs 5]

CPU time (`time.process_time`), not wall time, so other work on the machine moves
the figures little; 50 calls in flight; each row the median of `--runs` runs,
interleaved. Rows:

- `AgentClient.call`, fake transport (bench.targets' FakeTransport: no sockets), with
  a deadline (the engine always passes one) and without: what the resilience layers
  cost per call on the happy path;
- over real HTTP to zero-latency stub agents (a child process on 127.0.0.1): the
  floor (`session.post` + `await r.read()` with one shared `aiohttp.ClientSession`),
  `AiohttpTransport.request` alone, and `AgentClient.call` over it. `x floor` is the
  row's CPU per call relative to the floor's.

Bounded: a fixed number of calls per run and --cap-s seconds for the whole run.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson

from bench.chain import _free_port, _registry, _serve_stubs, _start, _wait_listening

IN_FLIGHT = 50
PAYLOAD = {"query": "average revenue by region"}


async def _cpu_per_call(one: Callable[[], Awaitable[Any]], calls: int) -> float:
    """Microseconds of process CPU per call, `calls` calls at IN_FLIGHT at once."""

    async def worker(n: int) -> None:
        for _ in range(n):
            await one()

    started = time.process_time()
    await asyncio.gather(*(worker(calls // IN_FLIGHT) for _ in range(IN_FLIGHT)))
    return (time.process_time() - started) / (calls // IN_FLIGHT * IN_FLIGHT) * 1e6


async def _rows(stub_port: int, calls: int, http_calls: int, runs: int) -> dict[str, float]:
    from agents.client import AgentClient
    from agents.transport import create_transport
    from bench.targets import FakeTransport

    registry = _registry(stub_port)
    loop = asyncio.get_running_loop()
    fake_client = AgentClient(registry, FakeTransport())
    transport = create_transport()
    http_client = AgentClient(registry, transport)
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256))
    spec = registry["nlp"]
    body = orjson.dumps({"workflow_id": "w", "step_id": "nlp", "input": PAYLOAD})
    headers = {"content-type": "application/json", "idempotency-key": "w:nlp"}

    async def fake_deadline() -> Any:
        return await fake_client.call(
            "nlp", PAYLOAD, workflow_id="w", node_id="nlp", deadline=loop.time() + 300
        )

    async def fake_plain() -> Any:
        return await fake_client.call("nlp", PAYLOAD, workflow_id="w", node_id="nlp")

    async def floor() -> Any:
        async with session.post(spec.process_url, data=body, headers=headers) as r:
            return orjson.loads(await r.read())["data"]

    async def transport_alone() -> Any:
        answer = await transport.request(
            "POST",
            spec.process_url,
            body=body,
            headers=headers,
            timeouts=spec.timeouts,
            max_body_bytes=spec.max_response_bytes,
        )
        return orjson.loads(answer.body)["data"]

    async def client_http() -> Any:
        return await http_client.call(
            "nlp", PAYLOAD, workflow_id="w", node_id="nlp", deadline=loop.time() + 300
        )

    rows: dict[str, tuple[Callable[[], Awaitable[Any]], int]] = {
        "AgentClient.call, fake transport, deadline": (fake_deadline, calls),
        "AgentClient.call, fake transport, no deadline": (fake_plain, calls),
        "floor: session.post + read (HTTP)": (floor, http_calls),
        "AiohttpTransport.request (HTTP)": (transport_alone, http_calls),
        "AgentClient.call (HTTP), deadline": (client_http, http_calls),
    }
    seen: dict[str, list[float]] = {name: [] for name in rows}
    try:
        for one, _ in rows.values():  # warm-up: connections, caches
            await _cpu_per_call(one, IN_FLIGHT * 10)
        for _ in range(runs):
            for name, (one, n) in rows.items():
                seen[name].append(await _cpu_per_call(one, n))
    finally:
        await session.close()
        await transport.aclose()
    return {name: statistics.median(values) for name, values in seen.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=20_000, help="per run, fake rows")
    parser.add_argument("--http-calls", type=int, default=4_000, help="per run, HTTP rows")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--cap-s", type=float, default=300.0, help="bound on the whole run")
    args = parser.parse_args()
    from orchestrator.logs import configure_logging

    configure_logging("error")  # as the service logs: nothing per successful call
    stub_port = _free_port()
    stubs = _start(_serve_stubs, stub_port)
    try:
        asyncio.run(_wait_listening(stub_port))
        medians = asyncio.run(
            asyncio.wait_for(
                _rows(stub_port, args.calls, args.http_calls, args.runs), timeout=args.cap_s
            )
        )
    finally:
        stubs.terminate()
        stubs.join(timeout=5)
    floor = medians["floor: session.post + read (HTTP)"]
    print(f"{'row':48} {'us CPU/call':>12} {'x floor':>8}")
    for name, us in medians.items():
        ratio = f"{us / floor:.2f}" if "HTTP" in name else ""
        print(f"{name:48} {us:>12.1f} {ratio:>8}")


if __name__ == "__main__":
    main()
