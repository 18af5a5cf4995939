"""The `Quotas` contract (state/ratelimit.py), run against memory and a real Redis."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from state.connect import connect
from state.ratelimit import MemoryQuotas, Quotas
from state.ratelimit_redis import RedisQuotas
from state.store import StateStoreError
from tests.fakes import FakeClock
from tests.integration.conftest import eventually


@pytest.fixture(
    params=[
        "memory",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("cluster", marks=pytest.mark.redis),
    ]
)
async def quotas(request: pytest.FixtureRequest) -> AsyncIterator[Quotas]:
    if request.param == "memory":
        yield MemoryQuotas()
        return
    if request.param == "cluster":
        # Each bucket and pool is one key under its own hash tag: legal on a Cluster.
        on_cluster = RedisQuotas(
            connect(request.getfixturevalue("redis_cluster_url")),
            prefix=request.getfixturevalue("redis_cluster_prefix"),
        )
        try:
            yield on_cluster
        finally:
            await on_cluster.close()
        return
    url = request.getfixturevalue("redis_url")
    prefix = f"test-quotas-{uuid.uuid4().hex[:8]}:"
    store = RedisQuotas.from_url(url, prefix=prefix)
    try:
        yield store
    finally:
        await store.close()
        client = aioredis.Redis.from_url(url)
        async for key in client.scan_iter(match=prefix + "*"):
            await client.delete(key)
        await client.aclose()


async def test_a_new_bucket_is_full_then_empties(quotas: Quotas) -> None:
    waits = [await quotas.take("k", rate=0.001, burst=3) for _ in range(4)]
    assert waits[:3] == [0.0, 0.0, 0.0]
    # Nearly a whole token is missing at 0.001 tokens/s: close to 1000 s.
    assert 900 < waits[3] <= 1000


async def test_buckets_are_independent(quotas: Quotas) -> None:
    assert await quotas.take("a", rate=0.001, burst=1) == 0.0
    assert await quotas.take("a", rate=0.001, burst=1) > 0
    assert await quotas.take("b", rate=0.001, burst=1) == 0.0


async def test_a_refused_take_spends_nothing(quotas: Quotas) -> None:
    """Refusals do not dig the bucket deeper: the wait does not grow with retries."""
    await quotas.take("k", rate=0.001, burst=1)
    first = await quotas.take("k", rate=0.001, burst=1)
    second = await quotas.take("k", rate=0.001, burst=1)
    assert second <= first


async def test_slots_up_to_the_limit_then_release(quotas: Quotas) -> None:
    assert await quotas.acquire("p", "a", limit=2, ttl_s=60)
    assert await quotas.acquire("p", "b", limit=2, ttl_s=60)
    assert not await quotas.acquire("p", "c", limit=2, ttl_s=60)
    # Holding again what one already holds is not a second slot.
    assert await quotas.acquire("p", "a", limit=2, ttl_s=60)
    await quotas.release("p", "a")
    await quotas.release("p", "absent")
    assert await quotas.acquire("p", "c", limit=2, ttl_s=60)
    assert await quotas.acquire("other", "x", limit=1, ttl_s=60)


async def test_slots_expire(quotas: Quotas) -> None:
    """A slot not released (its replica died) frees itself after its TTL."""
    assert await quotas.acquire("p", "a", limit=1, ttl_s=0.05)
    if isinstance(quotas, MemoryQuotas):
        return  # the memory clock is covered with a fake clock below

    async def freed() -> bool:
        return await quotas.acquire("p", "b", limit=1, ttl_s=60)

    await eventually(freed)


async def test_memory_bucket_refills_at_the_rate() -> None:
    clock = FakeClock()
    quotas = MemoryQuotas(clock=clock)
    assert await quotas.take("k", rate=2, burst=2) == 0.0
    assert await quotas.take("k", rate=2, burst=2) == 0.0
    assert await quotas.take("k", rate=2, burst=2) == pytest.approx(0.5)
    clock.advance(0.5)
    assert await quotas.take("k", rate=2, burst=2) == 0.0
    clock.advance(100)  # never more than the burst
    assert [await quotas.take("k", rate=2, burst=2) for _ in range(3)][2] > 0


async def test_memory_slots_expire_on_the_clock() -> None:
    clock = FakeClock()
    quotas = MemoryQuotas(clock=clock)
    assert await quotas.acquire("p", "a", limit=1, ttl_s=10)
    assert not await quotas.acquire("p", "b", limit=1, ttl_s=10)
    clock.advance(10)
    assert await quotas.acquire("p", "b", limit=1, ttl_s=10)


async def test_redis_failures_are_state_store_errors() -> None:
    quotas = RedisQuotas.from_url("redis://127.0.0.1:1/0")
    try:
        with pytest.raises(StateStoreError):
            await quotas.take("k", rate=1, burst=1)
        with pytest.raises(StateStoreError):
            await quotas.acquire("p", "a", limit=1, ttl_s=1)
    finally:
        await quotas.close()
