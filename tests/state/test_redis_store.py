"""Redis-only behaviour: the key layout on the wire, real expiry, failures, reconnection."""

from __future__ import annotations

import asyncio
import time
import uuid
import zlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import msgspec
import orjson
import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from state import keys
from state.cancellations import CancellationStream
from state.history import HistoryPage, HistoryQuery, member_of
from state.models import HistoryEntry, WorkflowStatus
from state.redis import RedisStateStore
from state.store import LeaseLost, StateStoreError
from tests.ports import free_port
from tests.redis_server import RedisServer, require_redis_server
from tests.state.conftest import RedisBackend, make_state, new_id

pytestmark = pytest.mark.redis

# Generous: a hang fails, a slow (loaded) machine does not; 5 s was too tight under load.
EVENT_TIMEOUT_S = 30.0


class _AnyEntry:
    def __eq__(self, other: object) -> bool:
        return isinstance(other, HistoryEntry) and isinstance(other.workflow_id, str)


ANY_ENTRY: Any = _AnyEntry()


async def next_id(cancellations: CancellationStream) -> str:
    async with asyncio.timeout(EVENT_TIMEOUT_S):
        return await anext(cancellations)


async def wait_until(
    predicate: Callable[[], Awaitable[bool]], *, every_s: float = 0.05, up_to_s: float = 30.0
) -> bool:
    """Poll `predicate()` until true, for a bounded (wall-clock, generous) time; the
    server acts asynchronously."""
    deadline = time.monotonic() + up_to_s
    while not await predicate():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(every_s)
    return True


@pytest.fixture
def closed_port_url() -> str:
    """A URL on a 127.0.0.1 port nothing listens on."""
    port = free_port()  # free, and no other suite's (tests/ports.py)
    return f"redis://127.0.0.1:{port}/0"


async def test_save_gives_every_key_of_the_workflow_a_ttl(
    redis_backend: RedisBackend, redis_client: aioredis.Redis
) -> None:
    """After claim, save, cancel, heartbeat and a death, every key under the prefix
    expires (none lives forever): document, cancel flag, the owner's list, the replica
    table and the history index, the index no later than twice the longer TTL."""
    store = await redis_backend.new(ttl_s=2, prefix="ttl:")
    prefix = store.prefix
    state = make_state()
    token = await store.leases().claim(state.workflow_id, "me", lease_s=0.05)
    assert token is not None
    await store.request_cancel(state.workflow_id)
    await store.save(state, token=token)
    assert await store.leases().renew({state.workflow_id: token}, "me", lease_s=0.05)
    await asyncio.sleep(0.1)  # "me" dies: a real heartbeat deadline has to pass
    assert await store.leases().orphans(lease_s=1)

    found = sorted([k.decode() async for k in redis_client.scan_iter(match=f"{prefix}*")])
    assert found == sorted(
        [
            keys.workflow_key(prefix, state.workflow_id),
            keys.cancel_flag_key(prefix, state.workflow_id),
            keys.replica_workflows_key(prefix, "me"),
            keys.dead_replicas_key(prefix),
            keys.reaping_key(prefix),
            keys.history_key(prefix, 0),
            keys.history_expiry_key(prefix, 0),
        ]
    )
    for key in found:
        assert 0 < await redis_client.pttl(key) <= 4000, key


async def test_keys_really_expire(redis_backend: RedisBackend) -> None:
    """With a 1 s TTL, Redis itself drops the document and the flag."""
    store = await redis_backend.new(ttl_s=1)
    state = make_state()
    await store.save(state)
    await store.request_cancel(state.workflow_id)
    assert await store.get(state.workflow_id) == state

    async def gone() -> bool:
        return await store.get(state.workflow_id) is None

    assert await wait_until(gone)
    assert await store.cancel_requested(state.workflow_id) is False


