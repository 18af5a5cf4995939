"""A burst of submits on a small Redis pool, agents failing a third of their calls.

Bounded: 2,000 submits, 100 at a time, to 127.0.0.1 only; the test's own
timeout caps its time. The Redis pool is deliberately small (8 connections),
so the burst must wait for connections rather than fail.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from orchestrator.access.config import AccessConfig
from orchestrator.access.principal import UNLIMITED
from orchestrator.api.services import SERVICES
from orchestrator.app import create_app
from tests.integration.conftest import Agents, eventually, settings_for

pytestmark = pytest.mark.redis

SUBMITS = 2_000
CONCURRENCY = 100


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.timeout(150)
async def test_a_burst_of_submits_on_a_small_pool_never_answers_5xx_and_leaks_nothing(
    agents: Agents, redis_url: str, redis_prefix: str
) -> None:
    """2,000 async submits at 100 concurrent: every one 202, every workflow terminal,
    and once the replica stops its descriptors are back where they started."""
    for name, agent in agents.items():
        await agent.control(fail_rate=0.33, seed=len(name))
    settings = settings_for(
        agents,
        redis_url=redis_url,
        key_prefix=redis_prefix,
        redis_max_connections=8,
        redis_pool_timeout_s=5.0,
        # The burst is about the state store: no per-key or per-tenant limits in the way.
        access=AccessConfig(default_limits=UNLIMITED, max_async_workflows=0),
    )
    before = open_descriptors()
    app = create_app(settings)
    client: TestClient[Any, Any] = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    answers: Counter[int] = Counter()
    ids: list[str] = []
    gate = asyncio.Semaphore(CONCURRENCY)

    async def submit(i: int) -> None:
        async with gate:
            response = await client.post(
                "/api/query", json={"query": f"total revenue by channel #{i}", "mode": "async"}
            )
            answers[response.status] += 1
            if response.status == 202:
                ids.append((await response.json())["workflow_id"])
            else:
                await response.read()

    try:
        await asyncio.gather(*(submit(i) for i in range(SUBMITS)))
        assert answers == Counter({202: SUBMITS})

        orchestrator = app[SERVICES].orchestrator

        async def all_finished() -> bool:
            return not orchestrator.running

        await eventually(all_finished, within_s=60, interval_s=0.05)
        statuses: Counter[str] = Counter()
        for chunk in range(0, len(ids), CONCURRENCY):
            bodies = await asyncio.gather(
                *(_status(client, wid) for wid in ids[chunk : chunk + CONCURRENCY])
            )
            statuses.update(body["status"] for body in bodies)
        assert sum(statuses.values()) == SUBMITS
        assert set(statuses) <= {"completed", "degraded", "failed"}, statuses
        assert statuses["failed"] < SUBMITS  # the failures were a third, not everything
    finally:
        await client.close()
    # Everything the replica opened (Redis pool, pub/sub, agent sessions, sockets) is closed.
    assert open_descriptors() <= before + 2


async def _status(client: TestClient[Any, Any], workflow_id: str) -> dict[str, Any]:
    response = await client.get(f"/api/workflow/{workflow_id}/status")
    assert response.status == 200
    body: dict[str, Any] = await response.json()
    return body
