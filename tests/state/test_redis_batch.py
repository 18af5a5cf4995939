"""The Batcher's own connection: replies, errors and reconnects as through the pool."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from state.connect import Client, connect
from state.redis_batch import Batcher, LuaScript

pytestmark = pytest.mark.redis

# Read back what it was given; a SHA unknown to Redis until the first call loads it
# (never SCRIPT FLUSH: other runs share the server).
ECHO = LuaScript(f"-- {uuid.uuid4().hex}\nreturn ARGV[1]")


async def _one_batch(batcher: Batcher, prefix: str) -> list[Any]:
    """A mixed batch, issued in one turn: replies parsed by redis-py's callbacks
    (EXPIRE's bool, EXISTS' int), a refused command in the middle, a script."""
    key, text = f"{prefix}k", f"{prefix}text"
    futures = [
        batcher.call(("SET", key, "1")),
        batcher.call(("SET", text, "abc")),
        batcher.call(("INCR", text)),  # refused: not an integer
        batcher.call(("INCR", key)),
        batcher.call(("EXPIRE", key, 60)),
        batcher.call(("EXISTS", key, text, f"{prefix}none")),
        batcher.call(("HGET", f"{prefix}nohash", "f")),
    ]
    replies: list[Any] = []
    for outcome in await asyncio.gather(*futures, return_exceptions=True):
        replies.append(type(outcome) if isinstance(outcome, Exception) else outcome)
    replies.append(await batcher.eval(ECHO, [key], ["x"]))
    return replies


async def _connections_named(client: Client, name: str) -> int:
    return sum(1 for c in await client.client_list() if c.get("name") == name)


async def test_the_own_connection_answers_as_the_pool_does(
    redis_url: str, redis_prefix: str
) -> None:
    """The same batch through the batcher's own connection and through the pool (a pool
    too small to spare one): the same replies, a refused command failing only itself,
    a script Redis does not have (a new SHA) loaded and run."""
    own = connect(redis_url)
    pooled = connect(redis_url, max_connections=2)
    try:
        a, b = Batcher(own), Batcher(pooled)
        first = await _one_batch(a, f"{redis_prefix}a:")
        second = await _one_batch(a, f"{redis_prefix}a:")
        through_pool = await _one_batch(b, f"{redis_prefix}b:")
        expected = [True, True, ResponseError, 2, True, 2, None, b"x"]
        assert first == second == through_pool == expected
        assert a.own_round_trips == a.round_trips  # one at a time: all on its connection
        assert b.own_round_trips == 0
        with pytest.raises(NoScriptError):
            await a.call(("EVALSHA", "0" * 40, 0))
    finally:
        await own.aclose()
        await pooled.aclose()


async def test_batches_one_after_another_share_one_connection_and_overlapping_ones_do_not_wait(
    redis_url: str, redis_prefix: str
) -> None:
    """At 1 in flight every batch takes the batcher's connection (no more are opened);
    a batch issued while another is on it goes on another connection at once (one more
    of the batcher's own, from a pool with room for several)."""
    name = f"b{uuid.uuid4().hex[:10]}"
    client = connect(redis_url, client_name=name)
    admin = connect(redis_url)
    try:
        batcher = Batcher(client)
        for i in range(20):
            assert await batcher.call(("SET", f"{redis_prefix}{i}", i)) is True
        assert await _connections_named(admin, name) == 1
        assert batcher.own_round_trips == batcher.round_trips == 20
        # The first batch is on the connection (sent, not answered) when the second is
        # issued: a blocking read holds it until the second one's push wakes it.
        waiting = batcher.call(("BLPOP", f"{redis_prefix}list", 0.5))
        await asyncio.sleep(0)  # its send task runs: the connection is busy
        assert await batcher.call(("RPUSH", f"{redis_prefix}list", "v")) == 1
        assert await waiting == (f"{redis_prefix}list".encode(), b"v")
        assert await _connections_named(admin, name) == 2
        assert batcher.own_round_trips == batcher.round_trips == 22
    finally:
        await client.aclose()
        await admin.aclose()


async def _kill(client: Client, name: str) -> None:
    for c in await client.client_list():
        if c.get("name") == name:
            await client.client_kill_filter(_id=c["id"])


async def _through_a_drop(redis_url: str, key: str, **kwargs: Any) -> list[Any]:
    """INCR, Redis drops the idle connection, INCR twice: each outcome (a reply or the
    error's type)."""
    name = f"b{uuid.uuid4().hex[:10]}"
    client = connect(redis_url, client_name=name, **kwargs)
    admin = connect(redis_url)
    outcomes: list[Any] = []
    try:
        batcher = Batcher(client)
        outcomes.append(await batcher.call(("INCR", key)))
        await _kill(admin, name)
        await asyncio.sleep(0.05)  # the close reaching this process: nothing to await instead
        for _ in range(2):
            try:
                outcomes.append(await batcher.call(("INCR", key)))
            except Exception as exc:
                outcomes.append(type(exc))
        return outcomes
    finally:
        await client.aclose()
        await admin.aclose()


@pytest.mark.parametrize("retries", [0, 1], ids=["no-retries", "one-retry"])
async def test_a_dropped_idle_connection_costs_the_own_connection_no_attempt(
    redis_url: str, redis_prefix: str, retries: int
) -> None:
    """Redis drops the batcher's idle connection: its own connection, told by the socket,
    opens a new one before the next batch (nothing of it was sent on the old one), so no
    attempt fails; a pooled command learns of it by failing, then fails or is sent again
    as redis-py's retry policy says, and the one after reconnects."""
    retry = {"retry": Retry(NoBackoff(), retries)}
    own = await _through_a_drop(redis_url, f"{redis_prefix}own", **retry)
    pooled = await _through_a_drop(redis_url, f"{redis_prefix}pool", max_connections=2, **retry)
    assert own == [1, 2, 3]
    assert pooled == ([1, RedisConnectionError, 2] if retries == 0 else [1, 2, 3])


async def _blocked(client: Client, name: str) -> None:
    """Until the connection named `name` is blocked in Redis (its BLPOP read and held)."""
    for _ in range(500):  # bounded: 5 s
        connections = await client.client_list()
        if any(c.get("name") == name and "b" in c.get("flags", "") for c in connections):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"no connection named {name} blocked")