async def test_wire_layout_matches_state_keys(
    redis_backend: RedisBackend, redis_client: aioredis.Redis
) -> None:
    """A running workflow is a hash of a header, its spec, one field per step and its
    result; a finished one is compacted to the final document (plain JSON when small,
    zlib from 4 KiB written out), its header and its lease generation (its
    ownership ends with it, as a release would end it); cancels go to the owner's channel
    as bare ids, and to every replica's once nobody owns the workflow."""
    store = await redis_backend.new(prefix="wire:")
    prefix = store.prefix
    state = make_state(status=WorkflowStatus.RUNNING)
    state.definition = {"name": "mine", "nodes": [{"id": "x"}]}
    token = await store.leases().claim(state.workflow_id, "owner-1", lease_s=60)
    await store.save(state, token=token)
    stored = cast(
        dict[bytes, bytes], await redis_client.hgetall(keys.workflow_key(prefix, state.workflow_id))
    )
    assert {k.decode() for k in stored} == {
        keys.DOC_STATUS_FIELD, keys.DOC_LEASE_GEN_FIELD, keys.DOC_OWNER_FIELD,
        keys.DOC_HEADER_FIELD, keys.DOC_SPEC_FIELD, keys.DOC_ORDER_FIELD,
        keys.DOC_RESULT_FIELD, *(keys.DOC_NODE_PREFIX + s for s in state.steps),
    }
    assert stored[keys.DOC_STATUS_FIELD.encode()] == b"running"

    finished = msgspec.structs.replace(state, status=WorkflowStatus.DEGRADED)
    await store.save(finished, token=token)
    stored = cast(
        dict[bytes, bytes], await redis_client.hgetall(keys.workflow_key(prefix, state.workflow_id))
    )
    assert {k.decode() for k in stored} == {
        keys.DOC_STATUS_FIELD, keys.DOC_LEASE_GEN_FIELD,
        keys.DOC_HEADER_FIELD, keys.DOC_FINAL_FIELD,
    }
    final = orjson.loads(stored[keys.DOC_FINAL_FIELD.encode()])
    assert final["definition"] is None and final["status"] == "degraded"
    big = make_state(status=WorkflowStatus.COMPLETED)
    big.result = {"text": "x" * 4096}
    await store.save(big)
    stored = cast(
        dict[bytes, bytes], await redis_client.hgetall(keys.workflow_key(prefix, big.workflow_id))
    )
    assert set(stored) >= {keys.DOC_COMPACT_FIELD.encode(), keys.DOC_HEADER_FIELD.encode()}
    assert keys.DOC_FINAL_FIELD.encode() not in stored
    assert orjson.loads(zlib.decompress(stored[keys.DOC_COMPACT_FIELD.encode()]))["result"] == {
        "text": "x" * 4096
    }
    assert await store.get(big.workflow_id) == big

    async with redis_client.pubsub() as pubsub:
        await pubsub.subscribe(keys.cancel_channel(prefix))
        await store.request_cancel(state.workflow_id)
        async with asyncio.timeout(EVENT_TIMEOUT_S):
            async for message in pubsub.listen():
                if message["type"] == "message":
                    break
    assert message["data"] == state.workflow_id.encode()

    running = make_state(status=WorkflowStatus.RUNNING)
    token = await store.leases().claim(running.workflow_id, "owner-1", lease_s=60)
    await store.save(running, token=token)
    async with redis_client.pubsub() as pubsub:
        await pubsub.subscribe(keys.replica_cancel_channel(prefix, "owner-1"))
        await store.request_cancel(running.workflow_id)
        async with asyncio.timeout(EVENT_TIMEOUT_S):
            async for message in pubsub.listen():
                if message["type"] == "message":
                    break
    assert message["data"] == running.workflow_id.encode()
    for workflow_id in (state.workflow_id, running.workflow_id):
        flag = await redis_client.get(keys.cancel_flag_key(prefix, workflow_id))
        assert flag == keys.CANCEL_FLAG_VALUE.encode()


