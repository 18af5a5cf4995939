"""`StateStore` on Redis (`redis.asyncio`, a single Redis or a Redis Cluster), shared by
every replica.

Key layout and TTL defaults live in `state.keys`; the field layout and what a save
sends in `state.layout`. Each write is one atomic Lua script on the keys of one
workflow (one hash tag, so it is legal on a Cluster), so a workflow's keys share
one expiry and a reader never sees half a transition:

- save: refuse (-1, `LeaseLost`) if the writer's lease token is not the
  workflow's current generation (when nothing of the workflow is left at all —
  Redis lost it — the owner's token becomes the generation again, so a running
  workflow survives a restart without persistence); refuse (0) if the stored
  status is terminal; ask for the whole document (-2) when only changes were sent
  and the workflow's spec is not there; otherwise write the fields sent (the
  header and the changed steps, or the compacted final document) and (re)set the
  TTL of every key of the workflow (the retention, for a finished one), and when
  a *watched* workflow ends PUBLISH its id on the finished channel. A write carries
  the events told with it too (appended after the document, as the events script
  appends them): a terminal write the run's last ones, so no command of their own
  follows the answer, and a running write those told since the last. The fence
  is checked inside the writing script: no claim can slip in between.
- cancel, pause, resume: set (or clear) the flag with the document's remaining
  TTL, then publish the id to the owner's channel only (SPUBLISH on a Cluster),
  or to the prefix's channel when nobody claimed the workflow. The flag is set
  first, so an owner woken by the message always sees it.
- the history index and Idempotency-Keys live in other slots: written by commands
  of their own (`state.redis_history`), never inside a workflow's script.

Commands issued in the same turn of the event loop (saves, reads, cancel checks,
lease claims of many workflows at once) go to Redis together, as one pipeline
on one pooled connection (`state.redis_batch.Batcher`).

Faults: `from_url` builds a client whose connect and command timeouts are
bounded (default 1 s each) on a *blocking* pool of bounded size: a burst waits
up to `pool_timeout_s` for a free connection instead of failing, and a Redis
that is down, frozen or too slow surfaces as `StateStoreError` within those
bounds, never as a hang.

Each subscription (a replica's own channel, the unclaimed-cancel channel,
finishes) holds its own pub/sub connection, read by a task that feeds a queue.
When that connection drops — or Redis was not there when the subscription
started — the task (re)connects with a short jittered backoff and, for a
replica's channel, replays the ids of the workflows listed under it (never a
scan), since Redis pub/sub drops messages published while nobody listened.

Redis errors become `StateStoreError` here and nowhere else.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from state import keys
from state.bounds import (
    DEFAULT_COMMAND_TIMEOUT_S,
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_POOL_TIMEOUT_S,
)
from state.cancellations import WorkflowIdStream
from state.connect import connect, reply_text
from state.events import EventStream, StoredEvent
from state.history import HistoryPage, HistoryQuery
from state.keys import DEFAULT_PREFIX, DEFAULT_TTL_S
from state.layout import FieldCache, WriteStats, assemble, compacted
from state.leases_redis import RedisLeases
from state.models import WorkflowState, WorkflowStatus
from state.redis_batch import Batcher, LuaScript, in_order
from state.redis_history import RedisHistory
from state.schedules_redis import RedisSchedules
from state.store import LeaseLost, StateStoreError
from state.tasks import cancel_until_done

log = structlog.get_logger(__name__)

_TERMINAL_STATUSES = tuple(s.value for s in WorkflowStatus if s.is_terminal)
_TERMINAL_LUA = ", ".join(f"['{status}'] = true" for status in _TERMINAL_STATUSES)

# How a save sends the document (ARGV[4] of _SAVE).
_WHOLE = "0"  # every field
_PARTIAL = "1"  # only the changed ones: the spec must be there already
_NEW = "new"  # every field of a new workflow: refused if anything of it exists

# Finished documents this long or longer written out are stored zlib-compressed, shorter
# ones as plain JSON: zlib cost ~30 µs of the service's CPU per chain workflow (~4 % of a
# request at 50 in flight, `bench.service_ab`) to save ~1.6 KB of its ~2.2 KB for the
# retention. Larger documents save more for a cost that is small beside their own.
_COMPRESS_FROM = 4 * 1024

# What a new workflow's first claim gives: CLAIM's HINCRBY on a fresh hash (state.leases).
FIRST_GENERATION = 1

# KEYS: `keys.refreshed_keys` (the hash, the cancel and pause flags, the event log and its
# watched flag).
# ARGV[1] the writer's lease token ("" for none), ARGV[2] status, ARGV[3] TTL seconds,
# ARGV[4] _WHOLE, _PARTIAL or _NEW (above), ARGV[5] finished channel, ARGV[6] workflow id,
# ARGV[7] owner, ARGV[8] how many events end ARGV (E), ARGV[9] the events' channel, then
# field/value pairs, then the E events' JSON. A _NEW write with a token is the workflow's
# first claim too: the token becomes its generation and ARGV[7] its owner. The events (told
# with the document) are appended as `_APPEND_EVENTS` appends them, after the
# document and only when it is written: a reader told of them finds the document written.
# Returns -1 stale token, 0 already terminal, -2 partial write of a missing document,
# -3 a new workflow's id is taken, 1 written.
_SAVE = LuaScript(f"""
local terminal = {{{_TERMINAL_LUA}}}
if ARGV[4] == '{_NEW}' and redis.call('EXISTS', KEYS[1]) == 1 then return -3 end
local stored = redis.call('HMGET', KEYS[1], '{keys.DOC_STATUS_FIELD}', '{keys.DOC_LEASE_GEN_FIELD}',
  '{keys.DOC_OWNER_FIELD}', '{keys.DOC_WATCHED_FIELD}')
