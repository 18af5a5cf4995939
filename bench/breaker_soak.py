"""Soak: the chain against agents that fail a third of their calls, per breaker policy.

Every agent misbehaves on a third of its calls at random, in equal parts: an HTTP
500, a hang (longer than the agent's read timeout), or a slow answer that still
succeeds. Rows, each `--workflows` chain workflows at `--concurrency`:

- breakers disabled (the ops `disable` action on every agent): the baseline
- consecutive: the original policy (nlp 5 / 60 s, data 3 / 120 s, viz 5 / 60 s)
- rate: the default sliding-window policy (same base open waits)

Each prints the answered share (completed + degraded; target >= 90 % with the
default policy) and the breakers' trips. Then, per policy, the data agent dies
(every call a 503) under the same traffic, and the time until its breaker opens
(and the data calls spent meanwhile) is printed. With REDIS_URL set, two
service instances share one Redis and the time an ops `open` sent to one takes to
be obeyed by the other is measured too.

    .venv/bin/python -m bench.breaker_soak [--workflows 2000] [--concurrency 100]
    REDIS_URL=redis://127.0.0.1:6390/14 .venv/bin/python -m bench.breaker_soak

Everything runs in this process on 127.0.0.1 (agents on OS-assigned ports); each
row is bounded by `--row-timeout-s`.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import random
import statistics
import time
import uuid
from collections import Counter
from typing import Any

import orjson
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from agents.registry import AgentRegistry, AgentTimeouts
from bench.chain import _ANSWERS
from circuit.breaker import BreakerState
from orchestrator.api.services import SERVICES
from orchestrator.app import create_app
from orchestrator.logs import configure_logging
from orchestrator.settings import Settings, default_registry

QUESTION = "average revenue by region in 2024"
READ_TIMEOUT_S = 0.5  # an agent's read timeout here; a hang outlasts it
HANG_S = 5.0
SLOW_S = 0.25


class FlakyAgents:
    """One server for /nlp, /data and /viz; each call misbehaves with `bad_share`."""

    def __init__(self, *, bad_share: float, seed: int) -> None:
        self.bad_share = bad_share
        self.rng = random.Random(seed)
        self.dead: set[str] = set()
        self.calls: Counter[str] = Counter()
        self.outcomes: Counter[str] = Counter()

    async def handle(self, request: web.Request) -> web.Response:
        agent = request.match_info["agent"]
        await request.read()
        self.calls[agent] += 1
        if agent in self.dead:
            self.outcomes["dead"] += 1
            return web.Response(status=503)
        if self.rng.random() < self.bad_share:
            kind = self.rng.choice(("5xx", "hang", "slow"))
            self.outcomes[kind] += 1
            if kind == "5xx":
                return web.Response(status=500)
            await asyncio.sleep(HANG_S if kind == "hang" else SLOW_S)
        else:
            self.outcomes["ok"] += 1
        return web.Response(body=orjson.dumps(_ANSWERS[agent]), content_type="application/json")


def _registry(port: int, policy: str) -> AgentRegistry:
    specs = []
    for spec in default_registry().values():
        breaker = dataclasses.replace(spec.breaker, policy=policy)  # type: ignore[arg-type]
        specs.append(
            dataclasses.replace(
                spec,
                url=f"http://127.0.0.1:{port}/{spec.name}",
                timeouts=AgentTimeouts(connect=1.0, read=READ_TIMEOUT_S),
                breaker=breaker,
                concurrency=256,
            )
        )
    return AgentRegistry(specs)


@dataclasses.dataclass
class Result:
    name: str
    statuses: Counter[str]
    seconds: float
    trips: dict[str, int]
    unfinished: int

    @property
    def answered(self) -> float:
        done = sum(self.statuses.values())
        ok = self.statuses["completed"] + self.statuses["degraded"]
        return ok / done if done else 0.0


async def _service(port: int, policy: str, **settings: Any) -> TestClient[Any, Any]:
    app = create_app(Settings(agents=_registry(port, policy), **settings))
    client: TestClient[Any, Any] = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    return client


async def _one(client: TestClient[Any, Any], statuses: Counter[str]) -> None:
    response = await client.post("/api/query", json={"query": QUESTION})
    body = await response.json()
    statuses[str(body.get("status", f"http_{response.status}"))] += 1


async def _traffic(
    client: TestClient[Any, Any], count: int, concurrency: int, statuses: Counter[str],
    stop: asyncio.Event | None = None,
) -> int:  # fmt: skip
    """Send `count` workflows, `concurrency` at a time (until `stop`); return those sent."""
    sent = 0

    async def worker() -> None:
        nonlocal sent
        while sent < count and not (stop is not None and stop.is_set()):
            sent += 1
            await _one(client, statuses)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return sent


async def soak_row(
    agents: FlakyAgents, port: int, name: str, policy: str, args: argparse.Namespace
) -> Result:
    client = await _service(port, policy)
    try:
        if name == "disabled":
            for agent in ("nlp", "data", "viz"):
                assert (await client.post(f"/api/circuit-breakers/{agent}/disable")).status == 200
        statuses: Counter[str] = Counter()
        started = time.monotonic()
        stop = asyncio.Event()
        task = asyncio.create_task(
            _traffic(client, args.workflows, args.concurrency, statuses, stop)
        )
        try:
            await asyncio.wait_for(asyncio.shield(task), args.row_timeout_s)
        except TimeoutError:
            stop.set()  # bounded: let the in-flight ones finish, start no more
            await task
        seconds = time.monotonic() - started
        breakers = client.app[SERVICES].client.breakers()
        trips = {agent: b.snapshot().trips for agent, b in breakers.items()}
        return Result(name, statuses, seconds, trips, args.workflows - sum(statuses.values()))
    finally:
        await client.close()


async def _until(predicate: Any, limit_s: float, step_s: float = 0.002) -> float:
    """Poll `predicate` (a breaker's state changes on another task) up to `limit_s`."""
    started = time.monotonic()
    for _ in range(int(limit_s / step_s)):
        if predicate():
            break
        await asyncio.sleep(step_s)
    return time.monotonic() - started


async def cut_off(
    agents: FlakyAgents, port: int, policy: str, args: argparse.Namespace
) -> tuple[float | None, int, bool]:
    """Seconds and data calls from the data agent's death until its breaker opens.

    The third value says the breaker was already open from the flaky traffic alone
    when the agent died, and was reset by ops first (else nothing could be measured).
    """
    client = await _service(port, policy)
    breaker = client.app[SERVICES].client.breaker("data")
    statuses: Counter[str] = Counter()
    stop = asyncio.Event()
    traffic = asyncio.create_task(_traffic(client, 10**9, args.concurrency, statuses, stop))
    try:
        await asyncio.sleep(args.warmup_s)  # flaky traffic first: the window holds history
        was_open = breaker.state is not BreakerState.CLOSED
        if was_open:
            breaker.reset()
        calls_before = agents.calls["data"]
        agents.dead.add("data")
        seconds = await _until(
            lambda: breaker.state is not BreakerState.CLOSED, args.row_timeout_s
        )
        calls = agents.calls["data"] - calls_before
        if breaker.state is BreakerState.CLOSED:
            return None, calls, was_open
        return seconds, calls, was_open
    finally:
        agents.dead.discard("data")
        stop.set()
        await traffic
        await client.close()


async def ops_propagation(port: int, redis_url: str, rounds: int) -> list[float]:
    """Two instances on one Redis: seconds from `open` on A until B's breaker obeys it."""
    from circuit.board_redis import RedisBreakerBoard

    prefix = f"bench:{uuid.uuid4().hex[:6]}:"
    replicas = []
    for name in ("a", "b"):
        app = create_app(
            Settings(agents=_registry(port, "rate"), key_prefix=prefix),
            breaker_board=RedisBreakerBoard.from_url(redis_url, prefix=prefix, timeout_s=1.0),
            replica_id=name,
        )
        client: TestClient[Any, Any] = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        replicas.append(client)
    a, b = replicas
    b_breaker = b.app[SERVICES].client.breaker("data")
    delays = []
    try:
        for i in range(rounds):
            action, want = ("open", "open") if i % 2 == 0 else ("reset", "closed")
            sent = time.monotonic()
            assert (await a.post(f"/api/circuit-breakers/data/{action}")).status == 200
            await _until(lambda: b_breaker.state.value == want, 5.0)  # noqa: B023
            delays.append(time.monotonic() - sent)
        await a.post("/api/circuit-breakers/data/reset")
    finally:
        for client in replicas:
            await client.close()
        board = RedisBreakerBoard.from_url(redis_url, prefix=prefix, timeout_s=1.0)
        await board.set_forced("data", None, by="bench")
        await board.close()
    return delays


async def main(args: argparse.Namespace) -> None:
    agents = FlakyAgents(bad_share=args.bad_share, seed=args.seed)
    app = web.Application()
    app.router.add_post("/{agent}/process", agents.handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(
        f"{args.workflows} chain workflows per row, {args.concurrency} at a time; every agent "
        f"misbehaves on {args.bad_share:.0%} of calls (5xx / hang > {READ_TIMEOUT_S}s read "
        f"timeout / {SLOW_S}s slow answer, in equal parts)"
    )
    print(f"{'row':<10} {'answered':>9} {'completed':>10} {'degraded':>9} {'failed':>7} "
          f"{'unsent':>7} {'seconds':>8}  trips (nlp/data/viz)")  # fmt: skip
    results = []
    try:
        rows = (("disabled", "rate"), ("consecutive", "consecutive"), ("rate", "rate"))
        for name, policy in rows:
            result = await soak_row(agents, port, name, policy, args)
            results.append(result)
            s = result.statuses
            trips = "/".join(str(result.trips[a]) for a in ("nlp", "data", "viz"))
            print(
                f"{name:<10} {result.answered:>9.1%} {s['completed']:>10} {s['degraded']:>9} "
                f"{s['failed']:>7} {result.unfinished:>7} {result.seconds:>8.1f}  {trips}"
            )
        for policy in ("consecutive", "rate"):
            seconds, calls, was_open = await cut_off(agents, port, policy, args)
            when = "not cut off" if seconds is None else f"cut off after {seconds:.2f} s"
            note = " (already open from the flaky traffic; reset first)" if was_open else ""
            print(
                f"dead data agent, {policy:<11}: {when}, {calls} data calls sent meanwhile{note}"
            )
        redis_url = os.environ.get("REDIS_URL")
        if redis_url:
            delays = await ops_propagation(port, redis_url, args.ops_rounds)
            print(
                f"ops open/reset on replica A obeyed by replica B (Redis): p50 "
                f"{statistics.median(delays) * 1000:.0f} ms, max {max(delays) * 1000:.0f} ms "
                f"over {len(delays)} actions"
            )
        rate = next(r for r in results if r.name == "rate")
        verdict = "met" if rate.answered >= 0.9 else "NOT met"
        print(f"answered with the default (rate) policy: {rate.answered:.1%} "
              f"(target >= 90 %: {verdict})")  # fmt: skip
    finally:
        await runner.cleanup()


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workflows", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--bad-share", type=float, default=1 / 3)
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--warmup-s", type=float, default=3.0)
    parser.add_argument("--ops-rounds", type=int, default=20)
    parser.add_argument("--row-timeout-s", type=float, default=120.0)
    return parser.parse_args()


if __name__ == "__main__":
    configure_logging("error")
    logging.disable(logging.WARNING)
    asyncio.run(main(_args()))