async def test_a_release_after_the_terminal_write_sends_nothing_and_the_next_listing_unlists(
    redis_backend: RedisBackend, redis_client: aioredis.Redis
) -> None:
    """The terminal write drops the ownership (fenced by the owner's token), so the
    release that follows sends no command of its own: the owner's next claim unlists the
    workflow in its listing script (one command, as a claim sends anyway). Redis then
    holds what a full release leaves: the generation, no owner, the workflow unlisted. A
    release with no terminal write before it (a pause) still drops the ownership itself."""
    store = await redis_backend.new(prefix="fold:")
    prefix, leases = store.prefix, store.leases()
    listed = keys.replica_workflows_key(prefix, "owner-1")

    ended = make_state(status=WorkflowStatus.RUNNING)
    token = await store.leases().claim(ended.workflow_id, "owner-1", lease_s=60)
    await store.save(ended, token=token)
    await store.save(msgspec.structs.replace(ended, status=WorkflowStatus.COMPLETED), token=token)
    sent = store.commands_sent
    await leases.release(ended.workflow_id, "owner-1")
    assert store.commands_sent - sent == 0
    assert await redis_client.sismember(listed, ended.workflow_id)  # until the next listing

    paused = make_state(status=WorkflowStatus.RUNNING)
    sent = store.commands_sent
    paused_token = await store.leases().claim(paused.workflow_id, "owner-1", lease_s=60)
    assert store.commands_sent - sent == 2  # the listing (which unlists), the claim
    assert not await redis_client.sismember(listed, ended.workflow_id)
    await store.save(msgspec.structs.replace(paused, status=WorkflowStatus.PAUSED),
                     token=paused_token)
    sent = store.commands_sent
    await leases.release(paused.workflow_id, "owner-1")
    assert store.commands_sent - sent == 2

    for workflow_id, generation in ((ended.workflow_id, token), (paused.workflow_id, paused_token)):
        doc = keys.workflow_key(prefix, workflow_id)
        assert await redis_client.hget(doc, keys.DOC_OWNER_FIELD) is None
        assert await redis_client.hget(doc, keys.DOC_LEASE_GEN_FIELD) == str(generation).encode()
        assert not await redis_client.sismember(listed, workflow_id)
    # Taken again by anyone, as after any release (the next generation).
    assert await leases.claim(ended.workflow_id, "owner-2", lease_s=60) == (token or 0) + 1


@pytest.mark.parametrize("by", ["beat", "close"])
async def test_finished_workflows_left_listed_are_unlisted_by_the_next_beat_or_on_close(
    redis_backend: RedisBackend, redis_client: aioredis.Redis, by: str
) -> None:
    """Without a claim after them, the owner's heartbeat unlists its released finished
    workflows in the beat's round trip, and closing the store unlists what is left."""
    store = await redis_backend.new(prefix=f"unlist-{by}:")
    leases = store.leases()
    listed = keys.replica_workflows_key(store.prefix, "owner-1")
    ended = [make_state(status=WorkflowStatus.RUNNING) for _ in range(3)]
    for state in ended:
        token = await leases.claim(state.workflow_id, "owner-1", lease_s=60)
        await store.save(msgspec.structs.replace(state, status=WorkflowStatus.COMPLETED),
                         token=token)
        await leases.release(state.workflow_id, "owner-1")
    assert await redis_client.scard(listed) == 1  # each claim unlisted the one before it
    if by == "beat":
        trips = store.round_trips
        assert await leases.renew({}, "owner-1", lease_s=60) == set()
        assert store.round_trips - trips == 1
    else:
        await store.close()
    assert await redis_client.scard(listed) == 0


async def test_a_thousand_finished_workflows_waiting_to_be_unlisted_are_unlisted_at_once(
    redis_backend: RedisBackend, redis_client: aioredis.Redis
) -> None:
    """Releases with no listing or beat after them leave at most 1000 finished workflows
    listed: the 1000th release unlists them all in one command of its own."""
    store = await redis_backend.new(prefix="unlist-bound:")
    leases = store.leases()
    listed = keys.replica_workflows_key(store.prefix, "owner-1")
    ended = [make_state(status=WorkflowStatus.RUNNING) for _ in range(1000)]
    tokens = await asyncio.gather(
        *(leases.claim(state.workflow_id, "owner-1", lease_s=60) for state in ended)
    )
    await asyncio.gather(
        *(
            store.save(msgspec.structs.replace(state, status=WorkflowStatus.COMPLETED), token=t)
            for state, t in zip(ended, tokens, strict=True)
        )
    )
    sent = store.commands_sent
    for state in ended[:-1]:
        await leases.release(state.workflow_id, "owner-1")
    assert store.commands_sent == sent
    assert await redis_client.scard(listed) == 1000
    await leases.release(ended[-1].workflow_id, "owner-1")
    assert store.commands_sent - sent == 1
    assert await redis_client.scard(listed) == 0


