"""state/connect.py: the bounded client factory, on a single Redis and on a Redis Cluster."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from state.connect import InitializedFirstCluster, connect

pytestmark = pytest.mark.redis


async def test_a_cluster_url_gives_a_cluster_client(redis_cluster_url: str) -> None:
    client = connect(redis_cluster_url)
    try:
        assert isinstance(client, InitializedFirstCluster)
        assert await client.ping()
    finally:
        await client.aclose()


async def test_a_plain_url_gives_a_bounded_single_client(redis_url: str) -> None:
    client = connect(redis_url, command_timeout_s=0.5)
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
    for burst in range(40):
        a, b = connect(redis_cluster_url), connect(redis_cluster_url)
        key = f"{redis_cluster_prefix}{{burst-{burst}}}"
        try:
            results = await asyncio.gather(*(c.set(key, 1, nx=True, ex=60) for c in (a, b) * 5))
        finally:
            await a.aclose()
            await b.aclose()
        assert sorted(bool(r) for r in results) == [False] * 9 + [True]