if not stored[1] and not stored[2] and ARGV[1] ~= '' then
  -- Nothing of the workflow is left (Redis lost it: a restart without persistence):
  -- no newer owner's progress to protect, so its owner writes it again, fenced from now.
  redis.call('HSET', KEYS[1], '{keys.DOC_LEASE_GEN_FIELD}', ARGV[1],
    '{keys.DOC_OWNER_FIELD}', ARGV[7])
  stored[2], stored[3] = ARGV[1], ARGV[7]
elseif (stored[2] or '') ~= ARGV[1] then
  return -1
end
if stored[1] and terminal[stored[1]] then return 0 end
if ARGV[4] == '{_PARTIAL}' and redis.call('HEXISTS', KEYS[1], '{keys.DOC_SPEC_FIELD}') == 0 then
  return -2
end
if terminal[ARGV[2]] then
  -- Compaction: the per-step fields give way to the final document.
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])  -- the hash and the flags; events stay
  if stored[2] then redis.call('HSET', KEYS[1], '{keys.DOC_LEASE_GEN_FIELD}', stored[2]) end
  -- The owner's hold ends with its workflow: the ownership goes with the compaction
  -- (what the lease release that follows would drop; see RedisLeases.release).
end
local last = #ARGV
local n = last - tonumber(ARGV[8])  -- the status is the first pair (the client puts it there)
for i = 10, n, 1000 do  -- chunks: unpack() of a 10,000-step first write would overflow the stack
  redis.call('HSET', KEYS[1], unpack(ARGV, i, math.min(i + 999, n)))
end
local seq = 0
for i = n + 1, last, 1000 do
  seq = redis.call('RPUSH', KEYS[4], unpack(ARGV, i, math.min(i + 999, last)))
end
for i = 1, #KEYS do
  redis.call('EXPIRE', KEYS[i], ARGV[3])
end
if seq > 0 and redis.call('EXISTS', KEYS[5]) == 1 then
  for i = n + 1, last do
    redis.call('PUBLISH', ARGV[9], (seq - last + i) .. ' ' .. ARGV[i])
  end
end
if terminal[ARGV[2]] and stored[4] then redis.call('PUBLISH', ARGV[5], ARGV[6]) end
return 1
""")

# KEYS[1] workflow hash, KEYS[2] cancel flag.
# ARGV[1] TTL seconds when there is no document. Returns the owner ("" when none).
# Marks the workflow watched: its finish is published for the canceller's wait.
_CANCEL = LuaScript(f"""
local pttl = redis.call('PTTL', KEYS[1])
if pttl > 0 then
  redis.call('SET', KEYS[2], '{keys.CANCEL_FLAG_VALUE}', 'PX', pttl)
  redis.call('HSET', KEYS[1], '{keys.DOC_WATCHED_FIELD}', '1')
else
  redis.call('SET', KEYS[2], '{keys.CANCEL_FLAG_VALUE}', 'EX', ARGV[1])
