"""The product's Lua scripts loaded on a test Redis, as on a server that has been serving.

Tests that count commands or round trips count the steady state. On a server that has
never run a script, the first EVALSHA of it is answered NOSCRIPT and the batcher loads
the script and sends the command again: two commands and a round trip more. Which test
is the first to run a script on the suite's shared server depends on the order the xdist
workers take them in, so such a test loads every script first (SCRIPT LOAD is
idempotent, and never flushes what another run loaded).
"""

from __future__ import annotations

import redis.asyncio as aioredis

import state.leases_redis
import state.redis
import state.redis_history
from state.redis_batch import LuaScript


def product_scripts() -> list[LuaScript]:
    """Every script the Redis state modules define (found by type, whatever its name)."""
    modules = (state.redis, state.redis_history, state.leases_redis)
    return [v for module in modules for v in vars(module).values() if isinstance(v, LuaScript)]


async def load_scripts(client: aioredis.Redis | aioredis.RedisCluster) -> None:
    """SCRIPT LOAD each of them (a Cluster's client sends it to every primary)."""
    for script in product_scripts():
        await client.script_load(script.source)
