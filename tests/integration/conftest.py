"""Integration fixtures: real reference agents on 127.0.0.1 ports, the real API in-process."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Protocol

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from agents.reference import start_agent
from agents.registry import AgentRegistry
from circuit.config import BreakerConfig, RetryConfig
from orchestrator.app import create_app
from orchestrator.settings import Settings, default_registry
from state.store import StateStore
from tests.integration.gate import GatedAgent, gated

# Fast retries so failure paths finish quickly; the policy itself is unit-tested in tests/circuit.
FAST_RETRY = RetryConfig(max_attempts=2, base_delay_s=0.001, max_delay_s=0.005)


@dataclasses.dataclass
class RunningAgent:
    name: str
    port: int
    runner: web.AppRunner

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def control(self, **options: Any) -> None:
        async with httpx.AsyncClient() as client:
            response = await client.post(f"{self.url}/control", json=options)
            response.raise_for_status()

    async def stats(self) -> dict[str, Any]:
        async with httpx.AsyncClient() as client:
            response = await client.get(f"{self.url}/stats")
            response.raise_for_status()
            stats: dict[str, Any] = response.json()
            return stats


Agents = dict[str, RunningAgent]


class Reachable(Protocol):
    """An agent the API can be pointed at: a RunningAgent, or a GatedAgent before one."""

    @property
    def url(self) -> str: ...


@pytest.fixture
async def agents() -> AsyncIterator[Agents]:
    running: Agents = {}
    try:
        for name in ("nlp", "data", "viz"):
            runner, port = await start_agent(name, host="127.0.0.1", port=0)
            running[name] = RunningAgent(name, port, runner)
        yield running
    finally:
        for agent in running.values():
            await agent.runner.cleanup()


REDIS_TIMEOUT_S = 10.0


def settings_for(
    agents: Mapping[str, Reachable], *, breaker: BreakerConfig | None = None, **overrides: Any
) -> Settings:
    """Settings for the running agents; every agent gets `breaker` (default: 3 in a row)."""
    if breaker is None:
        breaker = BreakerConfig(policy="consecutive", fail_max=3, reset_timeout_s=60.0)
    specs = [
        dataclasses.replace(spec, url=agents[spec.name].url, retry=FAST_RETRY, breaker=breaker)
        for spec in default_registry().values()
    ]
    # Redis bounded generously unless a test is about the bounds: the 1 s defaults were
    # exceeded by a shared test Redis on a loaded machine (a burst of 503s in test_load).
    overrides.setdefault("redis_connect_timeout_s", REDIS_TIMEOUT_S)
    overrides.setdefault("redis_timeout_s", REDIS_TIMEOUT_S)
    return Settings(agents=AgentRegistry(specs), **overrides)


ClientFactory = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]


@pytest.fixture
async def data_gate(agents: Agents) -> AsyncIterator[GatedAgent]:
    """The data agent behind a gate: its calls wait until the test opens it, so a test
    sees a workflow mid-run by an event rather than by racing a delay."""
    async for gate in gated(agents["data"].url):
        yield gate


@pytest.fixture
async def api(
    agents: Agents, aiohttp_client: ClientFactory
) -> AsyncIterator[Callable[..., Awaitable[TestClient[web.Request, web.Application]]]]:
    """Start the API against the running agents: `client = await api(store=..., **settings)`.

    `agents=` points it elsewhere (e.g. `{**agents, "data": data_gate}`). Stores handed in
    are closed at the end (the app only closes what it opened).
    """
    stores: list[StateStore] = []

    async def make(**kwargs: Any) -> TestClient[web.Request, web.Application]:
        store = kwargs.pop("store", None)
        if store is not None:
            stores.append(store)
        replica_id = kwargs.pop("replica_id", None)
        board = kwargs.pop("breaker_board", None)
        provider = kwargs.pop("tracer_provider", None)
        routed = kwargs.pop("agents", agents)
        app = create_app(
            settings_for(routed, **kwargs),
            store=store,
            replica_id=replica_id,
            breaker_board=board,
            tracer_provider=provider,
        )
        return await aiohttp_client(app)

    yield make
    for store in stores:
        await store.close()


# How long `eventually` waits by default. Generous on purpose: it only turns "never"
# into a failure. A bound near the usual time (a count of 20 ms polls, 2-5 s in all)
# failed on a CI machine loaded by parallel suites; how soon things happen is bench/'s.
EVENTUALLY_S = 30.0


async def eventually(
    probe: Callable[[], Awaitable[bool]],
    *,
    within_s: float = EVENTUALLY_S,
    interval_s: float = 0.02,
) -> None:
    """Await a condition another process or task brings about: `probe()` every
    `interval_s` until true, failing after `within_s` (bounded; no fixed sleeps)."""
    deadline = time.monotonic() + within_s
    while not await probe():
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not reached within {within_s} s")
        await asyncio.sleep(interval_s)