async def test_a_finished_workflow_stays_its_owners_to_finish_after_a_presumed_death(
    redis_backend: RedisBackend,
) -> None:
    """Its terminal write went through (fenced) and dropped its ownership; its owner,
    declared dead before it released it, keeps it on the next beat (its last events and
    the release are still its to do): nothing is left for another replica to take over."""
    store = await redis_backend.new(prefix="ended:")
    leases = store.leases()
    state = make_state(status=WorkflowStatus.RUNNING)
    token = await leases.claim(state.workflow_id, "me", lease_s=60)
    assert token is not None
    await store.save(msgspec.structs.replace(state, status=WorkflowStatus.FAILED), token=token)
    assert await leases.renew({state.workflow_id: token}, "me", lease_s=0.05)
    await asyncio.sleep(0.1)  # "me" dies: a real heartbeat deadline has to pass
    assert await leases.orphans(lease_s=1)  # declared dead (its list reserved for reaping)
    assert await leases.renew({state.workflow_id: token}, "me", lease_s=60) == {state.workflow_id}


async def test_events_are_published_only_once_someone_listens(
    redis_backend: RedisBackend, redis_client: aioredis.Redis
) -> None:
    """An append PUBLISHes a workflow's events only after a `subscribe_events` (on any
    replica) marked it watched; the mark expires with the document, and the log has
    every event either way."""
    store = await redis_backend.new(prefix="watch:")
    peer = await redis_backend.peer(store)
    prefix = store.prefix
    state = make_state(status=WorkflowStatus.RUNNING)
    await store.save(state)
    workflow_id = state.workflow_id
    watched = keys.events_watched_key(prefix, workflow_id)
    async with redis_client.pubsub() as raw:
        # A bare SUBSCRIBE is no `subscribe_events`: it marks nothing, so it hears nothing.
        await raw.subscribe(keys.events_channel(prefix, workflow_id))
        assert await raw.get_message(timeout=EVENT_TIMEOUT_S) is not None  # the confirmation
        assert await store.append_event(workflow_id, {"n": 1}) == 1
        assert await redis_client.exists(watched) == 0

        async with await peer.subscribe_events(workflow_id) as stream:
            assert await redis_client.exists(watched) == 1
            doc_ttl = await redis_client.pttl(keys.workflow_key(prefix, workflow_id))
            assert 0 < await redis_client.pttl(watched) <= doc_ttl
            assert await store.append_event(workflow_id, {"n": 2}) == 2
            async with asyncio.timeout(EVENT_TIMEOUT_S):
                assert await anext(stream) == (2, {"n": 2})
                while (message := await raw.get_message(timeout=None)) is None:
                    pass
    # The raw subscriber heard the second event only: the first was never published.
    assert message["type"] == "message" and message["data"] == b'2 {"n":2}'
    assert await store.events_since(workflow_id) == [(1, {"n": 1}), (2, {"n": 2})]
    # Finished: the mark gets the retention with every other key of the workflow.
    await store.save(msgspec.structs.replace(state, status=WorkflowStatus.COMPLETED))
    assert await redis_client.exists(watched) == 1
    assert 0 < await redis_client.pttl(watched) <= store.retention_s * 1000


async def test_works_with_a_decoding_client(redis_backend: RedisBackend) -> None:
    """A client built with decode_responses=True reads documents and cancels alike."""
    store = await redis_backend.new(decode_responses=True)
    cancellations = await store.subscribe_cancellations("me")
    state = make_state()
    token = await store.leases().claim(state.workflow_id, "me", lease_s=60)
    await store.save(state, token=token)
    await store.request_cancel(state.workflow_id)

    assert await store.get(state.workflow_id) == state
    assert await store.history(HistoryQuery()) == HistoryPage([ANY_ENTRY], None)
    assert await next_id(cancellations) == state.workflow_id
    await cancellations.aclose()


async def kill_pubsub_connections(redis_client: aioredis.Redis, name: str) -> int:
    """Drop only this test's pub/sub connections, never another client's on the same server."""
    clients = await redis_client.client_list(_type="pubsub")
    ids = [c["id"] for c in clients if c.get("name") == name]
    for client_id in ids:
        await redis_client.client_kill_filter(_id=client_id)
    return len(ids)


# redis-py reconnects a pub/sub connection by itself when its retries allow; with
# retries off the error reaches the store, which must reconnect on its own.
RETRY_POLICIES = {"client-retries": {}, "no-client-retries": {"retry": Retry(NoBackoff(), 0)}}


