"""Quotas on Redis, shared by every replica: the `Quotas` of state/ratelimit.py.

Each operation is one Lua script (atomic on one key, so it also runs on a Cluster).
Apart from state/ratelimit.py so that redis-py is loaded only where Redis is used.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from state import keys
from state.connect import connect
from state.keys import DEFAULT_PREFIX
from state.store import StateStoreError

# KEYS[1] the bucket hash. ARGV[1] rate per second, ARGV[2] burst.
# Returns the wait in seconds as a string ("0" when a token was spent): Lua numbers
# come back from Redis truncated to integers.
_TAKE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local stored = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(stored[1])
local ts = tonumber(stored[2])
if tokens == nil or ts == nil then
  tokens = burst
  ts = now
end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return tostring(wait)
"""

# KEYS[1] the pool's sorted set. ARGV[1] limit, ARGV[2] ttl ms, ARGV[3] member.
_ACQUIRE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local ttl = tonumber(ARGV[2])
if not redis.call('ZSCORE', KEYS[1], ARGV[3]) then
  if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[3])
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
return 1
"""


class RedisQuotas:
    """Quotas shared by every replica on one Redis (one atomic step per operation)."""

    def __init__(
        self, client: aioredis.Redis | aioredis.RedisCluster, *, prefix: str = DEFAULT_PREFIX
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._take = client.register_script(_TAKE_LUA)
        self._acquire = client.register_script(_ACQUIRE_LUA)

    @classmethod
    def from_url(cls, url: str, *, prefix: str = DEFAULT_PREFIX) -> RedisQuotas:
        return cls(connect(url), prefix=prefix)

    async def take(self, bucket: str, *, rate: float, burst: int) -> float:
        key = keys.rate_bucket_key(self._prefix, bucket)
        raw = await self._call("take", self._take, [key], [repr(float(rate)), burst])
        return max(0.0, float(raw))

    async def acquire(self, pool: str, member: str, *, limit: int, ttl_s: float) -> bool:
        key = keys.slots_key(self._prefix, pool)
        ttl_ms = max(1, int(ttl_s * 1000))
        return bool(await self._call("acquire", self._acquire, [key], [limit, ttl_ms, member]))

    async def release(self, pool: str, member: str) -> None:
        key = keys.slots_key(self._prefix, pool)
        try:
            await self._client.zrem(key, member)
        except RedisError as exc:
            raise self._error("release", exc) from exc

    async def close(self) -> None:
        await self._client.aclose()

    async def _call(
        self, operation: str, script: Any, script_keys: list[str], args: list[Any]
    ) -> Any:
        try:
            return await script(keys=script_keys, args=args)
        except RedisError as exc:
            raise self._error(operation, exc) from exc

    @staticmethod
    def _error(operation: str, exc: RedisError) -> StateStoreError:
        return StateStoreError(
            f"redis {operation} failed: {exc}", backend="redis", operation=operation
        )