@pytest.mark.parametrize("retries", [0, 1], ids=["no-retries", "one-retry"])
async def test_a_connection_dropped_under_a_batch_fails_it_or_sends_it_again(
    redis_url: str, redis_prefix: str, retries: int
) -> None:
    """Redis drops the own connection while a batch waits for its replies: with no
    retries its caller gets redis-py's ConnectionError; with one the batch goes again on
    a fresh connection and is answered there. Either way the next batch is answered."""
    name = f"b{uuid.uuid4().hex[:10]}"
    client = connect(redis_url, client_name=name, retry=Retry(NoBackoff(), retries))
    admin = connect(redis_url)
    key = f"{redis_prefix}list"
    try:
        batcher = Batcher(client)
        waiting = asyncio.ensure_future(batcher.call(("BLPOP", key, 30)))
        await _blocked(admin, name)
        await _kill(admin, name)
        if retries == 0:
            with pytest.raises(RedisConnectionError):
                await waiting
        else:
            await _blocked(admin, name)  # sent again, on a connection of the same name
            assert await admin.rpush(key, "v") == 1
            assert await waiting == (key.encode(), b"v")
        assert await batcher.call(("PING",)) is True
        assert batcher.own_round_trips == batcher.round_trips
    finally:
        await client.aclose()
        await admin.aclose()


async def test_a_closed_store_gives_its_batcher_connection_back_to_a_shared_pool(
    redis_url: str,
) -> None:
    """A store over a client it does not own leaves the pool as it found it."""
    client = connect(redis_url, max_connections=8)
    assert isinstance(client, aioredis.Redis)
    pool: Any = client.connection_pool  # redis-py's pool methods are untyped
    taken: list[Any] = []
    try:
        batcher = Batcher(client)
        await batcher.call(("PING",))
        assert batcher.own_round_trips == 1  # it kept a connection of its own
        taken = [await pool.get_connection() for _ in range(7)]
        assert not pool.can_get_connection()  # the eighth is the batcher's
        await batcher.release()
        assert pool.can_get_connection()
    finally:
        for conn in taken:
            await pool.release(conn)
        await client.aclose()


async def test_a_script_redis_does_not_have_is_loaded_and_run_on_every_path(
    redis_url: str, redis_prefix: str
) -> None:
    """A script unknown to Redis (a new SHA, as after a restart) is loaded and run by the
    batcher itself, alone or in a batch, on its own connection and through the pool; its
    caller gets the script's reply, the other commands of the batch theirs."""
    own = connect(redis_url)
    pooled = connect(redis_url, max_connections=2)  # too small to spare one: the pool path
    try:
        for client in (own, pooled):
            batcher = Batcher(client)
            alone = LuaScript(f"-- {uuid.uuid4().hex}\nreturn ARGV[1]")
            assert await batcher.eval(alone, [f"{redis_prefix}k"], ["a"]) == b"a"
            batched = LuaScript(f"-- {uuid.uuid4().hex}\nreturn ARGV[1]")
            replies = await asyncio.gather(
                batcher.call(("SET", f"{redis_prefix}k", "1")),
                batcher.eval(batched, [f"{redis_prefix}k"], ["b"]),
                batcher.call(("INCR", f"{redis_prefix}k")),
            )
            assert replies == [True, b"b", 2]
            await batcher.drain()
        # A plain EVALSHA of an unknown SHA is not reloaded: its NOSCRIPT is the answer.
        with pytest.raises(NoScriptError):
            await Batcher(pooled).call(("EVALSHA", "0" * 40, 0))
    finally:
        await own.aclose()
        await pooled.aclose()


