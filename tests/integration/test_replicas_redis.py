"""Two orchestrator instances on one real Redis: shared status, cancel from either, TTL."""

from __future__ import annotations

from typing import Any

import pytest

from state.redis import RedisStateStore
from tests.integration.conftest import Agents, eventually

pytestmark = pytest.mark.redis

QUESTION = "number of orders by channel"


@pytest.fixture
def prefix(redis_prefix: str) -> str:
    return redis_prefix  # this test's own keys, deleted after it (tests/conftest.py)


async def test_status_and_cancel_work_from_the_other_replica(
    api: Any, agents: Agents, redis_url: str, prefix: str
) -> None:
    """A workflow started on replica A is visible on B, and a cancel sent to B stops it on A."""
    await agents["data"].control(delay_ms=60_000)
    a = await api(store=RedisStateStore.from_url(redis_url, prefix=prefix), replica_id="a")
    b = await api(store=RedisStateStore.from_url(redis_url, prefix=prefix), replica_id="b")
    accepted = await (await a.post("/api/query", json={"query": QUESTION, "mode": "async"})).json()
    workflow_id = accepted["workflow_id"]

    async def data_in_flight() -> bool:
        return bool((await agents["data"].stats())["in_flight"] == 1)

    await eventually(data_in_flight)

    # The agent can see the request before A's write of the transition lands (writes are
    # behind the run, never in front of it), so B waits for the document to show it.
    async def b_sees_data_running() -> bool:
        seen = await (await b.get(f"/api/workflow/{workflow_id}/status")).json()
        return bool(seen["steps"]["data"]["status"] == "running")

    await eventually(b_sees_data_running)
    seen_by_b = await (await b.get(f"/api/workflow/{workflow_id}/status")).json()
    assert seen_by_b["status"] == "running"
    assert seen_by_b["owner"] == "a"

    response = await b.post(f"/api/workflow/{workflow_id}/cancel")
    assert response.status == 200
    body = await response.json()
    assert body["status"] == "cancelled"
    assert body["steps"]["nlp"]["status"] == "completed"

    async def agent_saw_abort() -> bool:
        return bool((await agents["data"].stats())["cancelled"] == 1)

    await eventually(agent_saw_abort)
    assert (await agents["viz"].stats())["requests"] == 0
    on_a = await (await a.get(f"/api/workflow/{workflow_id}/status")).json()
    assert on_a["status"] == "cancelled"


async def test_finished_workflow_readable_from_both_then_gone_after_ttl(
    api: Any, redis_url: str, prefix: str
) -> None:
    """State lives in Redis with the configured TTL; after it, both replicas answer 404."""
    a = await api(store=RedisStateStore.from_url(redis_url, prefix=prefix, ttl_s=1))
    b = await api(store=RedisStateStore.from_url(redis_url, prefix=prefix, ttl_s=1))
    done = await (await a.post("/api/query", json={"query": QUESTION})).json()
    url = f"/api/workflow/{done['workflow_id']}/status"
    assert (await b.get(url)).status == 200

    async def expired() -> bool:
        return bool((await a.get(url)).status == 404 and (await b.get(url)).status == 404)

    await eventually(expired, interval_s=0.05)


async def test_readiness_reports_redis(api: Any, redis_url: str, prefix: str) -> None:
    client = await api(store=RedisStateStore.from_url(redis_url, prefix=prefix))
    ready = await client.get("/readyz")
    assert ready.status == 200
    assert (await ready.json())["state_store"] == "redis"


async def test_the_ops_list_shows_the_deployment_from_any_replica(
    api: Any, agents: Agents, redis_url: str, prefix: str
) -> None:
    """The ops page's workflow lists come from history: replica B lists what A runs and ran."""
    await agents["data"].control(delay_ms=60_000)
    a = await api(store=RedisStateStore.from_url(redis_url, prefix=prefix), replica_id="a")
    b = await api(store=RedisStateStore.from_url(redis_url, prefix=prefix), replica_id="b")
    accepted = await (await a.post("/api/query", json={"query": QUESTION, "mode": "async"})).json()
    workflow_id = accepted["workflow_id"]
    listing = await (await b.get("/api/ops/workflows")).json()
    assert listing["source"] == "history"
    assert [w["workflow_id"] for w in listing["running"]] == [workflow_id]
    assert listing["recent"] == []

    assert (await a.post(f"/api/workflow/{workflow_id}/cancel")).status == 200
    listing = await (await b.get("/api/ops/workflows")).json()
    assert listing["running"] == []
    (recent,) = listing["recent"]
    assert (recent["workflow_id"], recent["status"]) == (workflow_id, "cancelled")
    assert recent["duration_ms"] is not None
