"""What access control costs a request: the open mode against keys, many keys, rate limits.

    python -m bench.access [--requests 4000] [--concurrency 20]

Runs the API in-process (memory state store, no agents needed) on 127.0.0.1 and sends
GET /api/workflow/metrics (a small handler, so the middleware's share shows) with
aiohttp's client. Rows:

- open: no keys configured (the loopback default);
- 1 key / 1000 keys: a key from the TOML file (every hash compared, in constant time);
- + memory rate limit: the same key under a token bucket in memory;
- + redis rate limit: the bucket in Redis (one Lua script per request), when REDIS_URL is set.

`x open` is the row's time per request relative to the open mode. Bounded by --requests
per row; the best of --repeat interleaved runs is shown.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import statistics
import sys
import time
import uuid

import aiohttp
import structlog
from aiohttp import web

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from orchestrator.access.config import AccessConfig
from orchestrator.access.keys import KeyRecord, generate_key, hash_key
from orchestrator.access.principal import UNLIMITED, Limits, Role
from orchestrator.app import create_app
from orchestrator.settings import Settings

KEY = generate_key()
# Never refuses within a run: the bench measures the bucket's cost, not its refusals.
BUCKET = Limits(requests_per_s=1_000_000, burst=1_000_000, max_in_flight=0)


def _config(keys: int, limits: Limits) -> AccessConfig:
    records = [
        KeyRecord(
            key_id=f"k{i}",
            key_hash=hash_key(KEY if i == 0 else generate_key()),
            tenant="bench",
            roles=frozenset({Role.ADMIN}),
            limits=limits,
        )
        for i in range(keys)
    ]
    return AccessConfig(keys=tuple(records), default_limits=limits)


async def _run(settings: Settings, requests: int, concurrency: int) -> tuple[float, float]:
    runner = web.AppRunner(create_app(settings))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url = f"http://127.0.0.1:{port}/api/workflow/metrics"
    headers = {"Authorization": f"Bearer {KEY}"} if settings.access.enabled else {}
    latencies: list[float] = []
    try:
        async with aiohttp.ClientSession() as session:
            left = requests

            async def worker() -> None:
                nonlocal left
                while left > 0:
                    left -= 1
                    t0 = time.perf_counter()
                    async with session.get(url, headers=headers) as response:
                        await response.read()
                        assert response.status == 200, response.status
                    latencies.append(time.perf_counter() - t0)

            start = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            elapsed = time.perf_counter() - start
    finally:
        await runner.cleanup()
    return requests / elapsed, statistics.median(latencies) * 1000


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    logging.disable(logging.CRITICAL)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    base = Settings()
    rows = {
        "open (no keys)": base,
        "1 key": dataclasses.replace(base, access=_config(1, UNLIMITED)),
        "1000 keys": dataclasses.replace(base, access=_config(1000, UNLIMITED)),
        "1 key + memory rate limit": dataclasses.replace(base, access=_config(1, BUCKET)),
    }
    redis_url = os.environ.get("REDIS_URL")
    if redis_url:
        rows["1 key + redis rate limit"] = dataclasses.replace(
            base,
            access=_config(1, BUCKET),
            redis_url=redis_url,
            key_prefix=f"bench-access-{uuid.uuid4().hex[:8]}:",
        )
    best: dict[str, tuple[float, float]] = {}
    for _ in range(args.repeat):
        for name, settings in rows.items():
            rps, p50 = await _run(settings, args.requests, args.concurrency)
            if name not in best or rps > best[name][0]:
                best[name] = (rps, p50)
    print(
        f"GET /api/workflow/metrics, {args.requests} requests per run, concurrency "
        f"{args.concurrency}, best of {args.repeat}"
    )
    print(f"{'row':30} {'req/s':>8} {'p50 ms':>8} {'x open':>8}")
    open_rps = best["open (no keys)"][0]
    for name, (rps, p50) in best.items():
        print(f"{name:30} {rps:8.0f} {p50:8.2f} {open_rps / rps:8.2f}")


if __name__ == "__main__":
    asyncio.run(main())
