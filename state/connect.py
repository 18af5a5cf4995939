"""One way to open a Redis client with bounded waits, for every part that talks to Redis.

The state store, the shared breaker board and the access layer (keys, quotas) all
reach the same Redis; each must fail fast when it is down or frozen rather than hang a
request, so every client is built here with the same connect, command and pool bounds
(DESIGN.md "Redis faults"). A URL may name a Redis Cluster (``redis+cluster://``), and
then every part gets redis-py's `RedisCluster` on the same bounds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any, cast

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.connection import Connection
from redis.connection import HiredisRespSerializer
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.typing import EncodableT
from redis.utils import HIREDIS_AVAILABLE

from state.bounds import (
    DEFAULT_COMMAND_TIMEOUT_S,
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_POOL_TIMEOUT_S,
)

_CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}

# A single Redis or a Redis Cluster: the commands we use work on both.
Client = aioredis.Redis | aioredis.RedisCluster


class InitializedFirstCluster(aioredis.RedisCluster):
    """redis-py's RedisCluster, whose every command first completes `initialize()`.

    A fresh RedisCluster initialises lazily inside its first commands, but redis-py
    (8.x) resolves a command's routing on a startup node's connection *before* that
    lazy `initialize()`, which then closes the startup nodes' connections: concurrent
    first commands on a new client failed here with `AttributeError: 'NoneType' object
    has no attribute 'writelines'` in about 1 burst in 20 (ten concurrent SET NX on two
    new clients, 200 bursts). Awaiting the public `initialize()` first - a flag check
    once initialised, and again after redis-py marks the client for re-initialisation
    on a topology change - closes that window.
    """

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        await self.initialize()
        return await super().execute_command(*args, **kwargs)


class HiredisPackingConnection(Connection):
    """redis-py's asyncio TCP connection, packing commands with hiredis (C).

    redis-py's synchronous client packs with hiredis when it is installed (it is one of
    our dependencies); its asyncio `Connection` always packs in Python: `pack_command`
    was ~6 % of the service's CPU with Redis at 50 in flight (~100 arguments a chain,
    each through `Encoder.encode`). Same bytes on the wire, same `DataError` for an
    argument Redis has no form for (tests/state/test_connect.py); only the default
    UTF-8 strict encoding, which is what `connect` sets up.
    """

    # redis-py's own hiredis packer: what an argument hiredis refuses goes through (it
    # converts a memoryview or bytearray, and turns the rest into DataError).
    _fallback: Any = HiredisRespSerializer()  # its stubs type `pack` as taking one list

    def pack_command(self, *args: EncodableT) -> list[bytes]:
        first = args[0]
        # A command name of several words ("CLIENT SETINFO") goes as separate arguments,
        # as redis-py's packers send it. A name of letters only (every command we send)
        # has no whitespace even once encoded: hiredis encodes it as it is.
        if isinstance(first, str):
            if not first.isalpha():
                args = (*first.encode().split(), *args[1:])
        elif isinstance(first, bytes) and b" " in first:
            args = (*first.split(), *args[1:])
        try:
            # Its stubs type a tuple of one element; it takes any length.
            return [hiredis.pack_command(cast(Any, args))]
        except TypeError:
            packed: list[bytes] = self._fallback.pack(*args)
            return packed

    def pack_commands(self, commands: Iterable[Iterable[EncodableT]]) -> list[bytes]:
        """The commands' packed pieces, in order, as they are: redis-py's own joins them
        into ~6 KB buffers in a Python loop per piece, and the write joins or gathers
        them again anyway (same bytes on the wire)."""
        return [piece for command in commands for piece in self.pack_command(*command)]

    async def send_packed_command(
        self, command: bytes | str | Iterable[bytes], check_health: bool = True
    ) -> None:
        """redis-py's, with the write bounded by `asyncio.timeout` instead of
        `asyncio.wait_for`: on Python 3.11 wait_for runs the write in a task of its own,
        so every round trip paid a task, a timer and two loop turns before (and after)
        its bytes left. redis-py only takes the `wait_for` path when the connection has
        a socket timeout, so for the call the timeout moves from the connection to an
        `asyncio.timeout` around it. Same bound, same errors: a write that cannot finish
        in time is a `TimeoutError`, a socket error a `ConnectionError`, and redis-py
        closes the connection after either (tests/state/test_connect.py).
        """
        timeout_s = self.socket_timeout
        if not timeout_s:
            await super().send_packed_command(command, check_health)
            return
        # One coroutine uses a connection at a time (the pool's contract), so no other
        # read or write of this connection sees the timeout cleared meanwhile.
        self.socket_timeout = None
        try:
            async with asyncio.timeout(timeout_s):
                await super().send_packed_command(command, check_health)
        except TimeoutError:
            # redis-py closed the connection when the cancel reached its write.
            raise RedisTimeoutError("Timeout writing to socket") from None
        finally:
            self.socket_timeout = timeout_s


def is_cluster_url(url: str) -> bool:
    return url.split("://", 1)[0] in _CLUSTER_SCHEMES


def connect(
    url: str,
    *,
    cluster: bool = False,
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
    command_timeout_s: float = DEFAULT_COMMAND_TIMEOUT_S,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    pool_timeout_s: float = DEFAULT_POOL_TIMEOUT_S,
    **client_kwargs: Any,
) -> Client:
    """A client for `url` whose connecting, commands and pool waits are all bounded.

    `url` names a Redis Cluster when it starts with ``redis+cluster://`` (or
    ``rediss+cluster://``), or when `cluster` is set: the client is then a
    `RedisCluster` (at most `max_connections` per node). Otherwise at most
    `max_connections` are open at once (pub/sub included), and a command waits up
    to `pool_timeout_s` for a free one instead of failing at once when a burst has
    them all. `client_kwargs` go to the connection pool (e.g. `client_name`).
    """
    scheme, sep, rest = url.partition("://")
    if scheme in _CLUSTER_SCHEMES:
        scheme, cluster = _CLUSTER_SCHEMES[scheme], True
    if cluster:
        # A cluster has one database: drop a "/<db>" path a single-Redis URL may carry.
        nodes = rest.partition("/")[0]
        return InitializedFirstCluster.from_url(
            f"{scheme}{sep}{nodes}",
            socket_connect_timeout=connect_timeout_s,
            socket_timeout=command_timeout_s,
            max_connections=max_connections,
            **client_kwargs,
        )
    if HIREDIS_AVAILABLE and scheme == "redis" and "encoding" not in client_kwargs:
        # Plain TCP with the default encoding: the C packer (rediss:// and unix:// URLs
        # pick their own connection class, which wins over this one).
        client_kwargs["connection_class"] = HiredisPackingConnection
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=pool_timeout_s,
        socket_connect_timeout=connect_timeout_s,
        socket_timeout=command_timeout_s,
        **client_kwargs,
    )
    return aioredis.Redis.from_pool(pool)


def reply_text(value: bytes | str | None) -> str:
    """A Redis reply as text: clients made without `decode_responses` answer bytes, those
    made with it str; a missing value (None) is ""."""
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value
