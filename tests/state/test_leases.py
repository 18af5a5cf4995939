"""Owner leases, one contract over both implementations: claim, renew, release, orphans."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from state.connect import connect
from state.leases import LeaseStore, MemoryLeases, Orphan
from state.leases_redis import RedisLeases
from state.redis_batch import Batcher
from tests.fakes import FakeClock
from tests.redis_scripts import load_scripts

# Expire leases: memory moves its fake clock; Redis waits out a real (short) lease.
Expire = Callable[[], Awaitable[None]]
LEASE_S = 0.2


@pytest.fixture(
    params=[
        "memory",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("cluster", marks=pytest.mark.redis),
    ]
)
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
    if request.param == "cluster":
        url = request.getfixturevalue("redis_cluster_url")
        prefix = request.getfixturevalue("redis_cluster_prefix")
    else:
        url = request.getfixturevalue("redis_url")
        prefix = request.getfixturevalue("redis_prefix")
    client = connect(url)

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
    assert not await a.claim("w1", "replica-a", lease_s=LEASE_S)  # already its own
    assert await b.orphans() == []


async def test_a_silent_replicas_workflows_are_orphans_and_can_be_taken_over(
    leases: Any,
) -> None:
    """A replica whose heartbeat lapsed is dead: its listed workflows are reported once,
    to one survivor, which claims them naming the dead owner; the old owner learns it."""
    new, expire = leases
    a, b, c = new(), new(), new()
    t1 = await a.claim("w1", "replica-a", lease_s=LEASE_S)
    t2 = await a.claim("w2", "replica-a", lease_s=LEASE_S)
    await expire()
    found = await b.orphans(lease_s=60)
    assert found == [Orphan("w1", "replica-a"), Orphan("w2", "replica-a")]
    assert await c.orphans(lease_s=60) == []  # reserved for b: c does not duplicate the work
    assert not await c.claim("w1", "replica-c", lease_s=60)  # the owner must be named
    assert await b.claim("w1", "replica-b", lease_s=60, previous="replica-a")
    await b.bury("replica-a")
    assert await c.orphans(lease_s=60) == []
    # a comes back: w1 was taken over; w2 was not (b left it), so the late beat keeps it.
    assert await a.renew({"w1": t1, "w2": t2}, "replica-a", lease_s=60) == {"w2"}
    # And a is alive again: its next beat keeps everything it holds.
    assert await a.renew({"w2": t2}, "replica-a", lease_s=60) == {"w2"}


async def test_a_lapsed_reservation_passes_to_another_survivor(leases: Any) -> None:
    """A survivor that dies while resuming a dead replica's list does not strand it."""
    new, expire = leases
    a, b, c = new(), new(), new()
    await a.claim("w1", "replica-a", lease_s=LEASE_S)
    await expire()
    assert await b.orphans(lease_s=LEASE_S) == [Orphan("w1", "replica-a")]
    await expire()  # b never finished
    assert await c.orphans(lease_s=60) == [Orphan("w1", "replica-a")]


async def test_renew_keeps_the_owner_alive(leases: Any) -> None:
    new, expire = leases
    a = new()
    token = await a.claim("w1", "replica-a", lease_s=60)
    assert token is not None
    assert await a.renew({"w1": token}, "replica-a", lease_s=60) == {"w1"}
    assert await a.renew({}, "replica-a", lease_s=60) == set()
    assert await a.orphans() == []


async def test_release_frees_only_the_owners_workflow(leases: Any) -> None:
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
    second = await b.claim("w1", "replica-b", lease_s=60, previous="replica-a")
    assert second is not None and second > first
    await b.release("w1", "replica-b")
    third = await a.claim("w1", "replica-a", lease_s=60)
    assert third is not None and third > second
    assert await a.claim("other", "replica-a", lease_s=60) == 1  # per workflow


async def test_a_dead_replica_is_not_renewed_into_a_newer_claim(leases: Any) -> None:
    """Renew after a death checks the token, not only the owner: a newer claim, even
    released since, wins."""
    new, expire = leases
    a, b = new(), new()
    old = await a.claim("w1", "replica-a", lease_s=LEASE_S)
    assert old is not None
    await expire()
    assert await b.orphans(lease_s=60)
    assert await b.claim("w1", "replica-b", lease_s=60, previous="replica-a")
    await b.release("w1", "replica-b")
    assert await a.renew({"w1": old}, "replica-a", lease_s=60) == set()


async def test_a_claim_is_listed_at_once(leases: Any) -> None:
    """Claim lists the workflow under its owner in the same call: once the owner dies
    it is an orphan."""
    new, expire = leases
    a = new()
    assert await a.claim("w1", "replica-a", lease_s=LEASE_S)
    await expire()
    assert await a.orphans() == [Orphan("w1", "replica-a")]


