"""Rate limits and quotas: per key (requests/s, workflows in flight), per tenant (async held)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import redis.asyncio as aioredis

from orchestrator.access.config import TenantPolicy
from orchestrator.access.principal import UNLIMITED, Limits
from state.memory import MemoryStateStore
from tests.integration.conftest import Agents, eventually
from tests.integration.gate import GatedAgent
from tests.integration.principals import access_config, auth

# Refills one token in 1000 s: nothing comes back within a test.
_THREE_THEN_STOP = Limits(requests_per_s=0.001, burst=3, max_in_flight=0)


async def _drop_prefix(url: str, prefix: str) -> None:
    # Tests never flush a Redis another run may share: only this test's keys go.
    client = aioredis.Redis.from_url(url)
    try:
        async for key in client.scan_iter(match=prefix + "*"):
            await client.delete(key)
    finally:
        await client.aclose()


async def test_over_the_rate_is_429_with_retry_after(api: Any) -> None:
    client = await api(access=access_config(limits=_THREE_THEN_STOP))
    for _ in range(3):
        assert (await client.get("/api/workflows/schema", headers=auth("user_a"))).status == 200
    response = await client.get("/api/workflows/schema", headers=auth("user_a"))
    assert response.status == 429
    assert int(response.headers["Retry-After"]) >= 1
    assert (await response.json())["error"]["code"] == "rate_limited"
    # Per key: another key still has its own bucket.
    assert (await client.get("/api/workflows/schema", headers=auth("user_b"))).status == 200


@pytest.mark.redis
async def test_rate_limit_holds_across_two_instances_on_one_redis(api: Any, redis_url: str) -> None:
    """Two replicas share one bucket per key: 3 requests in all, wherever they land."""
    prefix = f"test-rl-{uuid.uuid4().hex[:8]}:"
    try:
        config = access_config(limits=_THREE_THEN_STOP)
        one = await api(access=config, redis_url=redis_url, key_prefix=prefix)
        two = await api(access=config, redis_url=redis_url, key_prefix=prefix)
        statuses = []
        for client in (one, two, one, two, one):
            response = await client.get("/api/workflows/schema", headers=auth("user_a"))
            statuses.append(response.status)
        assert statuses == [200, 200, 200, 429, 429]
    finally:
        await _drop_prefix(redis_url, prefix)


async def test_workflows_in_flight_per_key(
    api: Any, agents: Agents, data_gate: GatedAgent
) -> None:
    """Over max_in_flight: 429 too_many_workflows; the slot frees when the workflow ends."""
    limits = Limits(requests_per_s=0, burst=0, max_in_flight=1)
    client = await api(
        access=access_config(limits=limits), agents={**agents, "data": data_gate}
    )
    body = {"query": "revenue by region", "mode": "async"}
    first = await client.post("/api/query", json=body, headers=auth("user_a"))
    assert first.status == 202
    await data_gate.arrived.wait()  # the first is running (held at data) and holds the slot
    second = await client.post("/api/query", json=body, headers=auth("user_a"))
    assert second.status == 429
    assert (await second.json())["error"]["code"] == "too_many_workflows"
    assert "Retry-After" in second.headers
    data_gate.opened.set()

    async def admitted_again() -> bool:
        again = await client.post("/api/query", json=body, headers=auth("user_a"))
        return bool(again.status == 202)

    await eventually(admitted_again)


async def test_tenant_cap_on_async_workflows_held_in_state(api: Any) -> None:
    config = access_config(tenants={"acme": TenantPolicy(max_async_workflows=1)})
    client = await api(access=config)
    body = {"query": "revenue by region", "mode": "async"}
    assert (await client.post("/api/query", json=body, headers=auth("user_a"))).status == 202
    refused = await client.post("/api/query", json=body, headers=auth("user_a"))
    assert refused.status == 429
    error = (await refused.json())["error"]
    assert error["code"] == "tenant_quota_exceeded"
    assert error["details"] == {"limit": 1, "tenant": "acme"}
    # Sync queries are not held in state for later: they still run.
    sync = await client.post("/api/query", json={"query": "x y"}, headers=auth("user_a"))
    assert sync.status == 200
    # Another tenant has its own cap (the default: unlimited here).
    assert (await client.post("/api/query", json=body, headers=auth("user_b"))).status == 202


@pytest.mark.redis
async def test_tenant_cap_is_shared_through_redis(api: Any, redis_url: str) -> None:
    prefix = f"test-if-{uuid.uuid4().hex[:8]}:"
    try:
        limits = Limits(requests_per_s=0, burst=0, max_in_flight=0)
        config = access_config(limits=limits, tenants={"acme": TenantPolicy(max_async_workflows=1)})
        one = await api(access=config, redis_url=redis_url, key_prefix=prefix)
        two = await api(access=config, redis_url=redis_url, key_prefix=prefix)
        body = {"query": "revenue by region", "mode": "async"}
        assert (await one.post("/api/query", json=body, headers=auth("user_a"))).status == 202
        refused = await two.post("/api/query", json=body, headers=auth("user_a"))
        assert refused.status == 429
    finally:
        await _drop_prefix(redis_url, prefix)


async def test_agents_restricted_per_tenant(api: Any) -> None:
    """A tenant limited to some agents cannot run the chain or a DAG calling the others."""
    config = access_config(
        limits=UNLIMITED, tenants={"acme": TenantPolicy(agents=frozenset({"nlp"}))}
    )
    client = await api(access=config)
    chain = await client.post("/api/query", json={"query": "x"}, headers=auth("user_a"))
    assert chain.status == 403
    assert (await chain.json())["error"]["details"] == {"agents": ["data", "viz"]}
    dag = {
        "name": "w",
        "nodes": [{"id": "d", "kind": "agent", "agent": "data", "input": {"intent": {}}}],
    }
    refused = await client.post(
        "/api/workflows/validate", json={"workflow": dag}, headers=auth("user_a")
    )
    assert refused.status == 422
    assert "data" in (await refused.json())["error"]["message"]
    dag["nodes"][0]["agent"] = "nlp"  # type: ignore[index]
    ok = await client.post(
        "/api/workflows/validate", json={"workflow": dag}, headers=auth("user_a")
    )
    assert ok.status == 200
    # Tenant B has no restriction.
    other = await client.post("/api/query", json={"query": "x"}, headers=auth("user_b"))
    assert other.status == 200


async def test_redis_down_for_limits_is_503_with_retry_after(api: Any) -> None:
    """Limits that cannot be read answer 503 state_store_unavailable, never a 500 or a hang."""
    config = access_config(limits=_THREE_THEN_STOP)
    client = await api(access=config, redis_url="redis://127.0.0.1:1/0", store=MemoryStateStore())
    response = await client.get("/api/workflows/schema", headers=auth("user_a"))
    assert response.status == 503
    assert response.headers["Retry-After"] == "1"
    assert (await response.json())["error"]["code"] == "state_store_unavailable"
