"""RedisStateStore sends the commands issued in one event-loop turn together (one pipeline)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from state import keys
from state.connect import reply_text
from state.history import HistoryQuery
from state.models import WorkflowStatus
from state.redis import RedisStateStore
from state.store import StateStoreError
from tests.ports import free_port
from tests.redis_scripts import load_scripts
from tests.redis_server import redis_server
from tests.state.conftest import RedisBackend, make_state

pytestmark = pytest.mark.redis


async def connections_named(client: aioredis.Redis, name: str) -> int:
    clients = await client.client_list()
    return sum(1 for c in clients if c.get("name") == name)


async def test_operations_issued_together_share_one_connection(
    redis_backend: RedisBackend, redis_client: aioredis.Redis
) -> None:
    """Fifty saves, reads and cancel checks at once all answer right, over one connection."""
    name = f"batch-{uuid.uuid4().hex[:8]}"
    store = await redis_backend.new(client_name=name)
    states = [make_state() for _ in range(50)]
    assert all(await asyncio.gather(*(store.save(s) for s in states)))
    await store.request_cancel(states[0].workflow_id)

    got, flags = await asyncio.gather(
        asyncio.gather(*(store.get(s.workflow_id) for s in states)),
        asyncio.gather(*(store.cancel_requested(s.workflow_id) for s in states)),
    )

    assert [g.to_dict() if g else None for g in got] == [s.to_dict() for s in states]
    assert flags == [True] + [False] * 49
    assert await connections_named(redis_client, name) == 1


async def test_a_refused_save_fails_only_itself(redis_backend: RedisBackend) -> None:
    """In one batch, a save over a terminal document is refused and the others are written."""
    store = await redis_backend.new()
    finished = make_state(status=WorkflowStatus.COMPLETED)
    assert await store.save(finished)
    late = make_state(finished.workflow_id, status=WorkflowStatus.RUNNING)
    fresh = [make_state() for _ in range(3)]

    results = await asyncio.gather(store.save(late), *(store.save(s) for s in fresh))

    assert results == [False, True, True, True]
    stored = await store.get(finished.workflow_id)
    assert stored is not None and stored.status is WorkflowStatus.COMPLETED


async def test_saves_reload_a_flushed_script(tmp_path: Path) -> None:
    """After Redis lost its script cache, saves, claims and batches still go through.

    On a redis-server of its own: SCRIPT FLUSH on the shared test Redis would pull the
    scripts from under another suite using it.
    """
    async for server in redis_server(tmp_path, aof=False):
        store = RedisStateStore.from_url(server.url)
        admin = aioredis.Redis.from_url(server.url)
        try:
            assert await store.save(make_state())
            await admin.script_flush()
            assert await store.save(make_state())
            await admin.script_flush()
            states = [make_state() for _ in range(5)]
            tokens = await asyncio.gather(
                *(store.leases().claim(s.workflow_id, "me", lease_s=5) for s in states)
            )
            assert all(tokens)
            saved = await asyncio.gather(
                *(store.save(s, token=t) for s, t in zip(states, tokens, strict=True))
            )
            assert all(saved)
            for state in states:
                assert await store.get(state.workflow_id) is not None
        finally:
            await admin.aclose()
            await store.close()


async def test_a_cancelled_caller_does_not_fail_the_rest_of_its_batch(
    redis_backend: RedisBackend,
) -> None:
    """Cancelling one caller while its batch is in flight leaves the others' answers intact."""
    store = await redis_backend.new()
    states = [make_state() for _ in range(3)]
    tasks = [asyncio.create_task(store.save(s)) for s in states]
    await asyncio.sleep(0)  # every save has joined the batch, which is now being sent
    tasks[1].cancel()
    first, second, third = await asyncio.gather(*tasks, return_exceptions=True)
    assert first is True and third is True
    assert isinstance(second, asyncio.CancelledError)
    assert await store.get(states[2].workflow_id) is not None


