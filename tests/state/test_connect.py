"""state/connect.py: the bounded client factory, on a single Redis and on a Redis Cluster."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from redis.exceptions import TimeoutError as RedisTimeoutError

from state.connect import Client, HiredisPackingConnection, InitializedFirstCluster, connect

pytestmark = pytest.mark.redis


async def test_a_cluster_url_gives_a_cluster_client(redis_cluster_url: str) -> None:
    client = connect(redis_cluster_url, command_timeout_s=15.0)
    try:
        assert isinstance(client, InitializedFirstCluster)
        assert await client.ping()
    finally:
        await client.aclose()


async def test_a_plain_url_gives_a_bounded_single_client(redis_url: str) -> None:
    client = connect(redis_url, command_timeout_s=15.0)
    try:
        assert isinstance(client, aioredis.Redis)
        assert await client.ping()
    finally:
        await client.aclose()


async def test_concurrent_first_commands_on_new_cluster_clients_all_succeed(
    redis_cluster_url: str, redis_cluster_prefix: str
) -> None:
    """The burst that failed about once in 20 with redis-py's lazy initialisation (an
    AttributeError from a connection closed under it): 40 bursts of ten concurrent
    SET NX through two brand-new clients, every command answered, one winner each."""
    # Generous bounds: the test is about the initialisation race, not time limits (the
    # production 1 s read bound timed out once on a machine busy with other suites).
    def bounded() -> Client:
        return connect(redis_cluster_url, connect_timeout_s=15.0, command_timeout_s=15.0)

    for burst in range(40):
        a, b = bounded(), bounded()
        key = f"{redis_cluster_prefix}{{burst-{burst}}}"
        try:
            results = await asyncio.gather(*(c.set(key, 1, nx=True, ex=60) for c in (a, b) * 5))
        finally:
            await a.aclose()
            await b.aclose()
        assert sorted(bool(r) for r in results) == [False] * 9 + [True]


async def test_a_write_to_a_redis_that_stops_reading_fails_in_time_and_drops_the_connection(
) -> None:
    """A server that accepts but never reads (a frozen Redis): a write bigger than the
    socket buffers cannot finish; it fails with redis-py's TimeoutError within the
    command timeout and the connection is closed, never reused mid-command."""
    accepted: list[asyncio.StreamWriter] = []

    async def never_read(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(never_read, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    # No handshake to answer (no client name or library info, RESP2, db 0).
    conn = HiredisPackingConnection(
        host="127.0.0.1", port=port, socket_timeout=0.2, driver_info=None, protocol=2
    )
    try:
        await conn.connect()  # type: ignore[no-untyped-call]  # (untyped in redis-py)
        with pytest.raises(RedisTimeoutError, match="Timeout writing to socket"):
            await conn.send_packed_command(conn.pack_command("SET", "k", "x" * 64_000_000))
        assert not conn.is_connected
        assert conn.socket_timeout == 0.2  # given back to the connection for its reads
    finally:
        await conn.disconnect()
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_commands_are_written_and_answered_through_the_packing_connection(
    redis_url: str, redis_prefix: str
) -> None:
    """Single commands, a pipeline and a command given as text all reach Redis whole."""
    client = connect(redis_url, command_timeout_s=15.0)
    try:
        assert isinstance(client, aioredis.Redis)
        key = f"{redis_prefix}written"
        assert await client.set(key, "v", ex=60)
        pipe = client.pipeline(transaction=False)
        pipe.get(key)
        pipe.strlen(key)
        assert await pipe.execute() == [b"v", 1]
        conn = await client.connection_pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            await conn.send_packed_command(f"*2\r\n$3\r\nGET\r\n${len(key)}\r\n{key}\r\n")
            assert await conn.read_response() == b"v"
        finally:
            await client.connection_pool.release(conn)
    finally:
        await client.aclose()
