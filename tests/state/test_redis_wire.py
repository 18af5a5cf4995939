"""The batcher's own connection (`state.redis_wire`): answered from the socket's callback,
speaking to Redis and failing exactly as a redis-py connection of the same client does."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
import uvloop
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import DataError

from state.connect import connect
from state.redis_batch import Batcher, LuaScript

pytestmark = pytest.mark.redis

# Answers the error reply it is given (any first word: what Redis itself would answer).
ERROR_REPLY = LuaScript(f"-- {uuid.uuid4().hex}\nreturn redis.error_reply(ARGV[1])")
ERRORS = [
    "NOSCRIPT No matching script",
    "READONLY You can't write against a read only replica.",
    "OOM command not allowed when used memory > 'maxmemory'.",
    "NOPERM this user has no permissions",
    "EXECABORT Transaction discarded",
    "MASTERDOWN Link with MASTER is down",
    "WRONGPASS invalid username-password pair",
    "NOAUTH Authentication required.",
    "WRONGTYPE Operation against a key holding the wrong kind of value",
    "ERR invalid password",
    "ERR something else",
    "LOADING Redis is loading the dataset in memory",
    "ERR max number of clients reached",
]


async def test_a_batch_on_the_own_connection_has_no_task_of_its_own(redis_url: str) -> None:
    """Once the connection is open, a batch is written and answered without a task: the
    callers' own tasks are all the loop runs for it."""
    client = connect(redis_url)
    try:
        batcher = Batcher(client)
        assert await batcher.call(("PING",)) is True  # (opens the connection)
        tasks = asyncio.all_tasks()
        replies = [batcher.call(("PING",)), batcher.call(("ECHO", "x"))]
        await asyncio.sleep(0)  # the turn that writes the batch
        assert asyncio.all_tasks() == tasks
        assert [await r for r in replies] == [True, b"x"]
        assert batcher.own_round_trips == batcher.round_trips == 2
    finally:
        await client.aclose()


async def test_an_async_response_callback_is_awaited_on_every_path(redis_url: str) -> None:
    """A client whose response callback answers an awaitable (redis-py allows one): the
    caller gets what it ends with, from the batch a task sends (the first: it opens the
    connection), from the batch written by a callback on the open connection, and from a
    batch sent on a connection of the pool."""

    async def doubled(response: Any, **_: Any) -> Any:
        await asyncio.sleep(0)
        return response * 2

    client = connect(redis_url)
    try:
        client.set_response_callback("ECHO", doubled)
        batcher = Batcher(client)
        assert await batcher.call(("ECHO", "x")) == b"xx"  # (a task: opens the connection)
        assert await asyncio.gather(batcher.call(("ECHO", "y")), batcher.call(("PING",))) == [
            b"yy",
            True,
        ]
        assert batcher.own_round_trips == batcher.round_trips == 2
        # A pool too small to spare a connection: each batch on a connection of the pool.
        pooled = connect(redis_url, max_connections=2)
        try:
            pooled.set_response_callback("ECHO", doubled)
            through_pool = Batcher(pooled)
            assert await through_pool.call(("ECHO", "z")) == b"zz"
            assert through_pool.own_round_trips == 0
        finally:
            await pooled.aclose()
    finally:
        await client.aclose()


@pytest.mark.parametrize("message", ERRORS)
async def test_an_error_reply_is_the_exception_redis_py_makes_of_it(
    redis_url: str, redis_prefix: str, message: str
) -> None:
    """The same error reply through the own connection and through redis-py's: the same
    exception class and text (a `ConnectionError` for LOADING or a full server)."""
    key = f"{redis_prefix}k"
    client = connect(redis_url, retry=Retry(NoBackoff(), 0))
    try:
        await client.script_load(ERROR_REPLY.source)
        with pytest.raises(Exception) as through_redis_py:
            await client.evalsha(ERROR_REPLY.sha, 1, key, message)
        batcher = Batcher(client)
        assert await batcher.call(("PING",)) is True
        with pytest.raises(Exception) as through_wire:
            await batcher.eval(ERROR_REPLY, [key], [message])
        assert batcher.own_round_trips == batcher.round_trips
    finally:
        await client.aclose()
    assert type(through_wire.value) is type(through_redis_py.value)
    assert str(through_wire.value) == str(through_redis_py.value)


def test_the_own_connection_works_on_uvloop(redis_url: str, redis_prefix: str) -> None:
    """The service's default loop: its transports are not asyncio's classes."""

    async def batch() -> list[Any]:
        client = connect(redis_url)
        try:
            batcher = Batcher(client)
            key = f"{redis_prefix}k"
            replies = await asyncio.gather(
                batcher.call(("SET", key, "1")),
                batcher.call(("INCR", key)),
                batcher.call(("EXPIRE", key, 60)),
            )
            again = await batcher.call(("GET", key))
            assert batcher.own_round_trips == batcher.round_trips == 2
            await batcher.release()
            return [*replies, again]
        finally:
            await client.aclose()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert runner.run(batch()) == [True, 2, True, b"2"]