async def test_a_dead_replica_that_owned_nothing_is_buried_at_once(leases: Any) -> None:
    new, expire = leases
    a, b = new(), new()
    await a.renew({}, "replica-a", lease_s=LEASE_S)
    await expire()
    assert await b.orphans(lease_s=LEASE_S) == []
    await expire()
    assert await b.orphans(lease_s=60) == []  # not reserved again: it is gone


@pytest.mark.redis
async def test_liveness_costs_one_command_per_beat_whatever_a_replica_runs(
    redis_url: str, redis_prefix: str
) -> None:
    """A heartbeat and a quiet reconcile are one command each, for 1 or 1,000 workflows:
    Redis work grows with replicas, not with replicas x running workflows."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        await load_scripts(client)
        batcher = Batcher(client)
        leases = RedisLeases(client, prefix=redis_prefix, batcher=batcher)
        held = {}
        for i in range(1000):
            token = await leases.claim(f"w{i}", "replica-a", lease_s=60)
            assert token is not None
            held[f"w{i}"] = token
        for workload in ({"w0": held["w0"]}, held):
            before = batcher.commands_sent
            assert await leases.renew(workload, "replica-a", lease_s=60) == set(workload)
            assert batcher.commands_sent - before == 1
        before = batcher.commands_sent
        assert await leases.orphans() == []
        assert batcher.commands_sent - before == 1
    finally:
        await client.aclose()


@pytest.mark.redis
async def test_a_claim_beats_for_its_owner_only_when_the_last_beat_is_a_third_of_a_lease_old(
    redis_url: str, redis_prefix: str
) -> None:
    """A claim keeps its owner alive (a first claim may come before the first heartbeat);
    within a third of a lease of a confirmed beat it sends no beat of its own, after
    that it does again, and the owner stays alive in Redis throughout."""
    client = aioredis.Redis.from_url(redis_url)
    clock = FakeClock()
    try:
        await load_scripts(client)
        batcher = Batcher(client)
        leases = RedisLeases(client, prefix=redis_prefix, batcher=batcher, clock=clock)

        async def commands_of_a_claim(workflow_id: str) -> int:
            before = batcher.commands_sent
            assert await leases.claim(workflow_id, "replica-a", lease_s=60) is not None
            return batcher.commands_sent - before

        assert await commands_of_a_claim("w1") == 3  # list, beat, claim
        assert await commands_of_a_claim("w2") == 2  # list, claim: the beat is fresh
        clock.advance(19)
        assert await commands_of_a_claim("w3") == 2
        clock.advance(2)  # 21 s since the beat: more than a third of the lease
        assert await commands_of_a_claim("w4") == 3
        assert await commands_of_a_claim("w5") == 2
        assert await leases.renew({"w1": 1}, "replica-a", lease_s=60) == {"w1"}
        clock.advance(30)  # 51 s after the claim's beat, 30 after the heartbeat's
        assert await commands_of_a_claim("w6") == 3
        assert await leases.orphans(lease_s=60) == []  # alive all along
    finally:
        await client.aclose()


@pytest.mark.redis
async def test_an_owner_declared_dead_beats_again_at_its_next_claim(
    redis_url: str, redis_prefix: str
) -> None:
    """A beat Redis refused (the owner was declared dead meanwhile) is no proof of life:
    the next claim beats again instead of trusting the earlier one."""
    client = aioredis.Redis.from_url(redis_url)
    clock = FakeClock()
    try:
        batcher = Batcher(client)
        leases = RedisLeases(client, prefix=redis_prefix, batcher=batcher, clock=clock)
        other = RedisLeases(client, prefix=redis_prefix)
        await leases.claim("w1", "replica-a", lease_s=LEASE_S)
        await asyncio.sleep(LEASE_S + 0.05)  # a real TTL has to pass: nothing to await instead
        assert await other.orphans(lease_s=60) == [Orphan("w1", "replica-a")]
        # Its beat is refused (declared dead); w1 is still its own, nobody took it over.
        assert await leases.renew({"w1": 1}, "replica-a", lease_s=LEASE_S) == {"w1"}
        before = batcher.commands_sent
        # The fake clock stood still: the first claim's beat alone would count as fresh
        # for this lease (0.2 s left of 0.25 s), the refused one overrides it.
        await leases.claim("w2", "replica-a", lease_s=LEASE_S * 1.25)
        assert batcher.commands_sent - before == 3  # list, beat, claim
    finally:
        await client.aclose()
