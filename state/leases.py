"""Owner leases: how a replica says "I am running this workflow", and how others notice it died.

Contract (both implementations, one test suite in tests/state/test_leases.py):

- `claim` takes the lease of a workflow for `owner` if nobody holds it (or the
  holder's lease has expired), bumps the workflow's lease generation and lists
  the workflow in the running index — all in one atomic operation, so a crash
  can never leave a lease that is not listed (and so never found again). It
  returns the new generation: the owner's fencing token, which every write of
  the document then carries (`StateStore.save(..., token=)`); None when the
  lease is held by someone else.
- `renew` extends the leases `owner` still holds, re-takes those that lapsed
  with nobody claiming them since (the generation is still the owner's token: a
  late heartbeat is not a death), and returns exactly those; a lease another
  replica took over is not renewed and not returned, so the old owner learns it
  lost the workflow and must stop writing it (the store would refuse anyway).
  A workflow the backend lost entirely (no generation, no lease) is taken back
  under the same token and listed again.
- `release` drops the lease if `owner` holds it and unlists the workflow.
- `orphans` lists workflows in the running index whose lease has expired: their
  owner stopped heartbeating. Whoever then `claim`s one resumes it.

A lease lives `lease_s` seconds unless renewed; the owner renews well before
(the engine every `lease_s / 3`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from state import keys
from state.redis_batch import Batcher, LuaScript
from state.store import StateStoreError


class LeaseStore(Protocol):
    async def claim(self, workflow_id: str, owner: str, *, lease_s: float) -> int | None:
        """Take the lease; the new generation (fencing token), or None if someone holds it."""
        ...

    async def renew(
        self, held: Mapping[str, int], owner: str, *, lease_s: float
    ) -> set[str]:
        """Extend the leases in `held` (workflow id -> token) still ours; returns those."""
        ...

    async def release(self, workflow_id: str, owner: str) -> None: ...

    async def orphans(self) -> list[str]: ...


class MemoryLeases:
    """Leases for the embedded store: one process, so they only guard against our own bugs.

    The memory store reads `generation()` to fence its saves.
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._leases: dict[str, tuple[str, float]] = {}
        self._running: set[str] = set()
        self._generations: dict[str, int] = {}

    def _holder(self, workflow_id: str) -> str | None:
        lease = self._leases.get(workflow_id)
        if lease is None or lease[1] <= self._clock():
            return None
        return lease[0]

    def generation(self, workflow_id: str) -> int | None:
        """The current fencing token of `workflow_id` (None: never claimed)."""
        return self._generations.get(workflow_id)

    def forget(self, workflow_id: str) -> None:
        """The workflow's document expired: drop its generation unless a lease is live."""
        if self._holder(workflow_id) is None:
            self._generations.pop(workflow_id, None)
            self._leases.pop(workflow_id, None)
            self._running.discard(workflow_id)

    async def claim(self, workflow_id: str, owner: str, *, lease_s: float) -> int | None:
        if self._holder(workflow_id) is not None:
            return None
        token = self._generations.get(workflow_id, 0) + 1
        self._generations[workflow_id] = token
        self._leases[workflow_id] = (owner, self._clock() + lease_s)
        self._running.add(workflow_id)
        return token

    async def renew(
        self, held: Mapping[str, int], owner: str, *, lease_s: float
    ) -> set[str]:
        kept: set[str] = set()
        for wid, token in held.items():
            holder = self._holder(wid)
            if holder is None and wid not in self._generations:
                self._generations[wid] = token  # everything was lost: take it back
            if holder in (owner, None) and self._generations.get(wid) == token:
                self._leases[wid] = (owner, self._clock() + lease_s)
                self._running.add(wid)
                kept.add(wid)
        return kept

    def restore(self, workflow_id: str, token: int) -> bool:
        """For the store's save: nothing of the workflow is left, so `token` is current again."""
        if workflow_id in self._generations or self._holder(workflow_id) is not None:
            return False
        self._generations[workflow_id] = token
        return True

    async def release(self, workflow_id: str, owner: str) -> None:
        holder = self._holder(workflow_id)
        if holder is None or holder == owner:
            self._leases.pop(workflow_id, None)
            self._running.discard(workflow_id)

    async def orphans(self) -> list[str]:
        return sorted(wid for wid in self._running if self._holder(wid) is None)


_GEN = keys.DOC_LEASE_GEN_FIELD