async def test_a_batch_not_answered_within_the_command_timeout_fails_and_the_next_one_works(
    redis_url: str, redis_prefix: str
) -> None:
    """Replies that do not come (a blocking pop Redis holds on to) fail the batch with
    redis-py's TimeoutError within the command timeout (per attempt); the connection is
    not reused mid-reply: the next batch is answered on a fresh one."""
    client = connect(redis_url, command_timeout_s=0.2)
    try:
        batcher = Batcher(client)
        held = [
            batcher.call(("SET", f"{redis_prefix}k", "1")),
            batcher.call(("BLPOP", f"{redis_prefix}empty", 30)),
        ]
        outcomes = await asyncio.gather(*held, return_exceptions=True)
        assert all(isinstance(o, RedisTimeoutError) for o in outcomes), outcomes
        assert await batcher.call(("GET", f"{redis_prefix}k")) == b"1"
        assert batcher.own_round_trips == batcher.round_trips == 2
    finally:
        await client.aclose()


# Answers what it was called with: a key it reads (set earlier in the batch or not), then
# every argument.
READ_AND_ECHO = LuaScript(
    f"-- {uuid.uuid4().hex}\nreturn {{redis.call('GET', KEYS[2]) or '', unpack(ARGV)}}"
)
FAIL = LuaScript(f"-- {uuid.uuid4().hex}\nreturn redis.error_reply('no')")


async def test_joined_calls_are_one_command_with_every_callers_items(
    redis_url: str, redis_prefix: str
) -> None:
    """Calls of one turn under one join key go as one command carrying every caller's
    items after the first caller's arguments; the first caller gets the reply, the others
    their `joined_reply`. A command of another key is not joined, and `at_end` puts the
    joined command after what was queued before the last joiner."""
    client = connect(redis_url)
    try:
        batcher = Batcher(client)
        await batcher.call(("SCRIPT", "LOAD", READ_AND_ECHO.source))
        k, flag = f"{redis_prefix}k", f"{redis_prefix}flag"
        script_keys = (k, flag)
        sent = batcher.commands_sent
        replies = await asyncio.gather(
            batcher.eval_joined(READ_AND_ECHO, script_keys, ("h",), ("a",), join=1, at_end=True),
            batcher.call(("SET", flag, "set")),
            batcher.eval_joined(
                READ_AND_ECHO, script_keys, ("h2",), ("b", "c"), join=1, joined_reply="j",
                at_end=True,
            ),
            batcher.eval_joined(READ_AND_ECHO, script_keys, ("o",), ("x",), join=2),
        )
        assert replies == [[b"set", b"h", b"a", b"b", b"c"], True, "j", [b"set", b"o", b"x"]]
        assert batcher.commands_sent - sent == 3
        # The next turn's batch joins nothing of this one's.
        again = await batcher.eval_joined(READ_AND_ECHO, script_keys, ("h",), ("d",), join=1)
        assert again == [b"set", b"h", b"d"]
    finally:
        await client.aclose()


async def test_a_joined_command_answers_every_caller_even_when_the_first_is_gone(
    redis_url: str, redis_prefix: str
) -> None:
    """Its error reaches each caller (an exception of their own); a cancelled first caller
    leaves the others their answers; a script Redis lost is loaded and run for all."""
    client = connect(redis_url)
    try:
        batcher = Batcher(client)
        k = f"{redis_prefix}k"
        failing = [batcher.eval_joined(FAIL, (k,), (), (i,), join="f") for i in range(3)]
        errors = await asyncio.gather(*failing, return_exceptions=True)
        assert all(isinstance(e, ResponseError) for e in errors)
        assert len({id(e) for e in errors}) == 3
        fresh = LuaScript(f"-- {uuid.uuid4().hex}\nreturn #ARGV")  # unknown to Redis: loaded
        first = batcher.eval_joined(fresh, (k,), (), ("a",), join="g")
        rest = [
            batcher.eval_joined(fresh, (k,), (), ("b",), join="g", joined_reply=i) for i in (1, 2)
        ]
        first.cancel()
        assert await asyncio.gather(*rest) == [1, 2]
    finally:
        await client.aclose()
