"""`StateStore` on Redis (`redis.asyncio`), shared by every replica.

Key layout and TTL defaults live in `state.keys`. Each write is one atomic
Lua script, so a workflow's keys share one expiry and a reader never sees
half a transition:

- save: refuse (-1, `LeaseLost`) if the writer's lease token is not the
  workflow's current generation (when nothing of the workflow is left at all —
  Redis lost it — the owner's token becomes the generation again, so a running
  workflow survives a restart without persistence); refuse (0) if the stored
  status is terminal;
  otherwise write the document and (re)set the TTL of every key of the
  workflow, and when the new status is terminal PUBLISH the id on the
  prefix's finished channel. The fence is checked inside the writing script:
  no claim can slip in between the check and the write.
- cancel: set the flag with the document's remaining TTL (or `ttl_s` when there
  is no document), then PUBLISH the id on the prefix's cancel channel. The flag
  is set first, so a subscriber woken by the message always sees it.

Commands issued in the same turn of the event loop (saves, reads, cancel checks,
lease claims of many workflows at once) go to Redis together, as one pipeline
on one pooled connection (`state.redis_batch.Batcher`).

Faults: `from_url` builds a client whose connect and command timeouts are
bounded (default 1 s each) on a *blocking* pool of bounded size: a burst waits
up to `pool_timeout_s` for a free connection instead of failing, and a Redis
that is down, frozen or too slow surfaces as `StateStoreError` within those
bounds, never as a hang.

Each subscription (cancellations, finishes) holds its own pub/sub connection,
read by a task that feeds a queue. When that connection drops — or Redis was
not there when the subscription started — the task (re)connects with a short
jittered backoff and, for cancellations, replays every standing cancel flag,
since Redis pub/sub drops messages published while nobody listened.

Redis errors become `StateStoreError` here and nowhere else.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import orjson
import redis.asyncio as aioredis
import structlog
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from state import keys
from state.cancellations import WorkflowIdStream
from state.connect import connect
from state.events import EventStream, StoredEvent
from state.keys import DEFAULT_PREFIX, DEFAULT_TTL_S
from state.leases import RedisLeases
from state.models import WorkflowState, WorkflowStatus
from state.redis_batch import Batcher, LuaScript
from state.schedules import RedisSchedules
from state.store import LeaseLost, StateStoreError

log = structlog.get_logger(__name__)

_TERMINAL_STATUSES = tuple(s.value for s in WorkflowStatus if s.is_terminal)
_TERMINAL_LUA = ", ".join(f"['{status}'] = true" for status in _TERMINAL_STATUSES)

# KEYS[1] document hash, KEYS[2..] keys sharing its TTL.
# ARGV[1] document JSON, ARGV[2] its status, ARGV[3] TTL seconds,
# ARGV[4] the writer's lease token ("" for none), ARGV[5] finished channel, ARGV[6] id.
_SAVE = LuaScript(f"""
local terminal = {{{_TERMINAL_LUA}}}
local stored = redis.call('HMGET', KEYS[1], '{keys.DOC_STATUS_FIELD}', '{keys.DOC_LEASE_GEN_FIELD}')
if not stored[1] and not stored[2] and ARGV[4] ~= '' then
  -- Nothing of the workflow is left (Redis lost it: a restart without persistence):
  -- no newer owner's progress to protect, so its owner writes it again, fenced from now.
  redis.call('HSET', KEYS[1], '{keys.DOC_LEASE_GEN_FIELD}', ARGV[4])
elseif (stored[2] or '') ~= ARGV[4] then
  return -1
end
if stored[1] and terminal[stored[1]] then return 0 end
redis.call('HSET', KEYS[1], '{keys.DOC_JSON_FIELD}', ARGV[1], '{keys.DOC_STATUS_FIELD}', ARGV[2])
for i = 1, #KEYS do
  redis.call('EXPIRE', KEYS[i], ARGV[3])
end
if terminal[ARGV[2]] then redis.call('PUBLISH', ARGV[5], ARGV[6]) end
return 1
""")

# KEYS[1] document hash, KEYS[2] cancel flag.
# ARGV[1] TTL seconds when there is no document, ARGV[2] channel, ARGV[3] workflow id.
_CANCEL = LuaScript(f"""
local pttl = redis.call('PTTL', KEYS[1])
if pttl > 0 then
  redis.call('SET', KEYS[2], '{keys.CANCEL_FLAG_VALUE}', 'PX', pttl)
