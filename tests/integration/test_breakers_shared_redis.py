"""Two orchestrator instances on one real Redis share their breakers and ops actions."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from circuit.board_redis import RedisBreakerBoard
from circuit.config import BreakerConfig
from state.redis import RedisStateStore
from tests.integration.conftest import Agents, eventually

pytestmark = pytest.mark.redis

QUESTION = "number of orders by channel"


@pytest.fixture
async def prefix(redis_url: str) -> AsyncIterator[str]:
    """A key prefix of this test's own; its keys are deleted after (nothing is flushed)."""
    prefix = f"test:{uuid.uuid4().hex[:8]}:"
    yield prefix
    client = aioredis.Redis.from_url(redis_url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


async def replica(api: Any, redis_url: str, prefix: str, name: str, **settings: Any) -> Any:
    return await api(
        store=RedisStateStore.from_url(redis_url, prefix=prefix),
        breaker_board=RedisBreakerBoard.from_url(
            # A generous command bound: 1 s was exceeded on a loaded CI machine.
            redis_url, prefix=prefix, timeout_s=15.0, report_ttl_s=2.0
        ),
        replica_id=name,
        **settings,
    )


async def data_state(client: Any) -> dict[str, Any]:
    body = await (await client.get("/api/circuit-breakers/status")).json()
    data: dict[str, Any] = body["breakers"]["data"]
    return data


async def test_open_on_one_replica_is_obeyed_and_reported_by_the_other(
    api: Any, agents: Agents, redis_url: str, prefix: str
) -> None:
    """open on A: B refuses data calls (nothing reaches the agent) and reports it open."""
    a = await replica(api, redis_url, prefix, "a")
    b = await replica(api, redis_url, prefix, "b")
    assert (await b.post("/api/query", json={"query": QUESTION})).status == 200
    requests_before = (await agents["data"].stats())["requests"]

    opened = await a.post("/api/circuit-breakers/data/open")
    assert opened.status == 200
    assert (await opened.json())["forced"] == "open"

    async def b_reports_open() -> bool:
        return bool((await data_state(b))["state"] == "open")

    await eventually(b_reports_open)
    response = await b.post("/api/query", json={"query": QUESTION})
    assert response.status == 502
    assert (await response.json())["error"]["code"] == "agent_unavailable"
    assert (await agents["data"].stats())["requests"] == requests_before

    view = await data_state(b)
    assert view["forced"] == "open"
    assert set(view["replicas"]) == {"a", "b"}
    assert view["overall"]["state"] == "open"
    assert view["overall"]["forced"]["by"] == "a"
    # How soon B sees it is a timing claim: bench/breaker_soak.py measures it.


async def test_reset_on_one_replica_closes_it_on_the_other(
    api: Any, agents: Agents, redis_url: str, prefix: str
) -> None:
    a = await replica(api, redis_url, prefix, "a")
    b = await replica(api, redis_url, prefix, "b")
    await b.post("/api/circuit-breakers/data/open")

    async def a_open() -> bool:
        return bool((await data_state(a))["state"] == "open")

    await eventually(a_open)
    assert (await a.post("/api/circuit-breakers/data/reset")).status == 200

    async def b_closed() -> bool:
        return bool((await data_state(b))["state"] == "closed")

    await eventually(b_closed)
    assert (await b.post("/api/query", json={"query": QUESTION})).status == 200
    assert (await data_state(b))["overall"]["state"] == "closed"


async def test_disable_keeps_every_replica_calling_a_failing_agent_until_enabled(
    api: Any, agents: Agents, redis_url: str, prefix: str
) -> None:
    """disable (emergency: always closed) on A holds on B through failures; enable undoes it."""
    a = await replica(api, redis_url, prefix, "a")
    b = await replica(api, redis_url, prefix, "b")
    await a.post("/api/circuit-breakers/data/disable")

    async def b_disabled() -> bool:
        return bool((await data_state(b))["forced"] == "disabled")

    await eventually(b_disabled)
    await agents["data"].control(fail_rate=1.0)
    for _ in range(4):  # far past fail_max=3 consecutive failures
        await b.post("/api/query", json={"query": QUESTION})
    state = await data_state(b)
    assert (state["state"], state["rejections"]) == ("closed", 0)
    assert (await agents["data"].stats())["requests"] >= 8  # every attempt was sent

    await b.post("/api/circuit-breakers/data/enable")

    async def a_enabled() -> bool:
        return (await data_state(a))["forced"] is None

    await eventually(a_enabled)
    for _ in range(2):
        await a.post("/api/query", json={"query": QUESTION})
    assert (await data_state(a))["state"] == "open"  # the policy rules again


async def test_a_restarted_replica_picks_up_the_forced_state(
    api: Any, agents: Agents, redis_url: str, prefix: str
) -> None:
    """A replica that starts after an open refuses data calls from its first request."""
    a = await replica(api, redis_url, prefix, "a")
    await a.post("/api/circuit-breakers/data/open")
    await a.close()  # the replica goes away; the forced state stays in Redis
    restarted = await replica(api, redis_url, prefix, "a")
    response = await restarted.post("/api/query", json={"query": QUESTION})
    assert (await response.json())["error"]["code"] == "agent_unavailable"
    assert (await agents["data"].stats())["requests"] == 0
    state = await data_state(restarted)
    assert (state["state"], state["forced"]) == ("open", "open")


async def test_a_replica_that_stops_leaves_the_view(
    api: Any, redis_url: str, prefix: str
) -> None:
    a = await replica(api, redis_url, prefix, "a")
    b = await replica(api, redis_url, prefix, "b")

    async def both_seen() -> bool:
        body = await (await a.get("/api/circuit-breakers/status")).json()
        return bool(body["shared"]["replicas"] == ["a", "b"])

    await eventually(both_seen)
    await b.close()
    body = await (await a.get("/api/circuit-breakers/status")).json()
    assert body["shared"]["replicas"] == ["a"]


async def test_ops_action_with_redis_down_is_a_503_and_calls_still_work(
    api: Any, agents: Agents
) -> None:
    """An unreachable board: ops actions answer 503 and change nothing; queries still run."""
    dead = RedisBreakerBoard.from_url("redis://127.0.0.1:1/0", prefix="t:", timeout_s=1.0)
    client = await api(breaker_board=dead)
    response = await client.post("/api/circuit-breakers/data/open")
    assert response.status == 503
    assert response.headers["Retry-After"] == "1"
    assert (await response.json())["error"]["code"] == "breaker_board_unavailable"
    assert (await client.post("/api/query", json={"query": QUESTION})).status == 200
    status = await (await client.get("/api/circuit-breakers/status")).json()
    assert status["shared"]["available"] is False
    assert status["breakers"]["data"]["state"] == "closed"


async def test_a_follower_holds_open_while_the_replica_that_found_the_agent_dead_does(
    api: Any, agents: Agents, redis_url: str, prefix: str
) -> None:
    """share="follow": B opens when A's breaker opens on its own, sends nothing, closes with A."""
    follow = BreakerConfig(
        policy="consecutive", fail_max=3, reset_timeout_s=0.3, share="follow", follow_share=0.5
    )
    a = await replica(api, redis_url, prefix, "a", breaker=follow)
    b = await replica(api, redis_url, prefix, "b", breaker=follow)
    await agents["data"].control(fail_rate=1.0)
    for _ in range(2):  # two attempts each: A's data breaker opens on its own
        await a.post("/api/query", json={"query": QUESTION})
    assert (await data_state(a))["state"] == "open"

    async def b_follows() -> bool:
        state = await data_state(b)
        return bool(state["state"] == "open" and state["forced"] == "follow")

    await eventually(b_follows)
    sent = (await agents["data"].stats())["requests"]
    response = await b.post("/api/query", json={"query": QUESTION})
    assert (await response.json())["error"]["code"] == "agent_unavailable"
    assert (await agents["data"].stats())["requests"] == sent  # B did not probe it

    await agents["data"].control(fail_rate=0.0)

    async def a_probed_and_closed() -> bool:  # after its 0.3 s wait, A's probe succeeds
        await a.post("/api/query", json={"query": QUESTION})
        return bool((await data_state(a))["state"] == "closed")

    await eventually(a_probed_and_closed, interval_s=0.05)

    async def b_closed() -> bool:
        state = await data_state(b)
        return bool(state["state"] == "closed" and state["forced"] is None)

    await eventually(b_closed)
    assert (await b.post("/api/query", json={"query": QUESTION})).status == 200


async def test_reset_closes_a_breaker_another_replica_opened_on_its_own(
    api: Any, agents: Agents, redis_url: str, prefix: str
) -> None:
    a = await replica(api, redis_url, prefix, "a")
    b = await replica(api, redis_url, prefix, "b")
    await agents["data"].control(fail_rate=1.0)
    for _ in range(2):
        await b.post("/api/query", json={"query": QUESTION})
    assert (await data_state(b))["state"] == "open"
    await agents["data"].control(fail_rate=0.0)
    assert (await a.post("/api/circuit-breakers/data/reset")).status == 200

    async def b_closed() -> bool:
        return bool((await data_state(b))["state"] == "closed")

    await eventually(b_closed)
    assert (await b.post("/api/query", json={"query": QUESTION})).status == 200


async def test_ops_actions_reach_the_other_replica_by_pubsub_not_the_poll(
    api: Any, redis_url: str, prefix: str
) -> None:
    """With a one-minute poll, open and reset still reach B at once (the board wakes it)."""
    a = await replica(api, redis_url, prefix, "a", breaker_sync_s=60.0)
    b = await replica(api, redis_url, prefix, "b", breaker_sync_s=60.0)
    for action, want in (("open", "open"), ("reset", "closed"), ("open", "open")):
        assert (await a.post(f"/api/circuit-breakers/data/{action}")).status == 200

        async def b_obeys() -> bool:
            return bool((await data_state(b))["state"] == want)  # noqa: B023

        await eventually(b_obeys)  # within 30 s: before B's first poll (60 s)
