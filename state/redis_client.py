"""`connect`: a bounded redis.asyncio client for a URL, a single Redis or a Redis Cluster."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

_CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


def is_cluster_url(url: str) -> bool:
    return url.split("://", 1)[0] in _CLUSTER_SCHEMES


def connect(
    url: str,
    *,
    cluster: bool = False,
    connect_timeout_s: float = 1.0,
    command_timeout_s: float = 1.0,
    max_connections: int = 64,
    pool_timeout_s: float = 2.0,
    **client_kwargs: Any,
) -> aioredis.Redis | aioredis.RedisCluster:
    """A client for `url`: redis-py's `RedisCluster` when `url` is ``redis+cluster://``
    (``rediss+cluster://``) or `cluster` is set, else a `Redis` on a blocking pool.

    Connecting and each command are bounded by the timeouts; at most
    `max_connections` are open at once (per node on a Cluster).
    """
    scheme, sep, rest = url.partition("://")
    if scheme in _CLUSTER_SCHEMES:
        url, cluster = f"{_CLUSTER_SCHEMES[scheme]}{sep}{rest}", True
    if cluster:
        # A cluster has one database: drop a "/<db>" path the single-Redis URL may carry.
        head, _, _db = url.partition("://")[2].partition("/")
        return aioredis.RedisCluster.from_url(
            f"{url.partition('://')[0]}://{head}",
            socket_connect_timeout=connect_timeout_s,
            socket_timeout=command_timeout_s,
            max_connections=max_connections,
            **client_kwargs,
        )
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=pool_timeout_s,
        socket_connect_timeout=connect_timeout_s,
        socket_timeout=command_timeout_s,
        **client_kwargs,
    )
    return aioredis.Redis.from_pool(pool)