end
return redis.call('HGET', KEYS[1], '{keys.DOC_OWNER_FIELD}') or ''
""")

# KEYS[1] an Idempotency-Key of a submit. ARGV[1] workflow id, ARGV[2] body digest, ARGV[3] TTL s.
# Returns the stored {id, digest} when the key is taken, else takes it (and returns nil).
_RESERVE = LuaScript("""
local found = redis.call('HMGET', KEYS[1], 'id', 'digest')
if found[1] then return found end
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'digest', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return nil
""")

# KEYS[1] an Idempotency-Key. ARGV[1] workflow id: drop the key only if it still names it.
_UNRESERVE = LuaScript("""
if redis.call('HGET', KEYS[1], 'id') == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
""")

# KEYS[1] workflow hash. Publish this workflow's finish (for a waiter on another replica).
_WATCH = LuaScript(f"""
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], '{keys.DOC_WATCHED_FIELD}', '1')
end
return redis.call('HGET', KEYS[1], '{keys.DOC_STATUS_FIELD}') or ''
""")

# KEYS[1] event list, KEYS[2] the workflow hash, KEYS[3] its events-watched flag.
# ARGV[1] TTL seconds (when there is no document), ARGV[2] channel, ARGV[3...] the events'
# JSON, in order. The list position is the sequence number: assigned here, atomically, for
# every replica. The log expires with the document (its retention, once the workflow
# ended). The events are published only when someone listens to them (the flag, set by
# `subscribe_events`): most workflows are never watched, and their events were most of
# the script's cost (a copy of each event and a PUBLISH). Returns the last event's number.
_APPEND_EVENTS = LuaScript("""
local n = #ARGV
local seq = 0
for i = 3, n, 1000 do  -- chunks: unpack() of thousands of events would overflow the stack
  seq = redis.call('RPUSH', KEYS[1], unpack(ARGV, i, math.min(i + 999, n)))
end
local pttl = redis.call('PTTL', KEYS[2])
if pttl > 0 then
  redis.call('PEXPIRE', KEYS[1], pttl)
else
  redis.call('EXPIRE', KEYS[1], ARGV[1])
end
if redis.call('EXISTS', KEYS[3]) == 1 then
  for i = 3, n do
    redis.call('PUBLISH', ARGV[2], (seq - n + i) .. ' ' .. ARGV[i])
  end
end
return seq
""")

# KEYS[1] workflow hash, KEYS[2] flag (pause, or events watched). ARGV[1] TTL seconds when
# there is no document. The flag expires with the document, like the cancel flag. Returns
# the owner ("" none).
_FLAG = LuaScript(f"""
local pttl = redis.call('PTTL', KEYS[1])
if pttl > 0 then
  redis.call('SET', KEYS[2], '{keys.CANCEL_FLAG_VALUE}', 'PX', pttl)
else
  redis.call('SET', KEYS[2], '{keys.CANCEL_FLAG_VALUE}', 'EX', ARGV[1])