# KEYS[1] lease, KEYS[2] document hash (holds the generation), KEYS[3] running index.
# ARGV[1] owner, ARGV[2] lease ms, ARGV[3] TTL seconds of the workflow's keys, ARGV[4] id.
# Returns the new generation, or 0 when the lease is held.
_CLAIM = LuaScript(f"""
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local gen = redis.call('HINCRBY', KEYS[2], '{_GEN}', 1)
if redis.call('TTL', KEYS[2]) < 0 then redis.call('EXPIRE', KEYS[2], ARGV[3]) end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SADD', KEYS[3], ARGV[4])
redis.call('EXPIRE', KEYS[3], ARGV[3])
return gen
""")

# KEYS: the running index, then (lease, document) pairs. ARGV[1] owner, ARGV[2] lease ms,
# ARGV[3] TTL seconds, then (token, workflow id) per pair: pair k at ARGV[2 + 2k], ARGV[3 + 2k].
# Renew the leases this owner holds, or that lapsed with its token still current; a
# workflow Redis lost entirely (no document hash) is taken back under the same token
# and listed again, so it can still be found if this owner dies later.
_RENEW = LuaScript(f"""
local held = {{}}
for i = 2, #KEYS, 2 do
  local k = i / 2
  local token, id = ARGV[2 + 2 * k], ARGV[3 + 2 * k]
  local holder = redis.call('GET', KEYS[i])
  local gen = redis.call('HGET', KEYS[i + 1], '{_GEN}')
  if gen == false and holder == false and redis.call('EXISTS', KEYS[i + 1]) == 0 then
    redis.call('HSET', KEYS[i + 1], '{_GEN}', token)
    redis.call('EXPIRE', KEYS[i + 1], ARGV[3])
    gen = token
  end
  if (holder == ARGV[1] or holder == false) and gen == token then
    redis.call('SET', KEYS[i], ARGV[1], 'PX', ARGV[2])
    redis.call('SADD', KEYS[1], id)
    table.insert(held, k)
  end
end
if #held > 0 then redis.call('EXPIRE', KEYS[1], ARGV[3]) end
return held
""")

# KEYS[1] lease, KEYS[2] running index. ARGV[1] owner, ARGV[2] workflow id.
# Drop the lease only if it is ours (a replica that lost it must not free the new owner's).
_RELEASE = LuaScript("""
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('SREM', KEYS[2], ARGV[2])
  return 1
end
return 0
""")


class RedisLeases:
    """Leases as keys with a PX expiry, a generation in the document hash, and a running index.

    `ttl_s` is the TTL of the workflow's keys (the generation lives as long as the
    document). Commands go through `batcher` (the store's) when given.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = keys.DEFAULT_PREFIX,
        ttl_s: int = keys.DEFAULT_TTL_S,
        batcher: Batcher | None = None,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._ttl_s = ttl_s
        self._running_key = keys.running_index_key(prefix)
        self._batcher = batcher if batcher is not None else Batcher(client)

    async def claim(self, workflow_id: str, owner: str, *, lease_s: float) -> int | None:
        script_keys = (
            keys.lease_key(self._prefix, workflow_id),
            keys.workflow_key(self._prefix, workflow_id),
            self._running_key,
        )
        try:
            token = await self._batcher.eval(
                _CLAIM, script_keys, (owner, _ms(lease_s), self._ttl_s, workflow_id)
            )
        except (RedisError, OSError) as exc:
            raise _error("claim", workflow_id, exc) from exc
        return int(token) or None

    async def renew(
        self, held: Mapping[str, int], owner: str, *, lease_s: float
    ) -> set[str]:
        ids = list(held)
        if not ids:
            return set()
        script_keys = [self._running_key]
        for wid in ids:
            script_keys += [
                keys.lease_key(self._prefix, wid),
                keys.workflow_key(self._prefix, wid),
            ]
        args: list[str | int] = [owner, _ms(lease_s), self._ttl_s]
        for wid in ids:
            args += [held[wid], wid]
        try:
            kept = await self._batcher.eval(_RENEW, script_keys, args)
        except (RedisError, OSError) as exc:
            raise _error("renew", None, exc) from exc
        return {ids[int(i) - 1] for i in kept}

    async def release(self, workflow_id: str, owner: str) -> None:
        script_keys = (keys.lease_key(self._prefix, workflow_id), self._running_key)
        try:
            await self._batcher.eval(_RELEASE, script_keys, (owner, workflow_id))
        except (RedisError, OSError) as exc:
            raise _error("release", workflow_id, exc) from exc

    async def orphans(self) -> list[str]:
        try:
            members = sorted(
                m.decode() if isinstance(m, bytes) else str(m)
                for m in await self._batcher.call(("SMEMBERS", self._running_key))
            )
            if not members:
                return []
            # Issued in one turn: one pipeline, one round trip.
            alive = await asyncio.gather(
                *(self._batcher.call(("EXISTS", keys.lease_key(self._prefix, w))) for w in members)
            )
        except (RedisError, OSError) as exc:
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