async def test_a_lost_connection_fails_every_command_of_the_batch() -> None:
    """Each caller of a batch that cannot reach Redis gets its own StateStoreError."""
    port = free_port()  # free, and no other suite's (tests/ports.py)
    store = RedisStateStore.from_url(f"redis://127.0.0.1:{port}/0", retry=Retry(NoBackoff(), 0))
    try:
        states = [make_state() for _ in range(3)]
        errors = await asyncio.gather(
            store.save(states[0]),
            store.get(states[1].workflow_id),
            store.cancel_requested(states[2].workflow_id),
            return_exceptions=True,
        )
    finally:
        await store.close()
    assert [type(e) for e in errors] == [StateStoreError] * 3
    failures = [e for e in errors if isinstance(e, StateStoreError)]
    assert [e.operation for e in failures] == ["save", "get", "cancel_requested"]
    assert all(isinstance(e.__cause__, RedisConnectionError) for e in failures)
    assert len({id(e.__cause__) for e in failures}) == 3  # one exception per caller


async def test_accepting_a_workflow_is_one_round_trip(redis_backend: RedisBackend) -> None:
    """The lease claim (listing, heartbeat, generation), the first document and its history
    entry: one pipeline."""
    store = await redis_backend.new()
    await load_scripts(redis_backend.client)
    state = make_state(status=WorkflowStatus.PENDING)
    state.owner = "me"
    before = store.round_trips
    assert await store.accept(state, lease_s=10) == 1
    assert store.round_trips - before == 1


async def test_a_terminal_write_is_one_round_trip(redis_backend: RedisBackend) -> None:
    """The compacted document, its history entry (with the retention) and the submit key's
    expiry go together, when no history entry is due for pruning."""
    store = await redis_backend.new()
    state = make_state(status=WorkflowStatus.PENDING)
    state.owner, state.submit_key = "me", "key-1"
    token = await store.accept(state, lease_s=10)
    state.status = WorkflowStatus.COMPLETED
    before = store.round_trips
    assert await store.save(state, token=token)
    assert store.round_trips - before == 1
    page = await store.history(HistoryQuery(limit=5))
    assert [(e.workflow_id, e.status) for e in page.entries] == [
        (state.workflow_id, "completed")
    ]


async def test_a_batch_of_events_is_one_command(redis_backend: RedisBackend) -> None:
    store = await redis_backend.new()
    await load_scripts(redis_backend.client)
    workflow_id = make_state().workflow_id
    before = store.commands_sent
    assert await store.append_events(workflow_id, [{"n": n} for n in range(20)]) == 20
    assert store.commands_sent - before == 1


async def test_accepts_of_one_turn_share_one_listing_and_one_history_command(
    redis_backend: RedisBackend, redis_client: aioredis.Redis
) -> None:
    """Five claimed accepts issued together send five document writes, one listing of
    their owner and one history command for their shard (not five of each): each is
    listed under its owner, in the history, and its document is there."""
    store = await redis_backend.new(prefix="joined:", history_shards=1)
    await load_scripts(redis_backend.client)
    first = make_state(status=WorkflowStatus.PENDING)
    first.owner = "me"
    await store.accept(first, lease_s=10)  # the owner's beat: not part of the count
    states = [make_state(status=WorkflowStatus.PENDING) for _ in range(5)]
    for state in states:
        state.owner = "me"
    sent = store.commands_sent
    assert await asyncio.gather(*(store.accept(s, lease_s=10) for s in states)) == [1] * 5
    assert store.commands_sent - sent == 5 + 1 + 1
    listed = await redis_backend.client.smembers(keys.replica_workflows_key(store.prefix, "me"))
    assert {reply_text(m) for m in listed} == {s.workflow_id for s in [first, *states]}
    page = await store.history(HistoryQuery(limit=10))
    assert {e.workflow_id for e in page.entries} == {s.workflow_id for s in [first, *states]}
    assert all(await asyncio.gather(*(store.get(s.workflow_id) for s in states)))
