"""Benchmark: the state store under a submit burst and under Redis faults.

Rows:

- burst, pool N: `--submits` async submits, `--concurrency` at a time, through the
  HTTP API (reference agents failing a third of their calls) on a Redis pool of N
  connections: wall time, submits/s, submit latency p50/p99, how many answered
  5xx (must be 0), and open descriptors of the process before the replica
  started and after it stopped (a leak shows as a growing difference).
- redis down / redis frozen: how long a status call takes to answer 503
  `state_store_unavailable` when Redis refuses connections / is SIGSTOPped (the
  bound is the connect and command timeouts, ORCH_REDIS_*_TIMEOUT_S, 1 s each).

Everything runs on 127.0.0.1 and stops by itself; the fault rows use a
redis-server of their own (started here, on a free port, then killed).

    REDIS_URL=redis://127.0.0.1:6390/14 .venv/bin/python -m bench.state_faults \
        [--submits 2000] [--concurrency 100]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import shutil
import signal
import socket
import statistics
import tempfile
import time
import uuid
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from aiohttp import web

from agents.reference import start_agent
from agents.registry import AgentRegistry
from circuit.config import RetryConfig
from orchestrator.access.config import AccessConfig
from orchestrator.access.principal import UNLIMITED
from orchestrator.app import create_app
from orchestrator.settings import Settings, default_registry

QUESTION = "total revenue by channel"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def _agents() -> tuple[dict[str, str], list[web.AppRunner]]:
    urls: dict[str, str] = {}
    runners: list[web.AppRunner] = []
    for name in ("nlp", "data", "viz"):
        runner, port = await start_agent(name, host="127.0.0.1", port=0)
        urls[name] = f"http://127.0.0.1:{port}"
        runners.append(runner)
    return urls, runners


def _settings(urls: dict[str, str], redis_url: str, **overrides: Any) -> Settings:
    specs = [
        dataclasses.replace(
            spec,
            url=urls[spec.name],
            retry=RetryConfig(max_attempts=2, base_delay_s=0.001, max_delay_s=0.005),
        )
        for spec in default_registry().values()
    ]
    return Settings(
        agents=AgentRegistry(specs),
        redis_url=redis_url,
        key_prefix=f"bench:{uuid.uuid4().hex[:8]}:",
        access=AccessConfig(default_limits=UNLIMITED, max_async_workflows=0),
        log_level="error",
        **overrides,
    )


async def _serve(settings: Settings) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(create_app(settings))
    await runner.setup()
    port = _free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}"


async def _delete_prefix(redis_url: str, prefix: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        doomed = [k async for k in client.scan_iter(match=f"{prefix}*", count=1000)]
        if doomed:
            await client.delete(*doomed)
    finally:
        await client.aclose()


async def burst(
    urls: dict[str, str], redis_url: str, *, pool: int, submits: int, concurrency: int
) -> dict[str, Any]:
    settings = _settings(urls, redis_url, redis_max_connections=pool)
    before = _fds()
    runner, base = await _serve(settings)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    gate = asyncio.Semaphore(concurrency)
    started = time.perf_counter()
    async with aiohttp.ClientSession(base) as session:

        async def submit(i: int) -> None:
            async with gate:
                t0 = time.perf_counter()
                async with session.post(
                    "/api/query", json={"query": f"{QUESTION} #{i}", "mode": "async"}
                ) as response:
                    await response.read()
                    statuses[response.status] = statuses.get(response.status, 0) + 1
                latencies.append(time.perf_counter() - t0)

        await asyncio.wait_for(asyncio.gather(*(submit(i) for i in range(submits))), 300)
    elapsed = time.perf_counter() - started
    await runner.cleanup()
    await _delete_prefix(redis_url, settings.key_prefix)
    latencies.sort()
    return {
        "row": f"burst, pool {pool}",
        "wall_s": round(elapsed, 2),
        "submits_per_s": round(submits / elapsed),
        "p50_ms": round(statistics.median(latencies) * 1000, 1),
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 1),
        "5xx": sum(n for s, n in statuses.items() if s >= 500),
        "fds_before_after": f"{before}/{_fds()}",
    }


async def _time_to_503(base: str, calls: int = 5) -> list[float]:
    took: list[float] = []
    async with aiohttp.ClientSession(base) as session:
        for _ in range(calls):
            t0 = time.perf_counter()
            async with session.get("/api/workflow/nothing/status") as response:
                await response.read()
                assert response.status == 503, response.status
            took.append(time.perf_counter() - t0)
    return took


async def faults(urls: dict[str, str]) -> list[dict[str, Any]]:
    binary = shutil.which("redis-server")
    if binary is None:
        return [{"row": "redis faults", "skipped": "no redis-server on PATH"}]
    port = _free_port()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        process = await asyncio.create_subprocess_exec(
            binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", folder,
            "--save", "", "--appendonly", "no",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        url = f"redis://127.0.0.1:{port}/0"
        client = aioredis.Redis.from_url(url)
        for _ in range(200):
            try:
                if await client.ping():
                    break
            except (OSError, aioredis.ConnectionError):
                await asyncio.sleep(0.025)
        await client.aclose()
        runner, base = await _serve(_settings(urls, url))
        try:
            process.send_signal(signal.SIGSTOP)
            frozen = await _time_to_503(base)
            process.send_signal(signal.SIGCONT)
            process.send_signal(signal.SIGKILL)
            await process.wait()
            down = await _time_to_503(base)
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGCONT)
                process.send_signal(signal.SIGKILL)
                await process.wait()
            await runner.cleanup()
    for name, took in (("redis frozen (SIGSTOP)", frozen), ("redis down (refused)", down)):
        rows.append(
            {
                "row": f"{name}: status -> 503",
                "p50_ms": round(statistics.median(took) * 1000, 1),
                "max_ms": round(max(took) * 1000, 1),
            }
        )
    return rows


async def main(submits: int, concurrency: int) -> None:
    redis_url = os.environ.get("REDIS_URL")
    if not redis_url:
        raise SystemExit("set REDIS_URL (eval \"$(bash scripts/redis.sh)\")")
    urls, agent_runners = await _agents()
    try:
        async with aiohttp.ClientSession() as session:
            for url in urls.values():
                async with session.post(f"{url}/control", json={"fail_rate": 0.33}) as r:
                    r.raise_for_status()
        for pool in (8, 64):
            print(await burst(urls, redis_url, pool=pool, submits=submits, concurrency=concurrency))
        for row in await faults(urls):
            print(row)
    finally:
        for runner in agent_runners:
            await runner.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--submits", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=100)
    args = parser.parse_args()
    asyncio.run(main(args.submits, args.concurrency))