@pytest.mark.parametrize("protocol", [2, 3])
async def test_a_username_and_password_are_sent_as_redis_py_sends_them(
    redis_url: str, redis_prefix: str, protocol: int
) -> None:
    """A client with credentials, on either protocol: the own connection logs in as that
    user (and keeps the client's name and database), its replies parsed for it."""
    user, password = f"u{uuid.uuid4().hex[:10]}", uuid.uuid4().hex
    name = f"n{uuid.uuid4().hex[:10]}"
    admin = connect(redis_url)
    await admin.execute_command("ACL", "SETUSER", user, "on", f">{password}", "~*", "&*", "+@all")
    scheme, _, rest = redis_url.partition("://")
    client = connect(f"{scheme}://{user}:{password}@{rest}", client_name=name, protocol=protocol)
    try:
        batcher = Batcher(client)
        replies = await asyncio.gather(
            batcher.call(("ACL", "WHOAMI")),
            batcher.call(("CLIENT", "GETNAME")),
            batcher.call(("SET", f"{redis_prefix}k", "v")),
            batcher.call(("HSET", f"{redis_prefix}h", "f", "1")),
            batcher.call(("HGETALL", f"{redis_prefix}h")),
        )
        # (HGETALL: a dict on either protocol, through each one's response callbacks)
        assert replies == [user.encode(), name.encode(), True, 1, {b"f": b"1"}]
        assert await admin.get(f"{redis_prefix}k") == b"v"  # the same database
        assert batcher.own_round_trips == batcher.round_trips == 1
    finally:
        await client.aclose()
        await admin.execute_command("ACL", "DELUSER", user)
        await admin.aclose()


async def test_a_command_redis_has_no_form_for_fails_its_batch_and_the_next_one_works(
    redis_url: str, redis_prefix: str
) -> None:
    """An argument that cannot be packed fails every command of its batch (nothing of it
    was sent) with redis-py's DataError, on the own connection as through the pool."""
    for client in (connect(redis_url), connect(redis_url, max_connections=2)):
        try:
            batcher = Batcher(client)
            assert await batcher.call(("PING",)) is True
            batch = [
                batcher.call(("SET", f"{redis_prefix}k", "1")),
                batcher.call(("SET", f"{redis_prefix}k", object())),
            ]
            outcomes = await asyncio.gather(*batch, return_exceptions=True)
            assert [type(o) for o in outcomes] == [DataError, DataError]
            assert await batcher.call(("EXISTS", f"{redis_prefix}k")) == 0
        finally:
            await client.aclose()


async def test_a_batcher_keeps_at_most_four_connections_of_a_large_pool(
    redis_url: str, redis_prefix: str
) -> None:
    """Batches on the wire at once each take a connection of the batcher's own, up to four
    of a pool of 64; more go through the pool. `release` gives their places back."""
    name = f"b{uuid.uuid4().hex[:10]}"
    client = connect(redis_url, client_name=name, max_connections=64, pool_timeout_s=0.5)
    admin = connect(redis_url)
    try:
        batcher = Batcher(client)
        waiting = []
        for i in range(6):  # one batch each, all held by Redis at once (empty lists)
            waiting.append(batcher.call(("BLPOP", f"{redis_prefix}list{i}", 0.3)))
            await asyncio.sleep(0)
        assert [await w for w in waiting] == [None] * 6
        assert (batcher.round_trips, batcher.own_round_trips) == (6, 4)
        assert await _connections_named(admin, name) == 6
        await batcher.release()
        single: Any = client  # (a single Redis; its pool methods are untyped)
        pool = single.connection_pool
        taken = [await pool.get_connection() for _ in range(64)]  # every place is free
        for conn in taken:
            await pool.release(conn)
    finally:
        await client.aclose()
        await admin.aclose()


async def _connections_named(client: Any, name: str) -> int:
    return sum(1 for c in await client.client_list() if c.get("name") == name)


async def test_drains_waiting_at_once_all_return_once_the_batch_is_answered(
    redis_url: str,
) -> None:
    """Two drains waiting on a batch with no task of its own (on the own connection) both
    return when its replies are in."""
    client = connect(redis_url)
    try:
        batcher = Batcher(client)
        assert await batcher.call(("PING",)) is True
        reply = batcher.call(("PING",))
        await asyncio.gather(batcher.drain(), batcher.drain())
        assert reply.done()
    finally:
        await client.aclose()
