"""Owner leases: how a replica says "I am running this workflow", and how others notice it died.

Contract (both implementations, one test suite in tests/state/test_leases.py):

- `claim` takes the lease of a workflow for `owner` if nobody holds it (or the
  holder's lease has expired) and lists the workflow in the running index.
- `renew` extends the leases `owner` still holds, re-takes those that lapsed
  with nobody claiming them (a late heartbeat is not a death), and returns
  exactly those; a lease another replica took over is not renewed and not
  returned, so the old owner learns it lost the workflow and must stop writing it.
- `release` drops the lease if `owner` holds it and unlists the workflow.
- `orphans` lists workflows in the running index whose lease has expired: their
  owner stopped heartbeating. Whoever then `claim`s one resumes it.

A lease lives `lease_s` seconds unless renewed; the owner renews well before
(the engine every `lease_s / 3`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from typing import Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from state import keys
from state.store import StateStoreError


class LeaseStore(Protocol):
    async def claim(self, workflow_id: str, owner: str, *, lease_s: float) -> bool: ...

    async def renew(
        self, workflow_ids: Collection[str], owner: str, *, lease_s: float
    ) -> set[str]: ...

    async def release(self, workflow_id: str, owner: str) -> None: ...

    async def orphans(self) -> list[str]: ...


class MemoryLeases:
    """Leases for the embedded store: one process, so they only guard against our own bugs."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._leases: dict[str, tuple[str, float]] = {}
        self._running: set[str] = set()

    def _holder(self, workflow_id: str) -> str | None:
        lease = self._leases.get(workflow_id)
        if lease is None or lease[1] <= self._clock():
            return None
        return lease[0]

    async def claim(self, workflow_id: str, owner: str, *, lease_s: float) -> bool:
        if self._holder(workflow_id) is not None:
            return False
        self._leases[workflow_id] = (owner, self._clock() + lease_s)
        self._running.add(workflow_id)
        return True

    async def renew(
        self, workflow_ids: Collection[str], owner: str, *, lease_s: float
    ) -> set[str]:
        held = {wid for wid in workflow_ids if self._holder(wid) in (owner, None)}
        for wid in held:
            self._leases[wid] = (owner, self._clock() + lease_s)
        return held

    async def release(self, workflow_id: str, owner: str) -> None:
        holder = self._holder(workflow_id)
        if holder is None or holder == owner:
            self._leases.pop(workflow_id, None)
            self._running.discard(workflow_id)

    async def orphans(self) -> list[str]:
        return sorted(wid for wid in self._running if self._holder(wid) is None)


# Renew the leases this owner holds or that nobody holds: one round trip for all.
_RENEW = """
local held = {}
for i, key in ipairs(KEYS) do
  local holder = redis.call('GET', key)
  if holder == ARGV[1] or holder == false then
    redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
    table.insert(held, i)
  end
end
return held
"""

# Drop the lease only if it is ours (a replica that lost it must not free the new owner's).
_RELEASE = """
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""


class RedisLeases:
    """Leases as `SET NX PX` keys, plus a set of running workflow ids to scan for orphans."""

    def __init__(self, client: aioredis.Redis, *, prefix: str = keys.DEFAULT_PREFIX) -> None:
        self._client = client
        self._prefix = prefix
        self._running_key = keys.running_index_key(prefix)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    async def claim(self, workflow_id: str, owner: str, *, lease_s: float) -> bool:
        key = keys.lease_key(self._prefix, workflow_id)
        try:
            taken = await self._client.set(key, owner, nx=True, px=_ms(lease_s))
            if taken:
                await self._client.sadd(self._running_key, workflow_id)
        except RedisError as exc:
            raise _error("claim", workflow_id, exc) from exc
        return bool(taken)

    async def renew(
        self, workflow_ids: Collection[str], owner: str, *, lease_s: float
    ) -> set[str]:
        ids = list(workflow_ids)
        if not ids:
            return set()
        lease_keys = [keys.lease_key(self._prefix, wid) for wid in ids]
        try:
            held = await self._renew(keys=lease_keys, args=[owner, _ms(lease_s)])
        except RedisError as exc:
            raise _error("renew", None, exc) from exc
        return {ids[int(i) - 1] for i in held}

    async def release(self, workflow_id: str, owner: str) -> None:
        key = keys.lease_key(self._prefix, workflow_id)
        try:
            if await self._release(keys=[key], args=[owner]):
                await self._client.srem(self._running_key, workflow_id)
        except RedisError as exc:
            raise _error("release", workflow_id, exc) from exc

    async def orphans(self) -> list[str]:
        try:
            members = sorted(
                m.decode() if isinstance(m, bytes) else str(m)
                for m in await self._client.smembers(self._running_key)
            )
            if not members:
                return []
            async with self._client.pipeline(transaction=False) as pipe:
                for wid in members:
                    pipe.exists(keys.lease_key(self._prefix, wid))
                alive = await pipe.execute()
        except RedisError as exc:
            raise _error("orphans", None, exc) from exc
        return [wid for wid, live in zip(members, alive, strict=True) if not live]


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _error(operation: str, workflow_id: str | None, exc: Exception) -> StateStoreError:
    return StateStoreError(
        f"redis lease {operation} failed: {exc}",
        backend="redis",
        operation=f"lease_{operation}",
        workflow_id=workflow_id,
    )
