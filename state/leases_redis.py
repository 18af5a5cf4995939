"""Owner leases on Redis: the `LeaseStore` contract of state/leases.py, shared by replicas.

Ownership and the lease generation live in the workflow's hash, heartbeats in one
sorted set, each replica's workflows in a set of its own; every step that must be
atomic is one Lua script.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from state import keys
from state.connect import reply_text
from state.leases import Orphan
from state.redis_batch import Batcher, LuaScript, in_order
from state.store import StateStoreError

_GEN = keys.DOC_LEASE_GEN_FIELD
_OWNER = keys.DOC_OWNER_FIELD

# KEYS[1] the workflow hash. ARGV[1] owner, ARGV[2] previous owner ("" none), ARGV[3] TTL s.
# Returns the new generation, 0 when someone else owns it, -1 when the caller already does.
_CLAIM = LuaScript(f"""
local holder = redis.call('HGET', KEYS[1], '{_OWNER}')
if holder == ARGV[1] then return -1 end
if holder and holder ~= '' and holder ~= ARGV[2] then return 0 end
local gen = redis.call('HINCRBY', KEYS[1], '{_GEN}', 1)
redis.call('HSET', KEYS[1], '{_OWNER}', ARGV[1])
if redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ARGV[3]) end
return gen
""")

# KEYS[1] replicas, KEYS[2] dead replicas. ARGV[1] replica, ARGV[2] lease ms,
# ARGV[3] 1 = a heartbeat (clears a death, reports it), 0 = a claim (extends only the living),
# ARGV[4] TTL s: a deployment where nobody beat that long leaves no table behind.
# Returns 1 when the replica was alive, 0 when it had been declared dead (or never beat).
_BEAT = LuaScript("""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local dead = redis.call('ZSCORE', KEYS[2], ARGV[1])
local known = ARGV[3] == '0' or redis.call('ZSCORE', KEYS[1], ARGV[1])
if ARGV[3] == '0' and dead then return 0 end
if ARGV[3] == '1' and dead then redis.call('ZREM', KEYS[2], ARGV[1]) end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[4])
if dead or (ARGV[3] == '1' and not known) then return 0 end
return 1
""")

# KEYS[1] replicas, KEYS[2] dead, KEYS[3] reaping. ARGV[1] reservation ms, ARGV[2] how long
# a death is remembered (ms). Declares lapsed replicas dead and reserves for the caller
# those nobody is reaping (or whose reaper's reservation lapsed); returns them.
_REAP = LuaScript("""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local died = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
for _, r in ipairs(died) do
  redis.call('ZREM', KEYS[1], r)
  redis.call('ZADD', KEYS[2], now, r)
  redis.call('ZADD', KEYS[3], 0, r)
end
local mine = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)
if #died > 0 or #mine > 0 then
  -- Only when someone died: a quiet reconcile is two reads.
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[2]))
  for _, r in ipairs(mine) do
    redis.call('ZADD', KEYS[3], now + tonumber(ARGV[1]), r)
  end
  redis.call('EXPIRE', KEYS[2], ARGV[2] / 1000)
  redis.call('EXPIRE', KEYS[3], ARGV[2] / 1000)
end
return mine
""")

# KEYS[1] the workflow hash. ARGV[1] owner, ARGV[2] its token, ARGV[3] TTL s.
# After a death (or a lost heartbeat table): is the workflow still ours? A workflow Redis
# lost entirely (no hash) is taken back under the same token. Returns 1 ours, 0 not.
_RECLAIM = LuaScript(f"""
local stored = redis.call('HMGET', KEYS[1], '{_OWNER}', '{_GEN}')
if not stored[1] and not stored[2] and redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], '{_OWNER}', ARGV[1], '{_GEN}', ARGV[2])
  redis.call('EXPIRE', KEYS[1], ARGV[3])
  return 1
