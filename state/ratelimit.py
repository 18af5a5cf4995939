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
replicas (`RedisQuotas`, state/ratelimit_redis.py, apart so that redis-py is loaded
only where Redis is used). The memory one is for the embedded store.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


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
