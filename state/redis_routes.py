"""`BatchRoutes`: which connection carries a batch of the `Batcher`, and its replies parsed.

A batch goes on a connection the batcher keeps when one is free: an `OwnConnection`
(state/redis_wire.py) where it speaks exactly as the pool's connections would, else
one pooled redis-py connection kept for it. Otherwise it goes on a connection of the
pool taken for that batch, or, on a Cluster, through redis-py's pipeline, which
routes each command to its slot's node. Each connection kept holds a place of the
pool's (the pool's bound holds), given back by `release`.

Batching itself (a turn's commands together, joined commands, each caller answered,
NOSCRIPT reloads) is `Batcher`'s, in state/redis_batch.py.
"""

from __future__ import annotations

import asyncio
import inspect
import math
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from state.redis_wire import OwnConnection

# The smallest pool the batcher keeps a connection of its own from.
_HOLD_MIN_POOL = 8


def _held(pool_size: int) -> int:
    """How many of a pool's connections a batcher keeps: one per 16 (one from 8), at most
    4, for the batches in flight at once at load (~1-2 at 50 workflows in flight)."""
    return max(1, min(4, pool_size // 16))


class Pending(list[Any]):
    """Replies of which some are still to be awaited (an async response callback)."""


async def settled(replies: list[Any]) -> list[Any]:
    """`replies` as they end: a `Pending`'s awaitables awaited in order, any other list
    as it is (`parsed` found nothing to await in it)."""
    if not isinstance(replies, Pending):
        return replies
    return [await r if inspect.isawaitable(r) else r for r in replies]


class BatchRoutes:
    """The connections one `Batcher` sends its batches on (see the module docstring)."""

    def __init__(self, client: aioredis.Redis | aioredis.RedisCluster) -> None:
        self._client = client
        self._cluster = isinstance(client, aioredis.RedisCluster)
        # The pool's connections kept (`_held`), and how many more may be taken (`_hold`:
        # none on a Cluster or from a small pool). When `OwnConnection` speaks as they
        # would (`_fits`), each only holds its place under the pool's bound and lends its
        # settings to an `OwnConnection`, which carries batches (those free: `_wires`);
        # otherwise the first one carries batches itself (`_own`, `_own_busy` while a
        # batch is on it).
        pool_size = getattr(getattr(client, "connection_pool", None), "max_connections", 0)
        self._hold = 0 if self._cluster or pool_size < _HOLD_MIN_POOL else _held(pool_size)
        self._held: list[AbstractConnection] = []
        self._fits: bool | None = None  # (unknown until the first is taken)
        self._wires: list[OwnConnection] = []
        self._own: AbstractConnection | None = None
        self._own_busy = True
        # Round trips made on a connection kept (tests and bench/ count them).
        self.own_round_trips = 0

    def wire_ready(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Whether a kept `OwnConnection` is free and open on `loop`: a batch can be
        written on it from a callback, with no task (`take_wire`)."""
        wires = self._wires
        return bool(wires) and wires[-1].connected and wires[-1].loop is loop

    def take_wire(self, loop: asyncio.AbstractEventLoop) -> OwnConnection | None:
        """A free `OwnConnection` open on `loop`, taken (`give_back` it once its batch was
        answered); None when there is none."""
        return self._wires.pop() if self.wire_ready(loop) else None

    def give_back(self, wire: OwnConnection) -> None:
        self._wires.append(wire)

    def parsed(self, commands: list[tuple[Any, ...]], replies: list[Any]) -> list[Any] | Pending:
        """Replies parsed as `Redis.parse_response` does (each command's response callback,
        e.g. EXPIRE's bool); a `Pending` when a callback answered something to await."""
        callbacks = self._client.response_callbacks
        pending = False
        for i, command in enumerate(commands):
            reply = replies[i]
            if isinstance(reply, ResponseError):
                continue
            callback = callbacks.get(command[0])
            if callback is not None:
                reply = replies[i] = callback(reply)
                pending = pending or inspect.isawaitable(reply)
        return Pending(replies) if pending else replies

    async def release(self) -> None:
        """Close the `OwnConnection`s and give every kept connection's place back to the
        pool (a store that closes over a client it shares must not keep any; and the
        client's `aclose` does not know the sockets `OwnConnection` opened). Nothing
        more is kept or sent on a kept connection afterwards."""
        wires, self._wires = self._wires, []
        for wire in wires:
            wire.close()
        held, self._held, self._hold = self._held, [], 0
        self._own, self._own_busy = None, True
        if isinstance(self._client, aioredis.Redis):  # (never a Cluster)
            for conn in held:
                await self._client.connection_pool.release(conn)

    async def round_trip(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """The replies of `commands`, sent together (a `ResponseError` in the place of a
        command Redis refused), on the first free route of the module docstring."""
        wire = await self._free_wire()
        if wire is not None:
            self.own_round_trips += 1
            try:
                parsed = self.parsed(commands, await wire.exchange(commands))
            finally:
                self._wires.append(wire)
            return await settled(parsed)
        if not self._own_busy:
            self._own_busy = True
            self.own_round_trips += 1
            try:
                return await self._exchange(await self._own_connection(), commands)
            finally:
                self._own_busy = False
        if not self._cluster:
            # A connection of the pool for this batch, exchanged with the same code as the
            # batcher's own (redis-py's pipeline cost ~2x as much CPU per batch).
            client: Any = self._client  # a single Redis here (untyped pool calls)
            pool = client.connection_pool
            conn = await pool.get_connection()  # bounded by the pool's timeout
            try:
                return await self._exchange(conn, commands)
            finally:
                await pool.release(conn)
        # A Cluster: redis-py routes each command to its slot's node.
        if len(commands) == 1:
            # RedisCluster.execute_command is typed, Redis's untyped: Any covers both.
            cluster: Any = self._client
            try:
                return [await cluster.execute_command(*commands[0])]
            except ResponseError as exc:  # a refusal is its reply, as in a pipeline
                return [exc]
        pipeline = self._client.pipeline(transaction=False)
        for command in commands:
            pipeline.execute_command(*command)
        replies: list[Any] = await pipeline.execute(raise_on_error=False)
        return replies

    async def _free_wire(self) -> OwnConnection | None:
        """A free connection of the batcher's own, or a new one while it holds fewer than
        it may (its place taken from the pool, bounded by the pool's timeout); None when
        there is none or they do not fit (then the first one taken is `_own`)."""
        if self._wires:
            return self._wires.pop()
        if self._hold <= 0 or self._fits is False:
            return None
        self._hold -= 1  # (before the wait: batches waiting meanwhile take no more)
        client: Any = self._client  # a single Redis here (untyped pool calls)
        try:
            conn = await client.connection_pool.get_connection()
        except BaseException:
            self._hold += 1
            raise
        self._held.append(conn)
        if self._fits is None:
            self._fits = OwnConnection.fits(conn)
            if not self._fits:
                self._own, self._own_busy = conn, False
                return None
        # Its place under the pool's bound and its settings are kept; its socket is not
        # needed (the wire opens its own).
        await conn.disconnect()
        return OwnConnection(conn)

    async def _own_connection(self) -> AbstractConnection:
        client: Any = self._client  # a single Redis here (untyped pool calls)
        conn = self._own
        assert conn is not None  # (set when the first connection taken did not fit)
        # The pool's check when it hands a connection out: connected, and nothing unread
        # on it (Redis closed it while idle: reconnect before sending).
        await client.connection_pool.ensure_connection(conn)
        return conn

    async def _exchange(
        self, conn: AbstractConnection, commands: list[tuple[Any, ...]]
    ) -> list[Any]:
        """Send `commands` on `conn` (of a single Redis); their replies (a `ResponseError`
        in the place of a command Redis refused), parsed as redis-py parses them."""

        async def exchange() -> list[Any]:
            replies: list[Any] = []
            # One bound, the command timeout, for the batch's write and its replies
            # (Redis answers a pipeline in one go), instead of a timer for the write
            # (HiredisPackingConnection's, or redis-py's wait_for) and redis-py's armed
            # and cancelled per reply. With no socket timeout on the connection
            # meanwhile, the write takes redis-py's plain path (its errors and its
            # disconnect on a failed write unchanged).
            timeout_s = conn.socket_timeout
            conn.socket_timeout = None  # (one coroutine uses a connection at a time)
            try:
                async with asyncio.timeout(timeout_s):
                    await conn.send_packed_command(conn.pack_commands(commands))
                    for _ in commands:
                        try:
                            replies.append(await conn.read_response(timeout=math.inf))
                        except ResponseError as exc:
                            replies.append(exc)
            except TimeoutError:
                raise RedisTimeoutError(
                    f"Timeout sending {len(commands)} command(s) to Redis or reading their replies"
                ) from None
            finally:
                conn.socket_timeout = timeout_s
            return replies

        async def reconnect(_: Exception) -> None:
            await conn.disconnect()  # what redis-py does before a retry

        try:
            replies: list[Any] = await conn.retry.call_with_retry(exchange, reconnect)
        except BaseException:
            # Replies may be left unread (a timeout, a cancel): never reuse the stream.
            await conn.disconnect(nowait=True)
            raise
        # Each reply parsed as `Redis.parse_response` does, as on the own connection.
        return await settled(self.parsed(commands, replies))
