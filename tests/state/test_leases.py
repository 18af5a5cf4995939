"""Owner leases, one contract over both implementations: claim, renew, release, orphans."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from state.leases import LeaseStore, MemoryLeases, RedisLeases
from tests.fakes import FakeClock

# Expire leases: memory moves its fake clock; Redis waits out a real (short) lease.
Expire = Callable[[], Awaitable[None]]
LEASE_S = 0.2


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def leases(
    request: pytest.FixtureRequest,
) -> AsyncIterator[tuple[Callable[[], LeaseStore], Expire]]:
    if request.param == "memory":
        clock = FakeClock()
        shared = MemoryLeases(clock=clock)

        async def advance() -> None:
            clock.advance(LEASE_S + 0.01)

        yield (lambda: shared), advance
        return
    url: str = request.getfixturevalue("redis_url")
    prefix: str = request.getfixturevalue("redis_prefix")
    client = aioredis.Redis.from_url(url)

    async def wait_out() -> None:
        await asyncio.sleep(LEASE_S + 0.05)  # a real TTL has to pass: nothing to await instead

    try:
        yield (lambda: RedisLeases(client, prefix=prefix)), wait_out
    finally:
        await client.aclose()


async def test_one_owner_at_a_time(leases: Any) -> None:
    new, _ = leases
    a, b = new(), new()
    assert await a.claim("w1", "replica-a", lease_s=LEASE_S)
    assert not await b.claim("w1", "replica-b", lease_s=LEASE_S)
    assert await b.orphans() == []


async def test_an_expired_lease_is_an_orphan_and_can_be_taken_over(leases: Any) -> None:
    """A lapsed lease is an orphan; another replica takes it over; the old owner learns it."""
    new, expire = leases
    a, b = new(), new()
    t1 = await a.claim("w1", "replica-a", lease_s=LEASE_S)
    t2 = await a.claim("w2", "replica-a", lease_s=LEASE_S)
    await expire()
    assert await b.orphans() == ["w1", "w2"]
    assert await b.claim("w1", "replica-b", lease_s=60)
    assert await b.orphans() == ["w2"]
    # w1 was taken over; w2 lapsed but nobody took it, so the late heartbeat keeps it.
    assert await a.renew({"w1": t1, "w2": t2}, "replica-a", lease_s=60) == {"w2"}
    assert await b.orphans() == []


async def test_renew_keeps_the_lease_alive(leases: Any) -> None:
    new, expire = leases
    a = new()
    token = await a.claim("w1", "replica-a", lease_s=60)
    assert token is not None
    assert await a.renew({"w1": token}, "replica-a", lease_s=60) == {"w1"}
    assert await a.renew({}, "replica-a", lease_s=60) == set()
    assert await a.orphans() == []


async def test_release_unlists_and_frees_only_the_owners_lease(leases: Any) -> None:
    new, expire = leases
    a, b = new(), new()
    await a.claim("w1", "replica-a", lease_s=60)
    await b.release("w1", "replica-b")  # not b's: nothing happens
    assert not await b.claim("w1", "replica-b", lease_s=60)
    await a.release("w1", "replica-a")
    assert await b.orphans() == []
    assert await b.claim("w1", "replica-b", lease_s=60)


async def test_every_claim_hands_out_a_greater_generation(leases: Any) -> None:
    """The token of a claim grows with every claim of the workflow: a fencing token."""
    new, expire = leases
    a, b = new(), new()
    first = await a.claim("w1", "replica-a", lease_s=LEASE_S)
    assert first is not None and first >= 1
    assert await b.claim("w1", "replica-b", lease_s=LEASE_S) is None
    await expire()
    second = await b.claim("w1", "replica-b", lease_s=60)
    assert second is not None and second > first
    await b.release("w1", "replica-b")
    third = await a.claim("w1", "replica-a", lease_s=60)
    assert third is not None and third > second
    assert await a.claim("other", "replica-a", lease_s=60) == 1  # per workflow


async def test_a_lapsed_lease_is_not_renewed_after_another_claim_came_and_went(
    leases: Any,
) -> None:
    """Renew checks the token, not only the holder: a newer claim, even released, wins."""
    new, expire = leases
    a, b = new(), new()
    old = await a.claim("w1", "replica-a", lease_s=LEASE_S)
    assert old is not None
    await expire()
    assert await b.claim("w1", "replica-b", lease_s=60)
    await b.release("w1", "replica-b")
    assert await a.renew({"w1": old}, "replica-a", lease_s=60) == set()


async def test_a_claim_is_listed_at_once(leases: Any) -> None:
    """Claim lists the workflow in the same step: once it lapses it is an orphan."""
    new, expire = leases
    a = new()
    assert await a.claim("w1", "replica-a", lease_s=LEASE_S)
    await expire()
    assert await a.orphans() == ["w1"]