@pytest.mark.parametrize("client_kwargs", RETRY_POLICIES.values(), ids=RETRY_POLICIES.keys())
async def test_subscription_survives_a_dropped_connection(
    redis_backend: RedisBackend, redis_client: aioredis.Redis, client_kwargs: dict[str, Any]
) -> None:
    """After Redis drops the pub/sub connection, cancels still reach the subscriber."""
    name = f"t{uuid.uuid4().hex[:12]}"
    store = await redis_backend.new(client_name=name, **client_kwargs)
    cancellations = await store.subscribe_cancellations("me")
    # One connection for this replica's own channel, one for unclaimed workflows.
    assert await kill_pubsub_connections(redis_client, name) == 2

    workflow_id = new_id()
    await store.leases().claim(workflow_id, "me", lease_s=60)
    await store.request_cancel(workflow_id)
    assert await next_id(cancellations) == workflow_id  # live, or replayed from the flag

    later = new_id()
    await store.leases().claim(later, "me", lease_s=60)
    await store.request_cancel(later)
    async with asyncio.timeout(EVENT_TIMEOUT_S):
        while await anext(cancellations) != later:
            pass
    await cancellations.aclose()


class _PubSubLosingOneCancel(aioredis.client.PubSub):
    """A real PubSub whose blocking read loses the first cancel, as Python 3.11's
    `asyncio.wait_for` (around each of redis-py's socket writes) does when the cancel
    lands as the write completes (CPython gh-86296): the read then returns None
    (`then="returns"`) or goes on reading (`then="reads-on"`)."""

    then = "returns"
    lost: list[str] = []

    async def get_message(
        self,
        ignore_subscribe_messages: bool = False,
        timeout: float | None = 0.0,  # noqa: ASYNC109 (redis-py's signature, overridden)
    ) -> Any:
        if timeout is not None or not self.channels or self.lost:
            return await super().get_message(ignore_subscribe_messages, timeout)
        try:
            return await super().get_message(ignore_subscribe_messages, timeout)
        except asyncio.CancelledError:
            self.lost.append("cancel")
            if self.then == "returns":
                return None
            return await super().get_message(ignore_subscribe_messages, timeout)


class _ClientLosingOneCancel(aioredis.Redis):
    def pubsub(self, **kwargs: Any) -> aioredis.client.PubSub:
        return _PubSubLosingOneCancel(self.connection_pool, **kwargs)


@pytest.mark.parametrize("stream", ["finishes", "events"])
@pytest.mark.parametrize("then", ["returns", "reads-on"])
async def test_closing_a_subscription_survives_a_lost_cancel(
    redis_url: str, redis_client: aioredis.Redis, redis_prefix: str, then: str, stream: str
) -> None:
    """A pump that swallows the cancel of stop() still ends, and stop() returns: a
    lost cancel once left it reading forever (the test_subscription_survives_a_dropped_
    connection hang). Both kinds of subscription: ids (finishes) and a workflow's events."""
    client = _ClientLosingOneCancel.from_url(redis_url)
    _PubSubLosingOneCancel.then = then
    lost: list[str] = []
    _PubSubLosingOneCancel.lost = lost
    store = RedisStateStore(client, prefix=redis_prefix)
    try:
        subscription: Any
        if stream == "finishes":
            channel = keys.finished_channel(store.prefix)
            subscription = await store.subscribe_finishes()
        else:
            channel = keys.events_channel(store.prefix, "wf")
            subscription = await store.subscribe_events("wf")
        [(_, count)] = await redis_client.pubsub_numsub(channel)
        assert count == 1
        async with asyncio.timeout(30):  # generous: a hang fails instead of stalling
            await subscription.aclose()
        assert lost == ["cancel"]

        async def none_left() -> bool:
            [(_, left)] = await redis_client.pubsub_numsub(channel)
            return int(left) == 0

        assert await wait_until(none_left)
    finally:
        await store.close()
        await client.aclose()