else
  redis.call('SET', KEYS[2], '{keys.CANCEL_FLAG_VALUE}', 'EX', ARGV[1])
end
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1
""")

# KEYS[1] event list. ARGV[1] event JSON, ARGV[2] TTL seconds, ARGV[3] channel.
# The list position is the sequence number: assigned here, atomically, for every replica.
_APPEND_EVENT = LuaScript("""
local seq = redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('PUBLISH', ARGV[3], seq .. ' ' .. ARGV[1])
return seq
""")

# KEYS[1] document hash, KEYS[2] flag. ARGV[1] TTL seconds when there is no document.
# The flag expires with the document, like the cancel flag.
_FLAG = LuaScript(f"""
local pttl = redis.call('PTTL', KEYS[1])
if pttl > 0 then
  redis.call('SET', KEYS[2], '{keys.CANCEL_FLAG_VALUE}', 'PX', pttl)
else
  redis.call('SET', KEYS[2], '{keys.CANCEL_FLAG_VALUE}', 'EX', ARGV[1])
end
return 1
""")

# Reconnect backoff of a lost subscription: full jitter, doubling, capped.
_BACKOFF_BASE_S = 0.05
_BACKOFF_CAP_S = 2.0


class RedisStateStore:
    """The Redis-backed store.

    `client` is used as given and left open by `close()` (its owner closes it);
    `from_url` builds one that `close()` does close. `prefix` namespaces every
    key and channel; `ttl_s` is how long a workflow's keys live after its last
    write; `ping_timeout_s` bounds the readiness probe and the wait for a
    subscription to be confirmed.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = DEFAULT_PREFIX,
        ttl_s: int = DEFAULT_TTL_S,
        ping_timeout_s: float = 2.0,
    ) -> None:
        if ttl_s <= 0:
            raise ValueError(f"ttl_s must be positive, got {ttl_s}")
        self._client = client
        self._prefix = prefix
        self._ttl_s = ttl_s
        self._ping_timeout_s = ping_timeout_s
        self._owns_client = False
        self._batcher = Batcher(client)
        self._leases = RedisLeases(client, prefix=prefix, ttl_s=ttl_s, batcher=self._batcher)
        self._schedule_store = RedisSchedules(client, prefix=prefix)
        self._subscriptions: set[_Subscription] = set()
        self._event_subscriptions: set[_EventSubscription] = set()

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        ttl_s: int = DEFAULT_TTL_S,
        connect_timeout_s: float = 1.0,
        command_timeout_s: float = 1.0,
        max_connections: int = 64,
        pool_timeout_s: float = 2.0,
        **client_kwargs: Any,
    ) -> RedisStateStore:
        """A store on a client of its own for `url`, which `close()` closes.

        Connecting and each command are bounded by `connect_timeout_s` and
        `command_timeout_s`; at most `max_connections` are open at once (pub/sub
        included), and a command waits up to `pool_timeout_s` for a free one.
        `client_kwargs` go to the connection pool (e.g. `client_name`).
        """
        client = connect(
            url,
            connect_timeout_s=connect_timeout_s,
            command_timeout_s=command_timeout_s,
            max_connections=max_connections,
            pool_timeout_s=pool_timeout_s,
            **client_kwargs,
        )
        store = cls(client, prefix=prefix, ttl_s=ttl_s, ping_timeout_s=command_timeout_s)
        store._owns_client = True
        return store

    @property
    def ttl_s(self) -> int:
        return self._ttl_s

    @property
    def backend(self) -> str:
        return "redis"

    @property
    def prefix(self) -> str:
        return self._prefix

    def leases(self) -> RedisLeases:
        """Owner leases on the same Redis, prefix and pipeline (shared by every replica)."""
        return self._leases

    def schedules(self) -> RedisSchedules:
        """Schedules on the same Redis and prefix (shared by every replica)."""
        return self._schedule_store

    async def save(self, state: WorkflowState, *, token: int | None = None) -> bool:
        workflow_id = state.workflow_id
        blob = orjson.dumps(state.to_dict())
        args = (
            blob,
            state.status.value,
            self._ttl_s,
            "" if token is None else str(token),
            keys.finished_channel(self._prefix),
            workflow_id,
        )
        async with self._translate("save", workflow_id):
            written = await self._batcher.eval(
                _SAVE, keys.refreshed_keys(self._prefix, workflow_id), args
            )
        if written == -1:
            raise LeaseLost(workflow_id, token=token)
        return bool(written)

    async def get(self, workflow_id: str) -> WorkflowState | None:
        key = keys.workflow_key(self._prefix, workflow_id)
        async with self._translate("get", workflow_id):
            raw = await self._batcher.call(("HGET", key, keys.DOC_JSON_FIELD))
        if raw is None:
            return None
        return WorkflowState.from_dict(orjson.loads(raw))

    async def request_cancel(self, workflow_id: str) -> None:
        script_keys = (
            keys.workflow_key(self._prefix, workflow_id),
            keys.cancel_flag_key(self._prefix, workflow_id),
        )
        args = (self._ttl_s, keys.cancel_channel(self._prefix), workflow_id)
        async with self._translate("request_cancel", workflow_id):
            await self._batcher.eval(_CANCEL, script_keys, args)

    async def cancel_requested(self, workflow_id: str) -> bool:
        key = keys.cancel_flag_key(self._prefix, workflow_id)
        async with self._translate("cancel_requested", workflow_id):
            found = await self._batcher.call(("EXISTS", key))
        return bool(found)

    async def set_pause(self, workflow_id: str, paused: bool) -> None:
        flag = keys.pause_flag_key(self._prefix, workflow_id)
        async with self._translate("set_pause", workflow_id):
            if not paused:
                await self._batcher.call(("DEL", flag))
                return
            script_keys = (keys.workflow_key(self._prefix, workflow_id), flag)
            await self._batcher.eval(_FLAG, script_keys, (self._ttl_s,))

    async def pause_requested(self, workflow_id: str) -> bool:
        key = keys.pause_flag_key(self._prefix, workflow_id)
        async with self._translate("pause_requested", workflow_id):
            found = await self._batcher.call(("EXISTS", key))
        return bool(found)

    async def subscribe_cancellations(self) -> WorkflowIdStream:
        return await self._subscribe(keys.cancel_channel(self._prefix), self._replay_cancel_flags)

    async def subscribe_finishes(self) -> WorkflowIdStream:
        return await self._subscribe(keys.finished_channel(self._prefix), None)

    async def _subscribe(self, channel: str, replay: _Replay | None) -> WorkflowIdStream:
        subscription = _Subscription(self._client, channel, replay, self._ping_timeout_s)
        await subscription.start()
        self._subscriptions.add(subscription)

        async def release() -> None:
            self._subscriptions.discard(subscription)
            await subscription.stop()

        return WorkflowIdStream(subscription.queue, release)

    async def _replay_cancel_flags(self, queue: asyncio.Queue[str | None]) -> None:
        pattern = keys.cancel_flag_pattern(self._prefix)
        async for key in self._client.scan_iter(match=pattern, count=1000):
            queue.put_nowait(keys.workflow_id_of_cancel_flag(self._prefix, _text(key)))

    async def append_event(self, workflow_id: str, event: Mapping[str, Any]) -> int:
        blob = orjson.dumps(event)
        args = (blob, self._ttl_s, keys.events_channel(self._prefix, workflow_id))
        # Through the batcher: a turn's events and document writes share one round trip.
        async with self._translate("append_event", workflow_id):
            seq = await self._batcher.eval(
                _APPEND_EVENT, (keys.events_key(self._prefix, workflow_id),), args
            )
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
        await self._batcher.drain()
        if self._owns_client:
            await self._client.aclose()

    @asynccontextmanager
    async def _translate(
        self, operation: str, workflow_id: str | None = None
    ) -> AsyncIterator[None]:
        try:
            yield
        except (RedisError, OSError) as exc:
            raise StateStoreError(
                f"redis {operation} failed: {exc}",
                backend="redis",
                operation=operation,
                workflow_id=workflow_id,
            ) from exc