end
return redis.call('HGET', KEYS[1], '{keys.DOC_OWNER_FIELD}') or ''
""")

# Reconnect backoff of a lost subscription: full jitter, doubling, capped.
_BACKOFF_BASE_S = 0.05
_BACKOFF_CAP_S = 2.0


class RedisStateStore:
    """The Redis-backed store (a single Redis or a Redis Cluster).

    `client` is used as given and left open by `close()` (its owner closes it);
    `from_url` builds one that `close()` does close. `prefix` namespaces every
    key and channel; `ttl_s` is how long a running workflow's keys live after its
    last write, `retention_s` how long a finished one is kept; `history_shards`
    spreads the history index over that many keys (one slot each on a Cluster);
    `ping_timeout_s` bounds the readiness probe and the wait for a subscription.
    """

    def __init__(
        self,
        client: aioredis.Redis | aioredis.RedisCluster,
        *,
        prefix: str = DEFAULT_PREFIX,
        ttl_s: int = DEFAULT_TTL_S,
        retention_s: int | None = None,
        history_shards: int | None = None,
        ping_timeout_s: float = 2.0,
    ) -> None:
        if ttl_s <= 0:
            raise ValueError(f"ttl_s must be positive, got {ttl_s}")
        self._client = client
        self._cluster = isinstance(client, aioredis.RedisCluster)
        self._prefix = prefix
        self._ttl_s = ttl_s
        self._retention_s = retention_s if retention_s is not None else ttl_s
        if self._retention_s <= 0:
            raise ValueError(f"retention_s must be positive, got {retention_s}")
        self._shards = history_shards or (
            keys.CLUSTER_HISTORY_SHARDS if self._cluster else keys.DEFAULT_HISTORY_SHARDS
        )
        self._ping_timeout_s = ping_timeout_s
        self._owns_client = False
        self._batcher = Batcher(client)
        self._leases = RedisLeases(client, prefix=prefix, ttl_s=ttl_s, batcher=self._batcher)
        self._schedule_store = RedisSchedules(client, prefix=prefix)
        self._subscriptions: set[_Subscription] = set()
        self._fields = FieldCache()
        self.write_stats = WriteStats()
        self._history = RedisHistory(
            self._batcher, prefix=prefix, shards=self._shards, ttl_s=ttl_s
        )
        self._event_subscriptions: set[_EventSubscription] = set()

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        ttl_s: int = DEFAULT_TTL_S,
        retention_s: int | None = None,
        history_shards: int | None = None,
        cluster: bool = False,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        command_timeout_s: float = DEFAULT_COMMAND_TIMEOUT_S,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        pool_timeout_s: float = DEFAULT_POOL_TIMEOUT_S,
        **client_kwargs: Any,
    ) -> RedisStateStore:
        """A store on a client of its own for `url`, which `close()` closes.

        `url` names a Redis Cluster when it starts with ``redis+cluster://`` (or
        ``rediss+cluster://``) or when `cluster` is set. Connecting and each command
        are bounded by `connect_timeout_s` and `command_timeout_s`; at most
        `max_connections` are open at once (per node on a Cluster), and a command
        waits up to `pool_timeout_s` for a free one.
        """
        client = connect(
            url,
            cluster=cluster,
            connect_timeout_s=connect_timeout_s,
            command_timeout_s=command_timeout_s,
            max_connections=max_connections,
            pool_timeout_s=pool_timeout_s,
            **client_kwargs,
        )
        store = cls(
            client,
            prefix=prefix,
            ttl_s=ttl_s,
            retention_s=retention_s,
            history_shards=history_shards,
            ping_timeout_s=command_timeout_s,
        )
        store._owns_client = True
        return store

    @property
    def ttl_s(self) -> int:
        return self._ttl_s

    @property
    def retention_s(self) -> int:
        return self._retention_s

    @property
    def backend(self) -> str:
        return "redis-cluster" if self._cluster else "redis"

    @property
    def completes_in_turn(self) -> bool:
        return False  # every operation waits on the network

    @property
    def prefix(self) -> str:
        return self._prefix

    @property
    def client(self) -> aioredis.Redis | aioredis.RedisCluster:
        return self._client

    @property
    def round_trips(self) -> int:
        """Round trips to Redis so far (pipelines and single commands): for tests and bench/."""
        return self._batcher.round_trips

    @property
    def commands_sent(self) -> int:
        """Commands sent to Redis so far (each script call is one): for tests and bench/."""
        return self._batcher.commands_sent

    def leases(self) -> RedisLeases:
        """Owner leases on the same Redis, prefix and pipeline (shared by every replica)."""
        return self._leases

    def schedules(self) -> RedisSchedules:
        """Schedules on the same Redis and prefix (shared by every replica)."""
        return self._schedule_store

    async def save(
        self,
        state: WorkflowState,
        *,
        token: int | None = None,
        events: Sequence[Mapping[str, Any]] = (),
    ) -> bool:
        workflow_id = state.workflow_id
        terminal = state.status.is_terminal
        first = not self._fields.knows(workflow_id)
        # Serialised before the first await: what is sent is the state of this instant.
        changes = None if terminal else self._fields.changes(state)
        fields = (
            compacted(state, compress_from=_COMPRESS_FROM) if changes is None else changes.fields
        )
        mode = _WHOLE if terminal or first else _PARTIAL
        try:  # (not `_translate`: a context manager per save costs ~1.6 µs; see there)
            write = self._write(state, fields, token, mode=mode, events=events)
            indexed = self._index(state) if first or terminal else None
            if indexed is None:
                written = await write
            else:
                written, _ = await in_order(write, indexed)
            if written == -2:  # the document expired (or another replica wrote it): send it whole
                changes = self._fields.changes(state, full=True)
                fields = changes.fields
                written = await self._write(state, fields, token, mode=_WHOLE, events=events)
        except (RedisError, OSError) as exc:
            raise _store_error("save", workflow_id, exc) from exc
        if written == -1:
            self._fields.forget(workflow_id)
            raise LeaseLost(workflow_id, token=token)
        if terminal and written == 1 and token is not None:
            self._leases.ended(workflow_id)  # its ownership went with the write
        self.write_stats.add(fields)
        if changes is None:
            self._fields.forget(workflow_id)
        else:
            self._fields.remember(changes)
        return bool(written == 1)

    async def accept(self, state: WorkflowState, *, lease_s: float | None = None) -> int | None:
        workflow_id = state.workflow_id
        changes = self._fields.changes(state, full=True)
        token = None
        try:  # (not `_translate`: see there)
            listed: Awaitable[Any] | None = None
            if lease_s is not None:
                if not state.owner:
                    raise ValueError("a claimed workflow needs its owner on the state")
                token = FIRST_GENERATION
                listed = await self._leases.listing(workflow_id, state.owner, lease_s=lease_s)
            write = self._write(state, changes.fields, token, mode=_NEW)
            indexed = self._index(state)
            assert indexed is not None  # (a running workflow's first write always lists it)
            if listed is None:
                written, _ = await in_order(write, indexed)
            else:
                written, _, _ = await in_order(write, listed, indexed)
            if written != 1 and token is not None and state.owner:
                owned = keys.replica_workflows_key(self._prefix, state.owner)
                await self._batcher.call(("SREM", owned, workflow_id))
        except (RedisError, OSError) as exc:
            raise _store_error("accept", workflow_id, exc) from exc
        if written != 1:
            raise LeaseLost(workflow_id, token=token)
        self.write_stats.add(changes.fields)
        self._fields.remember(changes)
        return token

    def _index(self, state: WorkflowState) -> Awaitable[Any] | None:
        """Queue the history index writes (and a finished workflow's submit key expiry):
        other slots, so commands of their own, in the round trip of the document write
        queued just before them. None when there is nothing to send (a workflow that ends
        soon after its first write is indexed once: `state.redis_history`).

        They are sent whether or not that write is taken: an entry (or a submit key's
        expiry) for a document another writer holds is what that writer sends too, and
        no entry outlives its document (a history page drops it).
        """
        terminal = state.status.is_terminal
        indexed = self._history.index(state, terminal=terminal, retention_s=self._retention_s)
        if not (terminal and state.submit_key is not None):
            return indexed  # (no gather of one: a wrapper, and a task when it is a coroutine)
        key = keys.submit_key(self._prefix, state.tenant, state.submit_key)
        expiry = self._batcher.call(("EXPIRE", key, self._retention_s))
        return expiry if indexed is None else in_order(indexed, expiry)

    def _write(
        self,
        state: WorkflowState,
        fields: dict[str, bytes],
        token: int | None,
        *,
        mode: str,
        events: Sequence[Mapping[str, Any]] = (),
    ) -> Awaitable[Any]:
        """Queue the save script now (`_SAVE` says what it answers); await the reply."""
        workflow_id = state.workflow_id
        terminal = state.status.is_terminal
        args: list[Any] = [
            "" if token is None else str(token),
            state.status.value,
            self._retention_s if terminal else self._ttl_s,
            mode,
            keys.finished_channel(self._prefix),
            workflow_id,
            state.owner or "",
            len(events),
            keys.events_channel(self._prefix, workflow_id) if events else "",
            keys.DOC_STATUS_FIELD,
            state.status.value,
        ]
        for name, value in fields.items():
            args += (name, value)
        if events:
            args += map(orjson.dumps, events)
        script_keys = keys.refreshed_keys(self._prefix, workflow_id)
        return self._batcher.eval(_SAVE, script_keys, args)

    async def get(self, workflow_id: str) -> WorkflowState | None:
        key = keys.workflow_key(self._prefix, workflow_id)
        try:  # (not `_translate`: see there)
            raw = await self._batcher.call(("HGETALL", key))
        except (RedisError, OSError) as exc:
            raise _store_error("get", workflow_id, exc) from exc
        return assemble({reply_text(k): v for k, v in raw.items()}) if raw else None

    async def request_cancel(self, workflow_id: str) -> None:
        script_keys = keys.refreshed_keys(self._prefix, workflow_id)
        async with self._translate("request_cancel", workflow_id):
            owner = reply_text(await self._batcher.eval(_CANCEL, script_keys[:2], (self._ttl_s,)))
            await self._notify_owner(owner, workflow_id)

    async def _notify_owner(self, owner: str, workflow_id: str) -> None:
        """To the owner only; a workflow nobody claimed (no leases) goes to everyone."""
        if owner:
            channel = keys.replica_cancel_channel(self._prefix, owner)
            publish = "SPUBLISH" if self._cluster else "PUBLISH"
            await self._batcher.call((publish, channel, workflow_id))
        else:
            channel = keys.cancel_channel(self._prefix)
            await self._batcher.call(("PUBLISH", channel, workflow_id))

    async def watch_finish(self, workflow_id: str) -> None:
        key = keys.workflow_key(self._prefix, workflow_id)
        async with self._translate("watch_finish", workflow_id):
            await self._batcher.eval(_WATCH, (key,), ())

    async def cancel_requested(self, workflow_id: str) -> bool:
        key = keys.cancel_flag_key(self._prefix, workflow_id)
        try:  # (not `_translate`: see there)
            found = await self._batcher.call(("EXISTS", key))
        except (RedisError, OSError) as exc:
            raise _store_error("cancel_requested", workflow_id, exc) from exc
        return bool(found)

    async def set_pause(self, workflow_id: str, paused: bool) -> None:
        flag = keys.pause_flag_key(self._prefix, workflow_id)
        doc = keys.workflow_key(self._prefix, workflow_id)
        async with self._translate("set_pause", workflow_id):
            if paused:
                owner = reply_text(await self._batcher.eval(_FLAG, (doc, flag), (self._ttl_s,)))
            else:
                await self._batcher.call(("DEL", flag))
                owner = reply_text(await self._batcher.call(("HGET", doc, keys.DOC_OWNER_FIELD)))
            await self._notify_owner(owner, workflow_id)

    async def pause_requested(self, workflow_id: str) -> bool:
        key = keys.pause_flag_key(self._prefix, workflow_id)
        try:  # (not `_translate`: see there)
            found = await self._batcher.call(("EXISTS", key))
        except (RedisError, OSError) as exc:
            raise _store_error("pause_requested", workflow_id, exc) from exc
        return bool(found)

    async def subscribe_cancellations(self, owner: str | None = None) -> WorkflowIdStream:
        channels = [_Channel(keys.cancel_channel(self._prefix), sharded=False)]
        if owner is not None:
            channels.append(
                _Channel(keys.replica_cancel_channel(self._prefix, owner), sharded=self._cluster)
            )

        async def replay(queue: asyncio.Queue[str | None]) -> None:
            if owner is not None:
                await self._replay_cancel_flags(owner, queue)

        return await self._subscribe(channels, replay)

    async def subscribe_finishes(self) -> WorkflowIdStream:
        return await self._subscribe(
            [_Channel(keys.finished_channel(self._prefix), sharded=False)], None
        )

    async def _subscribe(
        self, channels: list[_Channel], replay: _Replay | None
    ) -> WorkflowIdStream:
        subscriptions = [
            _Subscription(self._client, channel, replay if i == len(channels) - 1 else None,
                          self._ping_timeout_s)
            for i, channel in enumerate(channels)
        ]
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        for subscription in subscriptions:
            subscription.queue = queue
            await subscription.start()
            self._subscriptions.add(subscription)

        async def release() -> None:
            for subscription in subscriptions:
                self._subscriptions.discard(subscription)
                await subscription.stop(end=False)
            queue.put_nowait(None)

        return WorkflowIdStream(queue, release)

    async def _replay_cancel_flags(self, owner: str, queue: asyncio.Queue[str | None]) -> None:
        # Only this replica's own workflows, listed under it: no keyspace scan. All of
        # them, not only those with a flag standing: a resume (a flag cleared) may have
        # been missed too, and the owner reads the flags of each.
        members = await self._batcher.call(
            ("SMEMBERS", keys.replica_workflows_key(self._prefix, owner))
        )
        for workflow_id in sorted(reply_text(m) for m in members):
            queue.put_nowait(workflow_id)

    async def history(self, query: HistoryQuery) -> HistoryPage:
        async with self._translate("history"):
            return await self._history.page(query)

    async def reserve_submit(
        self, tenant: str | None, idempotency_key: str, *, workflow_id: str, digest: str
    ) -> tuple[str, str] | None:
        key = keys.submit_key(self._prefix, tenant, idempotency_key)
        async with self._translate("reserve_submit", workflow_id):
            found = await self._batcher.eval(
                _RESERVE, (key,), (workflow_id, digest, self._ttl_s)
            )
        if not found:
            return None
        return reply_text(found[0]), reply_text(found[1])

    async def release_submit(
        self, tenant: str | None, idempotency_key: str, *, workflow_id: str
    ) -> None:
        key = keys.submit_key(self._prefix, tenant, idempotency_key)
        async with self._translate("release_submit", workflow_id):
            await self._batcher.eval(_UNRESERVE, (key,), (workflow_id,))

    async def append_event(self, workflow_id: str, event: Mapping[str, Any]) -> int:
        return await self.append_events(workflow_id, [event])

    async def append_events(self, workflow_id: str, events: Sequence[Mapping[str, Any]]) -> int:
        if not events:
            raise ValueError("append_events needs at least one event")
        args = (
            self._ttl_s,
            keys.events_channel(self._prefix, workflow_id),
            *(orjson.dumps(event) for event in events),
        )
        # Through the batcher: a turn's events and document writes share one round trip.
        try:  # (not `_translate`: see there)
            seq = await self._batcher.eval(
                _APPEND_EVENTS,
                (
                    keys.events_key(self._prefix, workflow_id),
                    keys.workflow_key(self._prefix, workflow_id),
                    keys.events_watched_key(self._prefix, workflow_id),
                ),
                args,
            )
        except (RedisError, OSError) as exc:
            raise _store_error("append_events", workflow_id, exc) from exc
        return int(seq)

    async def events_since(self, workflow_id: str, after: int = 0) -> list[StoredEvent]:
        start = max(after, 0)
        key = keys.events_key(self._prefix, workflow_id)
        async with self._translate("events_since", workflow_id):
            blobs = await self._batcher.call(("LRANGE", key, start, -1))
        return [(start + i + 1, orjson.loads(blob)) for i, blob in enumerate(blobs)]

    async def subscribe_events(self, workflow_id: str) -> EventStream:
        subscription = _EventSubscription(
            self._client, keys.events_channel(self._prefix, workflow_id), self._ping_timeout_s
        )
        async with self._translate("subscribe_events", workflow_id):
            await subscription.start()
            try:
                # Watched from now on: appends publish to this workflow's channel. Set once
                # the SUBSCRIBE is live and before the caller reads the log, so each event
                # is either published to this subscription or in the log read next.
                await self._batcher.eval(
                    _FLAG,
                    (
                        keys.workflow_key(self._prefix, workflow_id),
                        keys.events_watched_key(self._prefix, workflow_id),
                    ),
                    (self._ttl_s,),
                )
            except BaseException:
                await subscription.stop()
                raise
        self._event_subscriptions.add(subscription)

        async def release() -> None:
            self._event_subscriptions.discard(subscription)
            await subscription.stop()

        return EventStream(subscription.queue, release)

    async def ping(self) -> bool:
        try:
            async with asyncio.timeout(self._ping_timeout_s):
                return bool(await self._client.ping())
        except (RedisError, OSError):  # OSError covers TimeoutError
            return False

    async def close(self) -> None:
        subscriptions, self._subscriptions = self._subscriptions, set()
        for subscription in subscriptions:
            await subscription.stop()
        event_subscriptions, self._event_subscriptions = self._event_subscriptions, set()
        for event_subscription in event_subscriptions:
            await event_subscription.stop()
        try:
            await self._leases.flush()  # the finished workflows its releases left listed
        except StateStoreError as exc:
            # Left listed: whoever reaps this replica finds them finished and skips them.
            log.warning("unlisting_failed", error=str(exc))
        await self._batcher.release()
        if self._owns_client:
            await self._client.aclose()

    @asynccontextmanager
    async def _translate(
        self, operation: str, workflow_id: str | None = None
    ) -> AsyncIterator[None]:
        """Redis errors inside become `StateStoreError`. For the rarer operations: one
        per workflow or more (a save, an accept, an event append, a flag check, a status
        read) spell it out as try/except with `_store_error`, as a context manager costs
        a generator and three calls each time (~1.6 µs, ~8 µs a chain workflow)."""
        try:
            yield
        except (RedisError, OSError) as exc:
            raise _store_error(operation, workflow_id, exc) from exc


def _store_error(operation: str, workflow_id: str | None, exc: Exception) -> StateStoreError:
    return StateStoreError(
        f"redis {operation} failed: {exc}",
        backend="redis",
        operation=operation,
        workflow_id=workflow_id,
    )


# Puts the ids that should have been published while nobody listened on the queue.
_Replay = Callable[[asyncio.Queue[str | None]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class _Channel:
    name: str
    # A sharded channel (SSUBSCRIBE/SPUBLISH): on a Cluster it lives on one shard only.
    sharded: bool


class _Subscription:
    """One SUBSCRIBE (or SSUBSCRIBE) on its own connection, pumped into `queue` by a task.

    `queue` gets workflow ids, then None once the subscription is stopped. When
    Redis is unreachable at `start`, the task keeps trying in the background.
    """

    def __init__(
        self,
        client: aioredis.Redis | aioredis.RedisCluster,
        channel: _Channel,
        replay: _Replay | None,
        confirm_timeout_s: float,
    ) -> None:
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._client = client
        self._channel = channel.name
        self._sharded = channel.sharded
        self._kinds = ("ssubscribe", "smessage") if channel.sharded else ("subscribe", "message")
        self._replay = replay
        self._confirm_timeout_s = confirm_timeout_s
        self._pubsub: Any = None
        self._task: asyncio.Task[None] | None = None
        # Set by stop() before it cancels the pump. On Python 3.11 TimeoutError is an
        # OSError, and a cancel that lands inside one of redis-py's own timeouts can
        # surface as one: the reconnect loop must not take that for a lost connection
        # and go on forever while stop() waits for it.
        self._stopping = False

    async def start(self) -> None:
        try:
            self._pubsub = await self._subscribe()
        except (RedisError, OSError) as exc:
            # Redis is away: start anyway, the pump connects (and replays) once it is back.
            log.warning("subscription_deferred", channel=self._channel, error=repr(exc))
        self._task = asyncio.create_task(self._pump(), name=f"subscription:{self._channel}")

    async def stop(self, *, end: bool = True) -> None:
        self._stopping = True
        task, self._task = self._task, None
        if task is not None:
            await cancel_until_done(task)
        await self._close_pubsub()
        if end:
            self.queue.put_nowait(None)

    async def _subscribe(self) -> Any:
        if isinstance(self._client, aioredis.RedisCluster):
            # Its pub/sub finds a channel's node in the slot table: load it first.
            await self._client.initialize()
        pubsub: Any = self._client.pubsub()
        try:
            async with asyncio.timeout(self._confirm_timeout_s):
                if self._sharded:
                    await pubsub.ssubscribe(self._channel)
                else:
                    await pubsub.subscribe(self._channel)
                while not _is_type(await self._next_message(pubsub), self._kinds[0]):
                    pass
        except BaseException:
            await pubsub.aclose()
            raise
        return pubsub

    async def _pump(self) -> None:
        try:
            await self._pump_until_cancelled()
        except Exception:
            # A bug, not a lost connection: say so loudly and end the stream rather
            # than leave its reader waiting forever.
            log.exception("subscription_failed", channel=self._channel)
            self.queue.put_nowait(None)

    async def _pump_until_cancelled(self) -> None:
        attempt = 0
        while not self._stopping:
            try:
                if self._pubsub is None:
                    self._pubsub = await self._subscribe()
                    await self._replay_missed()
                attempt = 0
                await self._forward(self._pubsub)
            except (RedisError, OSError) as exc:
                if self._stopping:
                    return
                await self._close_pubsub()
                delay = random.uniform(0, min(_BACKOFF_CAP_S, _BACKOFF_BASE_S * 2**attempt))
                attempt += 1
                log.warning(
                    "subscription_lost",
                    channel=self._channel,
                    error=repr(exc),
                    retry_in_s=round(delay, 3),
                )
                await asyncio.sleep(delay)

    async def _next_message(self, pubsub: Any) -> dict[str, Any] | None:
        if self._sharded:
            message: dict[str, Any] | None = await pubsub.get_sharded_message(timeout=None)
        else:
            message = await pubsub.get_message(timeout=None)
        return message

    async def _forward(self, pubsub: Any) -> None:
        # Not `while True`: a stop() whose cancel was lost (see state/tasks.py) while
        # the pump (re)subscribed ends here rather than in a read that may never return.
        while not self._stopping:
            message = await self._next_message(pubsub)
            if _is_type(message, self._kinds[1]):
                assert message is not None
                self.queue.put_nowait(reply_text(message["data"]))
            elif _is_type(message, self._kinds[0]):
                # redis-py reconnected and re-subscribed by itself: anything
                # published in between is lost, so replay what can be replayed.
                await self._replay_missed()

    async def _replay_missed(self) -> None:
        if self._replay is not None:
            await self._replay(self.queue)

    async def _close_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            await pubsub.aclose()


class _EventSubscription:
    """One workflow's event channel on its own connection, pumped into `queue`.

    Unlike the cancel subscription it does not reconnect: a lost connection ends
    the stream (None on the queue) and the reader resumes from the event log, as
    an SSE client does with `Last-Event-ID`.
    """

    def __init__(
        self,
        client: aioredis.Redis | aioredis.RedisCluster,
        channel: str,
        confirm_timeout_s: float,
    ) -> None:
        self.queue: asyncio.Queue[StoredEvent | None] = asyncio.Queue()
        self._client = client
        self._channel = channel
        self._confirm_timeout_s = confirm_timeout_s
        self._pubsub: Any = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if isinstance(self._client, aioredis.RedisCluster):
            await self._client.initialize()  # its pub/sub needs the slot table
        pubsub: Any = self._client.pubsub()
        try:
            async with asyncio.timeout(self._confirm_timeout_s):
                await pubsub.subscribe(self._channel)
                while not _is_type(await pubsub.get_message(timeout=None), "subscribe"):
                    pass
        except BaseException:
            await pubsub.aclose()
            raise
        self._pubsub = pubsub
        self._task = asyncio.create_task(self._pump(pubsub), name=f"events:{self._channel}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await cancel_until_done(task)
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            await pubsub.aclose()
        self.queue.put_nowait(None)

    async def _pump(self, pubsub: Any) -> None:
        try:
            while True:
                message = await pubsub.get_message(timeout=None)
                if _is_type(message, "message"):
                    assert message is not None
                    seq, _, blob = reply_text(message["data"]).partition(" ")
                    self.queue.put_nowait((int(seq), orjson.loads(blob)))
        except (RedisError, OSError) as exc:
            log.warning("event_subscription_lost", channel=self._channel, error=repr(exc))
        except Exception:
            log.exception("event_subscription_failed", channel=self._channel)
        self.queue.put_nowait(None)


def _is_type(message: dict[str, Any] | None, kind: str) -> bool:
    return message is not None and message.get("type") == kind


