"""Schedules in Redis, shared by every replica: the `ScheduleStore` of state/schedules.py.

Apart from state/schedules.py so that redis-py is loaded only where Redis is used.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from state import keys
from state.models import decode, encode
from state.schedules import MAX_RUNS, Run, Schedule
from state.store import StateStoreError


class RedisSchedules:
    """Schedules in Redis: one hash of documents, a `SET NX` key per claimed tick, and a
    capped list of runs per schedule (state/keys.py)."""

    def __init__(
        self, client: aioredis.Redis | aioredis.RedisCluster, *, prefix: str = keys.DEFAULT_PREFIX
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._index = keys.schedules_key(prefix)

    async def save(self, schedule: Schedule) -> None:
        blob = encode(schedule)
        await self._do("save", self._client.hset(self._index, schedule.schedule_id, blob))

    async def get(self, schedule_id: str) -> Schedule | None:
        raw = await self._do("get", self._client.hget(self._index, schedule_id))
        return None if raw is None else decode(raw, Schedule)

    async def all(self) -> list[Schedule]:
        raw = await self._do("list", self._client.hvals(self._index))
        found = [decode(blob, Schedule) for blob in raw]
        return sorted(found, key=lambda s: (s.created_at, s.schedule_id))

    async def delete(self, schedule_id: str) -> bool:
        # Two keys in two slots (the index, the schedule's runs): no MULTI on a Cluster.
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.hdel(self._index, schedule_id)
            pipe.delete(keys.schedule_runs_key(self._prefix, schedule_id))
            removed, _ = await self._do("delete", pipe.execute())
        return bool(removed)

    async def claim_tick(self, schedule_id: str, tick: float, *, ttl_s: float) -> bool:
        key = keys.schedule_tick_key(self._prefix, schedule_id, tick)
        claimed = await self._do(
            "claim_tick", self._client.set(key, "1", nx=True, px=max(1, int(ttl_s * 1000)))
        )
        return bool(claimed)

    async def record_run(self, schedule_id: str, run: Run) -> None:
        key = keys.schedule_runs_key(self._prefix, schedule_id)
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.lpush(key, encode(run))
            pipe.ltrim(key, 0, MAX_RUNS - 1)
            await self._do("record_run", pipe.execute())

    async def runs(self, schedule_id: str) -> list[Run]:
        key = keys.schedule_runs_key(self._prefix, schedule_id)
        raw = await self._do("runs", self._client.lrange(key, 0, MAX_RUNS - 1))
        return [decode(blob, Run) for blob in raw]

    async def _do(self, operation: str, awaitable: Any) -> Any:
        try:
            return await awaitable
        except RedisError as exc:
            raise StateStoreError(
                f"redis {operation} failed: {exc}", backend="redis", operation=operation
            ) from exc