# Puts the ids that should have been published while nobody listened on the queue.
_Replay = Callable[[asyncio.Queue[str | None]], Awaitable[None]]


class _Subscription:
    """One SUBSCRIBE on its own connection, pumped into `queue` by a task.

    `queue` gets workflow ids, then None once the subscription is stopped. When
    Redis is unreachable at `start`, the task keeps trying in the background.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        channel: str,
        replay: _Replay | None,
        confirm_timeout_s: float,
    ) -> None:
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._client = client
        self._channel = channel
        self._replay = replay
        self._confirm_timeout_s = confirm_timeout_s
        self._pubsub: PubSub | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        try:
            self._pubsub = await self._subscribe()
        except (RedisError, OSError) as exc:
            # Redis is away: start anyway, the pump connects (and replays) once it is back.
            log.warning("subscription_deferred", channel=self._channel, error=repr(exc))
        self._task = asyncio.create_task(self._pump(), name=f"subscription:{self._channel}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            # wait() rather than awaiting the task: a cancellation of *our* caller
            # still propagates, the task's own CancelledError does not.
            await asyncio.wait([task])
        await self._close_pubsub()
        self.queue.put_nowait(None)

    async def _subscribe(self) -> PubSub:
        pubsub = self._client.pubsub()
        try:
            async with asyncio.timeout(self._confirm_timeout_s):
                await pubsub.subscribe(self._channel)
                while not _is_type(await pubsub.get_message(timeout=None), "subscribe"):
                    pass
        except BaseException:
            await pubsub.aclose()  # type: ignore[no-untyped-call]  # untyped in redis-py
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
        while True:
            try:
                if self._pubsub is None:
                    self._pubsub = await self._subscribe()
                    await self._replay_missed()
                attempt = 0
                await self._forward(self._pubsub)
            except (RedisError, OSError) as exc:
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

    async def _forward(self, pubsub: PubSub) -> None:
        while True:
            message = await pubsub.get_message(timeout=None)
            if _is_type(message, "message"):
                assert message is not None
                self.queue.put_nowait(_text(message["data"]))
            elif _is_type(message, "subscribe"):
                # redis-py reconnected and re-subscribed by itself: anything
                # published in between is lost, so replay what can be replayed.
                await self._replay_missed()

    async def _replay_missed(self) -> None:
        if self._replay is not None:
            await self._replay(self.queue)

    async def _close_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            await pubsub.aclose()  # type: ignore[no-untyped-call]  # untyped in redis-py


class _EventSubscription:
    """One workflow's event channel on its own connection, pumped into `queue`.

    Unlike the cancel subscription it does not reconnect: a lost connection ends
    the stream (None on the queue) and the reader resumes from the event log, as
    an SSE client does with `Last-Event-ID`.
    """

    def __init__(self, client: aioredis.Redis, channel: str, confirm_timeout_s: float) -> None:
        self.queue: asyncio.Queue[StoredEvent | None] = asyncio.Queue()
        self._client = client
        self._channel = channel
        self._confirm_timeout_s = confirm_timeout_s
        self._pubsub: PubSub | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        pubsub = self._client.pubsub()
        try:
            async with asyncio.timeout(self._confirm_timeout_s):
                await pubsub.subscribe(self._channel)
                while not _is_type(await pubsub.get_message(timeout=None), "subscribe"):
                    pass
        except BaseException:
            await pubsub.aclose()  # type: ignore[no-untyped-call]  # untyped in redis-py
            raise
        self._pubsub = pubsub
        self._task = asyncio.create_task(self._pump(pubsub), name=f"events:{self._channel}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            await pubsub.aclose()  # type: ignore[no-untyped-call]  # untyped in redis-py
        self.queue.put_nowait(None)

    async def _pump(self, pubsub: PubSub) -> None:
        try:
            while True:
                message = await pubsub.get_message(timeout=None)
                if _is_type(message, "message"):
                    assert message is not None
                    seq, _, blob = _text(message["data"]).partition(" ")
                    self.queue.put_nowait((int(seq), orjson.loads(blob)))
        except (RedisError, OSError) as exc:
            log.warning("event_subscription_lost", channel=self._channel, error=repr(exc))
        except Exception:
            log.exception("event_subscription_failed", channel=self._channel)
        self.queue.put_nowait(None)


def _is_type(message: dict[str, Any] | None, kind: str) -> bool:
    return message is not None and message.get("type") == kind


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