end
if stored[1] == ARGV[1] and stored[2] == ARGV[2] then return 1 end
return 0
""")

# KEYS[1] a replica's list. ARGV[1] the list's TTL (s), ARGV[2] how many ids of finished
# workflows to unlist follow (F: their releases since the last listing, `release`), then
# those F ids, then the ids of the workflows to list: one or more (the claims of one turn
# share one listing, `Batcher.eval_joined`).
_LIST = LuaScript("""
local f = tonumber(ARGV[2])
redis.call('SADD', KEYS[1], unpack(ARGV, 3 + f))
if f > 0 then redis.call('SREM', KEYS[1], unpack(ARGV, 3, 2 + f)) end
return redis.call('EXPIRE', KEYS[1], ARGV[1])
""")

# KEYS[1] the workflow hash. ARGV[1] owner. Drop the ownership only if it is ours.
_RELEASE = LuaScript(f"""
if redis.call('HGET', KEYS[1], '{_OWNER}') == ARGV[1] then
  redis.call('HDEL', KEYS[1], '{_OWNER}')
  return 1
end
return 0
""")


class RedisLeases:
    """Ownership in the workflow hash; heartbeats in one sorted set; a list per replica.

    `ttl_s` is the TTL of the workflow's keys (the generation lives as long as the
    document) and of the replica lists. Commands go through `batcher` (the store's).

    A claim keeps its owner alive too (`listing`), unless a beat of that owner that
    Redis confirmed less than a third of the lease ago already does: then the owner
    is alive for two thirds of a lease still, as long as the heartbeat keeps it, and a
    burst of claims costs no beat each (one command of five per accepted workflow).
    `clock` is monotonic seconds (tests pass a fake).
    """

    def __init__(
        self,
        client: aioredis.Redis | aioredis.RedisCluster,
        *,
        prefix: str = keys.DEFAULT_PREFIX,
        ttl_s: int = keys.DEFAULT_TTL_S,
        batcher: Batcher | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._prefix = prefix
        self._clock = clock
        # Per owner: until when (clock) its last beat Redis confirmed keeps it alive,
        # counted from before that beat was sent, so never later than Redis holds it.
        self._alive_until: dict[str, float] = {}
        self._ttl_s = ttl_s
        self._batcher = batcher if batcher is not None else Batcher(client)
        self._cluster = isinstance(client, aioredis.RedisCluster)
        self._replicas = (keys.replicas_key(prefix), keys.dead_replicas_key(prefix))
        # Workflows whose terminal write (the store's, on this batcher) dropped their
        # ownership already: their release only unlists them. Insertion-ordered, bounded:
        # one forgotten (never released, or past the bound) costs a full release, no more.
        self._ended: dict[str, None] = {}
        # Per owner: finished workflows released (`release` after `ended`) and still listed.
        # Their unlisting rides on the owner's next listing (a claim's script) or beat: no
        # command of its own per workflow. A finished workflow listed meanwhile is harmless:
        # a reaper skips it (its document is terminal), a replay reads its flags for nothing.
        self._unlisting: dict[str, list[str]] = {}

    async def claim(
        self, workflow_id: str, owner: str, *, lease_s: float, previous: str | None = None
    ) -> int | None:
        try:
            # Listed before owned: a crash in between leaves a stale list entry (skipped
            # when examined), never an owned workflow nobody would find.
            listed = await self.listing(workflow_id, owner, lease_s=lease_s)
            claimed = self._batcher.eval(
                _CLAIM,
                (keys.workflow_key(self._prefix, workflow_id),),
                (owner, previous or "", self._ttl_s),
            )
            token, _ = await asyncio.gather(claimed, listed)
            if token == 0:
                await self._batcher.call(
                    ("SREM", keys.replica_workflows_key(self._prefix, owner), workflow_id)
                )
        except (RedisError, OSError) as exc:
            raise _error("claim", workflow_id, exc) from exc
        return int(token) if token > 0 else None

    async def listing(self, workflow_id: str, owner: str, *, lease_s: float) -> Awaitable[Any]:
        """Queue what a claim does besides taking the workflow's hash: list the workflow
        under `owner` and keep `owner` alive (a replica's first claim may come before
        its first heartbeat). Returns what to await for their replies, after the claim itself.

        On one Redis the commands queued next (the claim) go in the same round trip,
        after these, in order. On a Cluster they live in other slots, on other nodes,
        where one pipeline gives no order: there they are answered before this returns.
        """
        listed = keys.replica_workflows_key(self._prefix, owner)
        # (Unlisted even if this listing fails: left listed, they are skipped as above.)
        finished = self._unlisting.pop(owner, ())
        head = (self._ttl_s, len(finished), *finished)
        replies: Awaitable[Any]
        if finished:
            # (Its own command: the unlisting goes in the middle of the arguments.)
            replies = self._batcher.eval(_LIST, (listed,), (*head, workflow_id))
        else:
            # One listing for this turn's claims of `owner`, where the first one was queued
            # (before every claim of the turn: listed first, as each claim needs).
            replies = self._batcher.eval_joined(
                _LIST, (listed,), head, (workflow_id,), join=(_LIST.sha, listed)
            )
        if self._alive_until.get(owner, 0.0) - self._clock() <= lease_s * 2 / 3:
            # (Only then a gather: most claims need no beat, and one reply needs no wrapper.)
            replies = asyncio.gather(replies, self._beat(owner, lease_s, heartbeat=False))
        if self._cluster:
            await replies
        return replies

    async def renew(self, held: Mapping[str, int], owner: str, *, lease_s: float) -> set[str]:
        try:
            unlisted = self._unlist(owner)  # in the beat's round trip
            beat = self._beat(owner, lease_s, heartbeat=True)
            # (in_order: the unlisting's reply is read even when the beat fails.)
            alive = await beat if unlisted is None else (await in_order(beat, unlisted))[0]
            if alive or not held:
                return set(held)
            # Declared dead since the last beat: keep only what nobody took over. One
            # whose terminal write (fenced by its token) went through is finished, its
            # ownership dropped (`ended`): nothing to take over, its housekeeping is ours.
            finished = {wid for wid in held if wid in self._ended}
            ids = [wid for wid in held if wid not in finished]
            ours = await asyncio.gather(
                *(
                    self._batcher.eval(
                        _RECLAIM,
                        (keys.workflow_key(self._prefix, wid),),
                        (owner, held[wid], self._ttl_s),
                    )
                    for wid in ids
                )
            )
            kept = finished | {wid for wid, mine in zip(ids, ours, strict=True) if mine}
            if kept:  # listed again (the list may have been lost with the rest)
                listed = keys.replica_workflows_key(self._prefix, owner)
                await self._batcher.call(("SADD", listed, *sorted(kept)))
                await self._batcher.call(("EXPIRE", listed, self._ttl_s))
        except (RedisError, OSError) as exc:
            raise _error("renew", None, exc) from exc
        return kept

    def _beat(self, owner: str, lease_s: float, *, heartbeat: bool) -> asyncio.Future[int]:
        """Queue a beat now (in this turn's pipeline); awaiting it gives `_BEAT`'s answer
        (1 alive, 0 not), noted before any awaiting caller resumes."""
        sent = self._clock()
        args = (owner, _ms(lease_s), 1 if heartbeat else 0, self._ttl_s)
        reply = self._batcher.eval(_BEAT, self._replicas, args)

        def note(done: asyncio.Future[int]) -> None:
            # A callback, not a coroutine to await: a gather over a claim's replies
            # then wraps none of them in a task.
            if done.cancelled() or done.exception() is not None:
                return
            if done.result():
                self._alive_until[owner] = max(self._alive_until.get(owner, 0.0), sent + lease_s)
            else:
                self._alive_until.pop(owner, None)

        reply.add_done_callback(note)
        return reply

    def ended(self, workflow_id: str) -> None:
        """The store's terminal write of `workflow_id` (fenced by its owner's token)
        dropped the ownership from its hash, as `_RELEASE` would: its release then only
        unlists it, one script less per finished workflow."""
        self._ended[workflow_id] = None
        if len(self._ended) > _ENDED_BOUND:
            del self._ended[next(iter(self._ended))]

    async def release(self, workflow_id: str, owner: str) -> None:
        try:
            if self._ended.pop(workflow_id, _NOT_ENDED) is None:
                # Owned no more since its terminal write (`ended`): only the list is left,
                # for the owner's next listing or beat to drop (`_unlisting`). (No key
                # made for that: most finished workflows send nothing here.)
                finished = self._unlisting.setdefault(owner, [])
                finished.append(workflow_id)
                if len(finished) >= _UNLIST_BOUND:
                    # (Taken off before the await: releases meanwhile start a new list.)
                    listed = keys.replica_workflows_key(self._prefix, owner)
                    await self._batcher.call(("SREM", listed, *self._unlisting.pop(owner)))
                return
            unlisting = ("SREM", keys.replica_workflows_key(self._prefix, owner), workflow_id)
            # Owned, then unlisted (never the other way round): in order, in one round trip
            # on one Redis; on a Cluster (other slots, other nodes) one after the other.
            released = self._batcher.eval(
                _RELEASE, (keys.workflow_key(self._prefix, workflow_id),), (owner,)
            )
            if self._cluster:
                await released
            await in_order(released, self._batcher.call(unlisting))
        except (RedisError, OSError) as exc:
            raise _error("release", workflow_id, exc) from exc

    def _unlist(self, owner: str) -> Awaitable[Any] | None:
        """Queue the unlisting of `owner`'s finished workflows (None: there are none)."""
        finished = self._unlisting.pop(owner, None)
        if not finished:
            return None
        return self._batcher.call(
            ("SREM", keys.replica_workflows_key(self._prefix, owner), *finished)
        )

    async def flush(self) -> None:
        """Unlist every finished workflow released so far (the store's `close`)."""
        try:
            await in_order(*filter(None, map(self._unlist, list(self._unlisting))))
        except (RedisError, OSError) as exc:
            raise _error("flush", None, exc) from exc

    async def orphans(self, *, lease_s: float = keys.DEFAULT_LEASE_S) -> list[Orphan]:
        try:
            reaped = await self._batcher.eval(
                _REAP,
                (*self._replicas, keys.reaping_key(self._prefix)),
                (_ms(lease_s), self._ttl_s * 1000),
            )
            found: list[Orphan] = []
            for raw in reaped:
                dead = reply_text(raw)
                members = await self._batcher.call(
                    ("SMEMBERS", keys.replica_workflows_key(self._prefix, dead))
                )
                if not members:
                    await self.bury(dead)  # it owned nothing: nothing to resume
                found += [Orphan(wid, dead) for wid in sorted(reply_text(m) for m in members)]
        except (RedisError, OSError) as exc:
            raise _error("orphans", None, exc) from exc
        return found

    async def bury(self, dead: str) -> None:
        try:
            await self._batcher.call(("DEL", keys.replica_workflows_key(self._prefix, dead)))
            await self._batcher.call(("ZREM", keys.reaping_key(self._prefix), dead))
        except (RedisError, OSError) as exc:
            raise _error("bury", None, exc) from exc


# Workflows `RedisLeases.ended` remembers until their release (the running ones of a
# busy replica, with room to spare).
_ENDED_BOUND = 10_000
_NOT_ENDED = object()
# Finished workflows a release leaves for the next listing or beat to unlist, at most
# (then unlisted at once): one command's worth, far from Lua's unpack() limit.
_UNLIST_BOUND = 1000


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))



def _error(operation: str, workflow_id: str | None, exc: Exception) -> StateStoreError:
    return StateStoreError(
        f"redis lease {operation} failed: {exc}",
        backend="redis",
        operation=f"lease_{operation}",
        workflow_id=workflow_id,
    )