@pytest.mark.parametrize("client_kwargs", RETRY_POLICIES.values(), ids=RETRY_POLICIES.keys())
async def test_cancels_missed_while_disconnected_are_replayed(
    redis_backend: RedisBackend, redis_client: aioredis.Redis, client_kwargs: dict[str, Any]
) -> None:
    """A flag set while the subscriber was away is delivered on reconnect: the flags of
    the workflows listed under this replica, and no other (no keyspace scan)."""
    name = f"t{uuid.uuid4().hex[:12]}"
    store = await redis_backend.new(prefix="we?rd*[1]:", client_name=name, **client_kwargs)
    prefix = store.prefix
    cancellations = await store.subscribe_cancellations("me")
    missed = new_id()
    await store.leases().claim(missed, "me", lease_s=60)
    # Never published: only the replay can deliver it. Another replica's flag must not be.
    await redis_client.set(keys.cancel_flag_key(prefix, missed), "1", ex=60)
    await store.leases().claim("foreign", "someone-else", lease_s=60)
    await redis_client.set(keys.cancel_flag_key(prefix, "foreign"), "1", ex=60)

    assert await kill_pubsub_connections(redis_client, name) == 2
    assert await next_id(cancellations) == missed

    await store.leases().claim("marker", "me", lease_s=60)
    await store.request_cancel("marker")
    rest: list[str] = []
    async with asyncio.timeout(EVENT_TIMEOUT_S):
        while (workflow_id := await anext(cancellations)) != "marker":
            rest.append(workflow_id)
    assert "foreign" not in rest
    await cancellations.aclose()


async def test_closing_a_subscription_unsubscribes_on_the_server(
    redis_backend: RedisBackend, redis_client: aioredis.Redis
) -> None:
    """aclose() and store.close() release the pub/sub connections."""
    store = await redis_backend.new(prefix="numsub:")
    channel = keys.cancel_channel(store.prefix)
    first = await store.subscribe_cancellations()
    await store.subscribe_cancellations()

    async def subscribers() -> int:
        [(_, count)] = await redis_client.pubsub_numsub(channel)
        return int(count)

    assert await subscribers() == 2
    await first.aclose()

    async def one_left() -> bool:
        return await subscribers() == 1

    async def none_left() -> bool:
        return await subscribers() == 0

    assert await wait_until(one_left)
    await store.close()
    assert await wait_until(none_left)


