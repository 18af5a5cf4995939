"""Benchmark: the NLP -> Data -> Viz chain against zero-latency stub agents.

Rows, each at concurrency 1 and 50, each with its ratio to the floor measured in
the same run:

- floor: the same three calls made directly with aiohttp's client, no orchestration
- transport: the same three calls through the default agent transport, no
  orchestration: what the transport alone adds to the floor
- engine/memory: WorkflowOrchestrator in-process, in-memory state store
- engine/redis: the same with the Redis state store (needs REDIS_URL)
- service/memory, service/redis: the whole service through its HTTP API (own process)

Targets (with Redis state): p50 at concurrency 1 within 1.6x the floor;
throughput at concurrency 50 at least 0.6x the floor.

    REDIS_URL=redis://127.0.0.1:6390/14 .venv/bin/python -m bench.chain [--workflows N]

Stubs and the service run in child processes on 127.0.0.1; everything stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import multiprocessing
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import aiohttp
import orjson
from aiohttp import web

_INTENT = {
    "query": "average revenue by region in 2024",
    "metric": "revenue",
    "aggregation": "avg",
    "group_by": ["region"],
    "filters": [{"field": "year", "op": "=", "value": 2024}],
    "order": None,
    "limit": None,
    "chart_hint": "bar",
}
_ROWS = [
    {"region": r, "avg_revenue": 1000.0 + i} for i, r in enumerate(["APAC", "EMEA", "LATAM", "NA"])
]
_ANSWERS = {
    "nlp": {"status": "success", "data": {"intent": _INTENT}},
    "data": {"status": "success", "data": {"columns": ["region", "avg_revenue"], "rows": _ROWS}},
    "viz": {"status": "success", "data": {"spec": {"mark": "bar", "data": {"values": _ROWS}}}},
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve_stubs(port: int) -> None:
    """Child process: one aiohttp server answering /nlp, /data and /viz at once."""

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        body = orjson.dumps(_ANSWERS[request.match_info["agent"]])
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_post("/{agent}/process", handle)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def _registry(stub_port: int) -> Any:
    from agents.registry import AgentRegistry
    from orchestrator.settings import default_registry

    return AgentRegistry(
        [
            # The shipped defaults (concurrency, timeouts...): the bench measures what users get.
            dataclasses.replace(spec, url=f"http://127.0.0.1:{stub_port}/{spec.name}")
            for spec in default_registry().values()
        ]
    )


def service_env(port: int, stub_port: int, redis_url: str | None) -> dict[str, str]:
    """What `orchestrator serve` is told for a bench run: its port, quiet logs, a key
    prefix of its own, the stub agents, and Redis only when `redis_url` is given."""
    base = f"http://127.0.0.1:{stub_port}"
    env = {
        "ORCH_PORT": str(port),
        "ORCH_LOG_LEVEL": "error",
        "ORCH_KEY_PREFIX": f"bench:{uuid.uuid4().hex[:6]}:",
        "NLP_AGENT_URL": f"{base}/nlp",
        "DATA_AGENT_URL": f"{base}/data",
        "VIZ_AGENT_URL": f"{base}/viz",
    }
    if redis_url:
        env["REDIS_URL"] = redis_url
    return env


def _serve_api(port: int, stub_port: int, redis_url: str | None) -> None:
    """Child process: the whole service, run by `orchestrator serve` as users run it
    (its event loop choice, ORCH_EVENT_LOOP, and its start-up included)."""
    from orchestrator.cli import main as cli_main

    os.environ.pop("REDIS_URL", None)
    os.environ.update(service_env(port, stub_port, redis_url))
    with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
        cli_main(["serve"])


async def _wait_listening(port: int) -> None:
    for _ in range(500):
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            await writer.wait_closed()
            return
        await asyncio.sleep(0.02)
    raise RuntimeError(f"nothing listening on {port}")


@dataclasses.dataclass
class Row:
    name: str
    concurrency: int
    count: int
    seconds: float
    latencies_ms: list[float]

    @property
    def per_s(self) -> float:
        return self.count / self.seconds

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


async def _drive(
    name: str, one: Callable[[], Awaitable[None]], *, concurrency: int, count: int
) -> Row:
    for _ in range(min(50, count)):  # warm-up: connections, caches
        await one()
    latencies: list[float] = []
    remaining = count

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            start = time.perf_counter()
            await one()
            latencies.append((time.perf_counter() - start) * 1000.0)

    start = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(concurrency))), timeout=120)
    return Row(name, concurrency, count, time.perf_counter() - start, latencies)


async def _floor(stub_port: int, concurrency: int, count: int) -> Row:
    base = f"http://127.0.0.1:{stub_port}"
    connector = aiohttp.TCPConnector(limit=128)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def post(agent: str, payload: dict[str, Any]) -> dict[str, Any]:
            body = orjson.dumps({"workflow_id": "w", "step_id": agent, "input": payload})
            async with session.post(
                f"{base}/{agent}/process", data=body, headers={"Content-Type": "application/json"}
            ) as r:
                data: dict[str, Any] = orjson.loads(await r.read())["data"]
                return data

        async def one() -> None:
            nlp = await post("nlp", {"query": "average revenue by region in 2024"})
            data = await post("data", {"intent": nlp["intent"]})
            await post("viz", {"intent": nlp["intent"], **data})

        return await _drive(
            "floor (aiohttp, 3 direct calls)", one, concurrency=concurrency, count=count
        )


async def _httpx_calls(stub_port: int, concurrency: int, count: int) -> Row:
    from agents.registry import AgentTimeouts
    from agents.transport import create_transport

    base = f"http://127.0.0.1:{stub_port}"
    http = create_transport()
    timeouts = AgentTimeouts()
    try:

        async def post(agent: str, payload: dict[str, Any]) -> dict[str, Any]:
            body = orjson.dumps({"workflow_id": "w", "step_id": agent, "input": payload})
            r = await http.request(
                "POST",
                f"{base}/{agent}/process",
                body=body,
                headers={"Content-Type": "application/json"},
                timeouts=timeouts,
                max_body_bytes=1 << 20,
            )
            data: dict[str, Any] = orjson.loads(r.body)["data"]
            return data

        async def one() -> None:
            nlp = await post("nlp", {"query": "average revenue by region in 2024"})
            data = await post("data", {"intent": nlp["intent"]})
            await post("viz", {"intent": nlp["intent"], **data})

        return await _drive("transport (3 direct calls)", one, concurrency=concurrency, count=count)
    finally:
        await http.aclose()


async def _engine(name: str, stub_port: int, store: Any, concurrency: int, count: int) -> Row:
    from agents.client import AgentClient
    from agents.transport import create_transport
    from orchestrator.builtins import BUILTIN_FALLBACKS
    from orchestrator.chain import CHAIN_DEFINITION
    from orchestrator.dag.compiler import compile_workflow
    from orchestrator.dag.engine import DagEngine
    from orchestrator.dag.kinds import default_kinds
    from orchestrator.lifecycle import WorkflowOrchestrator

    registry = _registry(stub_port)
    http = create_transport()
    client = AgentClient(registry, http)
    kinds = default_kinds()
    runner = DagEngine(agents=client, registry=registry, kinds=kinds, builtins=BUILTIN_FALLBACKS)
    orchestrator = WorkflowOrchestrator(store=store, dag_engine=runner)
    chain = compile_workflow(
        CHAIN_DEFINITION, agents=list(registry), kinds=kinds, builtins=list(BUILTIN_FALLBACKS)
    )
    await orchestrator.start()
    try:

        async def one() -> None:
            state = await orchestrator.submit(chain, {"query": "average revenue by region in 2024"})
            done = await orchestrator.wait(state.workflow_id)
            assert done.status.value == "completed", done.to_dict()

        return await _drive(name, one, concurrency=concurrency, count=count)
    finally:
        await orchestrator.close()
        await http.aclose()
        await store.close()


_QUERY_BODY = orjson.dumps({"query": "average revenue by region in 2024"})


async def post_query(session: aiohttp.ClientSession, port: int) -> None:
    """One chain query to the server on `port`, its answer read; anything but 200 raises."""
    async with session.post(
        f"http://127.0.0.1:{port}/api/query",
        data=_QUERY_BODY,
        headers={"Content-Type": "application/json"},
    ) as r:
        await r.read()
        if r.status != 200:
            raise RuntimeError(f"answer {r.status} from port {port}")


async def _service(name: str, api_port: int, concurrency: int, count: int) -> Row:
    connector = aiohttp.TCPConnector(limit=128)
    async with aiohttp.ClientSession(connector=connector) as session:
        return await _drive(
            name, partial(post_query, session, api_port), concurrency=concurrency, count=count
        )


def _start(target: Callable[..., None], *args: Any) -> multiprocessing.Process:
    process = multiprocessing.get_context("fork").Process(target=target, args=args, daemon=True)
    process.start()
    return process


async def main(count: int) -> None:
    import logging

    from orchestrator.logs import configure_logging
    from state.memory import MemoryStateStore
    from state.redis import RedisStateStore

    configure_logging("error")
    logging.disable(logging.WARNING)
    redis_url = os.environ.get("REDIS_URL")
    stub_port = _free_port()
    children = [_start(_serve_stubs, stub_port)]
    try:
        await _wait_listening(stub_port)
        rows: list[Row] = []
        for conc in (1, 50):
            n = count if conc == 50 else max(count // 4, 100)
            rows.append(await _floor(stub_port, conc, n))
            rows.append(await _httpx_calls(stub_port, conc, n))
            rows.append(
                await _engine("engine, memory store", stub_port, MemoryStateStore(), conc, n)
            )
            if redis_url:
                store = RedisStateStore.from_url(redis_url, prefix=f"bench:{uuid.uuid4().hex[:6]}:")
                rows.append(await _engine("engine, redis store", stub_port, store, conc, n))
        for label, url in (
            ("service (HTTP), memory store", None),
            ("service (HTTP), redis store", redis_url),
        ):
            if label.endswith("redis store") and not url:
                continue
            api_port = _free_port()
            child = _start(_serve_api, api_port, stub_port, url)
            children.append(child)
            await _wait_listening(api_port)
            for conc in (1, 50):
                n = count if conc == 50 else max(count // 4, 100)
                rows.append(await _service(label, api_port, conc, n))
            child.terminate()
        _print(rows)
        if not redis_url:
            print("\n(no REDIS_URL: the Redis rows were not measured)")
    finally:
        for child in children:
            child.terminate()
            child.join(timeout=5)


def _print(rows: list[Row]) -> None:
    floors = {r.concurrency: r for r in rows if r.name.startswith("floor")}
    print(
        f"{'row':36} {'conc':>4} {'n':>6} {'wf/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'p50 x floor':>11} {'wf/s x floor':>12}"
    )
    for r in sorted(rows, key=lambda r: r.concurrency):
        f = floors[r.concurrency]
        print(
            f"{r.name:36} {r.concurrency:>4} {r.count:>6} {r.per_s:>8.0f} {r.pct(0.5):>8.2f} "
            f"{r.pct(0.99):>8.2f} {r.pct(0.5) / f.pct(0.5):>11.2f} {r.per_s / f.per_s:>12.2f}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--workflows", type=int, default=2_000, help="workflows per row at concurrency 50"
    )
    args = parser.parse_args()
    # Bounded however the run goes: a bench must stop by itself.
    asyncio.run(asyncio.wait_for(main(args.workflows), timeout=900))
