"""One way to open a Redis client with bounded waits, for every part that talks to Redis.

The state store, the shared breaker board and the access layer (keys, quotas) all
reach the same Redis; each must fail fast when it is down or frozen rather than hang a
request, so every client is built here with the same connect, command and pool bounds
(DESIGN.md "Redis faults").
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis


def connect(
    url: str,
    *,
    connect_timeout_s: float = 1.0,
    command_timeout_s: float = 1.0,
    max_connections: int = 64,
    pool_timeout_s: float = 2.0,
    **client_kwargs: Any,
) -> aioredis.Redis:
    """A client for `url` whose connecting, commands and pool waits are all bounded.

    At most `max_connections` are open at once (pub/sub included); a command waits
    up to `pool_timeout_s` for a free one instead of failing at once when a burst
    has them all. `client_kwargs` go to the connection pool (e.g. `client_name`).
    """
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=pool_timeout_s,
        socket_connect_timeout=connect_timeout_s,
        socket_timeout=command_timeout_s,
        **client_kwargs,
    )
    return aioredis.Redis.from_pool(pool)