async def test_close_leaves_an_injected_client_open(
    redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    """A store built on a caller's client does not close it; its subscriptions do end."""
    store = RedisStateStore(redis_client, prefix=redis_prefix)
    cancellations = await store.subscribe_cancellations()
    await store.close()

    assert await redis_client.ping() is True
    with pytest.raises(StopAsyncIteration):
        await next_id(cancellations)


async def test_close_closes_a_client_built_from_url(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    """from_url's client is the store's own: close() disconnects it."""
    name = f"owned-{new_id()}"
    store = RedisStateStore.from_url(redis_url, client_name=name)
    assert await store.ping()

    async def connected() -> int:
        return sum(1 for c in await redis_client.client_list() if c.get("name") == name)

    assert await connected() == 1
    await store.close()

    async def gone() -> bool:
        return await connected() == 0

    assert await wait_until(gone)


async def test_ping_is_false_when_nothing_listens(closed_port_url: str) -> None:
    """Readiness fails, without raising, when Redis is unreachable."""
    store = RedisStateStore.from_url(closed_port_url, retry=Retry(NoBackoff(), 0))
    try:
        assert await store.ping() is False
    finally:
        await store.close()


async def test_ping_is_bounded_by_its_timeout(closed_port_url: str) -> None:
    """Even with the client's own retries, ping answers False within ping_timeout_s."""
    store = RedisStateStore.from_url(closed_port_url, command_timeout_s=0.05)
    try:
        assert await store.ping() is False
    finally:
        await store.close()


async def test_backend_failures_become_state_store_errors(closed_port_url: str) -> None:
    """Every operation on an unreachable Redis raises StateStoreError from the redis error."""
    store = RedisStateStore.from_url(closed_port_url, retry=Retry(NoBackoff(), 0))
    workflow_id = new_id()
    operations: dict[str, Callable[[], Awaitable[object]]] = {
        "save": lambda: store.save(make_state(workflow_id)),
        "accept": lambda: store.accept(make_state(workflow_id)),
        "get": lambda: store.get(workflow_id),
        "request_cancel": lambda: store.request_cancel(workflow_id),
        "cancel_requested": lambda: store.cancel_requested(workflow_id),
        "pause_requested": lambda: store.pause_requested(workflow_id),
        "append_events": lambda: store.append_events(workflow_id, [{"type": "x"}]),
    }
    try:
        for operation, call in operations.items():
            with pytest.raises(StateStoreError) as caught:
                await call()
            assert caught.value.backend == "redis"
            assert caught.value.operation == operation
            assert caught.value.workflow_id == workflow_id
            assert isinstance(caught.value.__cause__, RedisConnectionError)

        with pytest.raises(StateStoreError) as caught:
            await store.leases().claim(workflow_id, "me", lease_s=1)
        assert caught.value.operation == "lease_claim"
        assert isinstance(caught.value.__cause__, RedisConnectionError)
    finally:
        await store.close()


async def test_ttl_must_be_positive(closed_port_url: str) -> None:
    """A zero TTL would make Redis delete every document at once: refused up front."""
    client = aioredis.Redis.from_url(closed_port_url)
    with pytest.raises(ValueError):
        RedisStateStore(client, ttl_s=0)
    await client.aclose()


async def test_a_pool_with_no_free_connection_waits_then_fails_as_state_store_error(
    redis_url: str, redis_prefix: str
) -> None:
    """The pool is bounded and blocking: a command waits for a connection up to
    pool_timeout_s, then fails as StateStoreError (503 at the API), never hangs."""
    store = RedisStateStore.from_url(
        redis_url, prefix=redis_prefix, max_connections=1, pool_timeout_s=0.05
    )
    try:
        assert await store.get("nothing") is None  # the one connection works
        held = await store.subscribe_cancellations()  # ... and is now held by pub/sub
        with pytest.raises(StateStoreError) as caught:
            await store.get("nothing")
        assert caught.value.operation == "get"
        await held.aclose()  # given back: commands run again
        assert await store.get("nothing") is None
    finally:
        await store.close()


async def test_a_subscription_started_while_redis_is_away_listens_once_it_is_back(
    tmp_path: Path, redis_prefix: str
) -> None:
    """Start-up without Redis: the stream is returned at once, and once Redis answers it
    subscribes and replays the cancel flags standing by then."""
    server = RedisServer(require_redis_server(), tmp_path, aof=False)  # not started
    store = RedisStateStore.from_url(server.url, prefix=redis_prefix, command_timeout_s=0.2)
    try:
        cancellations = await store.subscribe_cancellations("me")
        await server.start()
        assert await store.leases().claim("while-away", "me", lease_s=60)
        await store.request_cancel("while-away")  # maybe before the pump has reconnected:
        assert await next_id(cancellations) == "while-away"  # then the replay delivers it
        await cancellations.aclose()
    finally:
        await store.close()
        await server.kill()


async def test_a_heartbeat_after_redis_lost_everything_takes_the_workflow_back(
    redis_backend: RedisBackend, redis_client: aioredis.Redis
) -> None:
    """A restart without persistence drops the owner, the generation, the heartbeat and
    the owner's list: the owner's next beat restores them, so the workflow stays findable."""
    store = await redis_backend.new()
    prefix = store.prefix
    state = make_state()
    token = await store.leases().claim(state.workflow_id, "owner", lease_s=5)
    assert token is not None
    assert await store.save(state, token=token)
    lost = [k async for k in redis_client.scan_iter(match=f"{prefix}*")]
    await redis_client.delete(*lost)

    assert await store.leases().renew({state.workflow_id: token}, "owner", lease_s=5) == {
        state.workflow_id
    }

    doc = keys.workflow_key(prefix, state.workflow_id)
    assert await redis_client.hget(doc, keys.DOC_OWNER_FIELD) == b"owner"
    listed = keys.replica_workflows_key(prefix, "owner")
    assert await redis_client.sismember(listed, state.workflow_id)
    assert await redis_client.zscore(keys.replicas_key(prefix), "owner") is not None
    assert await store.save(state, token=token)  # the restored generation is the token
    with pytest.raises(LeaseLost):
        await store.save(state, token=token + 1)


async def _expiry_score(
    redis_client: aioredis.Redis, store: RedisStateStore, state: Any
) -> float | None:
    member = member_of(state.created_at, state.workflow_id)
    score: float | None = await redis_client.zscore(
        keys.history_expiry_key(store.prefix, 0), member
    )
    return score


async def test_a_workflow_ending_soon_after_its_accept_is_indexed_once(
    redis_backend: RedisBackend, redis_client: aioredis.Redis
) -> None:
    """Its accept's history entry is due for its check no earlier than the finished
    document expires (and at most the slack later): the terminal write sends the save
    only, and the history still lists it."""
    store = await redis_backend.new(prefix="hist-once:", history_shards=1)
    state = make_state(status=WorkflowStatus.RUNNING)
    state.created_at = time.time()
    await store.accept(state)
    sent = store.commands_sent
    assert await store.save(msgspec.structs.replace(state, status=WorkflowStatus.COMPLETED))
    assert store.commands_sent - sent == 1
    doc_pttl = await redis_client.pttl(keys.workflow_key(store.prefix, state.workflow_id))
    doc_expires_ms = time.time() * 1000 + doc_pttl
    score = await _expiry_score(redis_client, store, state)
    assert score is not None
    assert doc_expires_ms - 1000 <= score <= doc_expires_ms + 61_000
    page = await store.history(HistoryQuery())
    assert [e.workflow_id for e in page.entries] == [state.workflow_id]


async def test_a_workflow_ending_long_after_its_accept_is_indexed_again(
    redis_backend: RedisBackend, redis_client: aioredis.Redis
) -> None:
    """Ended later than the slack after its entry's first due time, it is indexed again
    with the retention as its expiry, in the terminal write's round trip."""
    store = await redis_backend.new(prefix="hist-again:", ttl_s=100, history_shards=1)
    state = make_state(status=WorkflowStatus.RUNNING)
    state.created_at = time.time() - 200  # accepted long ago (its entry due at +160 s)
    await store.accept(state)
    sent, trips = store.commands_sent, store.round_trips
    assert await store.save(msgspec.structs.replace(state, status=WorkflowStatus.COMPLETED))
    assert (store.commands_sent - sent, store.round_trips - trips) == (2, 1)
    score = await _expiry_score(redis_client, store, state)
    assert score is not None
    assert abs(score - (time.time() + store.retention_s) * 1000) < 5_000


async def test_first_writes_of_one_turn_sweep_as_much_as_each_would_have(
    redis_backend: RedisBackend, redis_client: aioredis.Redis
) -> None:
    """Two accepts issued together share one history command, whose sweep still takes up to
    `_PRUNE_BATCH` expired entries per accept: 300 dead entries are gone after them."""
    store = await redis_backend.new(prefix="hist-joined:", ttl_s=100, history_shards=1)
    index = keys.history_key(store.prefix, 0)
    expiry = keys.history_expiry_key(store.prefix, 0)
    past_ms = int(time.time() * 1000) - 1000
    dead = [keys.history_member(past_ms, new_id()) for _ in range(300)]  # no documents
    await redis_client.zadd(index, dict.fromkeys(dead, 0))
    await redis_client.zadd(expiry, dict.fromkeys(dead, past_ms))
    states = [make_state(status=WorkflowStatus.RUNNING) for _ in range(2)]

    await asyncio.gather(*(store.accept(s) for s in states))

    assert await redis_client.zcard(expiry) == 2  # the two new entries, nothing dead
    page = await store.history(HistoryQuery())
    assert {e.workflow_id for e in page.entries} == {s.workflow_id for s in states}


async def test_a_first_write_prunes_its_shards_expired_entries(
    redis_backend: RedisBackend, redis_client: aioredis.Redis
) -> None:
    """An accept sweeps its shard as a terminal write did: an entry whose expiry passed is
    dropped when its document is gone, and pushed on by the TTL when it still lives."""
    store = await redis_backend.new(prefix="hist-sweep:", ttl_s=100, history_shards=1)
    index = keys.history_key(store.prefix, 0)
    expiry = keys.history_expiry_key(store.prefix, 0)
    alive = make_state(status=WorkflowStatus.RUNNING)
    await store.accept(alive)
    alive_member = member_of(alive.created_at, alive.workflow_id)
    dead_member = keys.history_member(int(time.time() * 1000), new_id())  # no document
    past_ms = int(time.time() * 1000) - 1000
    await redis_client.zadd(index, {dead_member: 0})
    await redis_client.zadd(expiry, {dead_member: past_ms, alive_member: past_ms})

    await store.accept(make_state(status=WorkflowStatus.RUNNING))
    assert await redis_client.zscore(index, dead_member) is None
    assert await redis_client.zscore(expiry, dead_member) is None
    pushed = await redis_client.zscore(expiry, alive_member)
    assert pushed is not None and pushed > time.time() * 1000 + 90_000
