"""Token buckets and counted slots: the `Quotas` behind rate limits and in-flight caps.

Contract (tests/state/test_quotas_contract.py runs one suite against both):

- `take(bucket, rate=r, burst=b)` spends one token of a bucket that holds at most
  `b` tokens and refills `r` per second (a new bucket starts full). It returns 0.0
  when a token was spent, else the seconds until one will be there (nothing spent).
- `acquire(pool, member, limit=n, ttl_s=t)` adds `member` to `pool` unless the pool
  already holds `n` live members; a member lives until `release`d or `t` seconds
  pass (so a replica that died does not hold slots for ever). True when added.
- `release(pool, member)` removes it; releasing an absent member does nothing.
- Backend failures raise `StateStoreError`.

The Redis implementation runs each operation atomically on one key (`take` and
`acquire` as Lua scripts, `release` as one ZREM) and reads the clock with Redis
`TIME`, so every replica sees one bucket and one clock: a limit holds across
replicas. The memory one is for the embedded store.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from state import keys
from state.connect import connect
from state.keys import DEFAULT_PREFIX
from state.store import StateStoreError


class Quotas(Protocol):
    async def take(self, bucket: str, *, rate: float, burst: int) -> float:
        """Spend a token; 0.0 if spent, else seconds until one is available."""
        ...

    async def acquire(self, pool: str, member: str, *, limit: int, ttl_s: float) -> bool:
        """Hold a slot of `pool` (at most `limit` live members); False when full."""
        ...

    async def release(self, pool: str, member: str) -> None: ...

    async def close(self) -> None: ...


@dataclass(slots=True)
class _Bucket:
    tokens: float
    ts: float


class MemoryQuotas:
    """Quotas of one process (the embedded store). `clock` is injectable for tests."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._slots: dict[str, dict[str, float]] = {}

    async def take(self, bucket: str, *, rate: float, burst: int) -> float:
        now = self._clock()
        state = self._buckets.get(bucket)
        if state is None:
            state = self._buckets[bucket] = _Bucket(tokens=float(burst), ts=now)
        state.tokens = min(float(burst), state.tokens + max(0.0, now - state.ts) * rate)
        state.ts = now
        if state.tokens >= 1.0:
            state.tokens -= 1.0
            return 0.0
        return (1.0 - state.tokens) / rate

    async def acquire(self, pool: str, member: str, *, limit: int, ttl_s: float) -> bool:
        now = self._clock()
        members = self._slots.setdefault(pool, {})
        for name in [m for m, expires in members.items() if expires <= now]:
            del members[name]
        if member not in members and len(members) >= limit:
            return False
        members[member] = now + ttl_s
        return True

    async def release(self, pool: str, member: str) -> None:
        members = self._slots.get(pool)
        if members is not None:
            members.pop(member, None)
            if not members:
                del self._slots[pool]

    async def close(self) -> None:
        return None


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

    def __init__(self, client: aioredis.Redis, *, prefix: str = DEFAULT_PREFIX) -> None:
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
