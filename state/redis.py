"""`StateStore` on Redis (`redis.asyncio`), shared by every replica.

Key layout and TTL defaults live in `state.keys`. Each write is one atomic
Lua script, so a workflow's keys share one expiry and a reader never sees
half a transition:

- save: refuse if the stored status is terminal; otherwise write the document
  and (re)set the TTL of every key of the workflow.
- cancel: set the flag with the document's remaining TTL (or `ttl_s` when there
  is no document), then PUBLISH the id on the prefix's cancel channel. The flag
  is set first, so a subscriber woken by the message always sees it.

Commands issued in the same turn of the event loop (saves, reads, cancel checks
of many workflows at once) go to Redis together, as one pipeline on one pooled
connection (`_Batcher`); a command issued alone goes as itself.

Each cancellation subscription holds its own pub/sub connection, read by a
task that feeds a queue. When that connection drops, the task reconnects with
a short jittered backoff and replays every standing cancel flag, since Redis
pub/sub drops messages published while nobody listened.

Redis errors become `StateStoreError` here and nowhere else.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import random
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import orjson
import redis.asyncio as aioredis
import structlog
from redis.asyncio.client import PubSub
from redis.exceptions import NoScriptError, RedisError

from state import keys
from state.cancellations import CancellationStream
from state.events import EventStream, StoredEvent
from state.keys import DEFAULT_PREFIX, DEFAULT_TTL_S
from state.leases import RedisLeases
from state.models import WorkflowState, WorkflowStatus
from state.store import StateStoreError

log = structlog.get_logger(__name__)

_TERMINAL_STATUSES = tuple(s.value for s in WorkflowStatus if s.is_terminal)
_TERMINAL_LUA = ", ".join(f"['{status}'] = true" for status in _TERMINAL_STATUSES)

# KEYS[1] document hash, KEYS[2..] keys sharing its TTL.
# ARGV[1] document JSON, ARGV[2] its status, ARGV[3] TTL seconds.
_SAVE_LUA = f"""
local terminal = {{{_TERMINAL_LUA}}}
local stored = redis.call('HGET', KEYS[1], '{keys.DOC_STATUS_FIELD}')
if stored and terminal[stored] then return 0 end
redis.call('HSET', KEYS[1], '{keys.DOC_JSON_FIELD}', ARGV[1], '{keys.DOC_STATUS_FIELD}', ARGV[2])
for i = 1, #KEYS do
  redis.call('EXPIRE', KEYS[i], ARGV[3])
end
return 1
"""

# KEYS[1] document hash, KEYS[2] cancel flag.
# ARGV[1] TTL seconds when there is no document, ARGV[2] channel, ARGV[3] workflow id.
_CANCEL_LUA = f"""
local pttl = redis.call('PTTL', KEYS[1])
if pttl > 0 then
  redis.call('SET', KEYS[2], '{keys.CANCEL_FLAG_VALUE}', 'PX', pttl)
else
  redis.call('SET', KEYS[2], '{keys.CANCEL_FLAG_VALUE}', 'EX', ARGV[1])
end
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1
"""

# KEYS[1] event list. ARGV[1] event JSON, ARGV[2] TTL seconds, ARGV[3] channel.
# The list position is the sequence number: assigned here, atomically, for every replica.
_APPEND_EVENT_LUA = """
local seq = redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('PUBLISH', ARGV[3], seq .. ' ' .. ARGV[1])
return seq
"""

# How long `subscribe_cancellations` waits for Redis to confirm SUBSCRIBE.
_SUBSCRIBE_TIMEOUT_S = 5.0
# Reconnect backoff of a lost subscription: full jitter, doubling, capped.
_BACKOFF_BASE_S = 0.05
_BACKOFF_CAP_S = 2.0


class RedisStateStore:
    """The Redis-backed store.

    `client` is used as given and left open by `close()` (its owner closes it);
    `from_url` builds one that `close()` does close. `prefix` namespaces every
    key and the cancel channel; `ttl_s` is how long a workflow's keys live after
    its last write; `ping_timeout_s` bounds the readiness probe.
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
        self._batcher = _Batcher(client)
        self._save_sha = hashlib.sha1(_SAVE_LUA.encode()).hexdigest()
        self._cancel_script = client.register_script(_CANCEL_LUA)
        self._append_event_sha = hashlib.sha1(_APPEND_EVENT_LUA.encode()).hexdigest()
        self._subscriptions: set[_Subscription] = set()
        self._event_subscriptions: set[_EventSubscription] = set()

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        ttl_s: int = DEFAULT_TTL_S,
        ping_timeout_s: float = 2.0,
        **client_kwargs: Any,
    ) -> RedisStateStore:
        """A store on a client of its own for `url`; `client_kwargs` go to `Redis.from_url`."""
        client = aioredis.Redis.from_url(url, **client_kwargs)
        store = cls(client, prefix=prefix, ttl_s=ttl_s, ping_timeout_s=ping_timeout_s)
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
        """Owner leases on the same Redis and prefix (shared by every replica)."""
        return RedisLeases(self._client, prefix=self._prefix)

    async def save(self, state: WorkflowState) -> bool:
        blob = orjson.dumps(state.to_dict())
        refreshed = keys.refreshed_keys(self._prefix, state.workflow_id)
        async with self._translate("save", state.workflow_id):
            written = await self._eval_save(refreshed, (blob, state.status.value, self._ttl_s))
        return bool(written)

    async def _eval_save(self, script_keys: Sequence[str], args: Sequence[Any]) -> Any:
        command = ("EVALSHA", self._save_sha, len(script_keys), *script_keys, *args)
        try:
            return await self._batcher.call(command)
        except NoScriptError:
            # Redis restarted or its script cache was flushed: load it and go again.
            await self._client.script_load(_SAVE_LUA)
            return await self._batcher.call(command)

    async def get(self, workflow_id: str) -> WorkflowState | None:
        key = keys.workflow_key(self._prefix, workflow_id)
        async with self._translate("get", workflow_id):
            raw = await self._batcher.call(("HGET", key, keys.DOC_JSON_FIELD))
        if raw is None:
            return None
        return WorkflowState.from_dict(orjson.loads(raw))

    async def request_cancel(self, workflow_id: str) -> None:
        async with self._translate("request_cancel", workflow_id):
            await self._cancel_script(
                keys=[
                    keys.workflow_key(self._prefix, workflow_id),
                    keys.cancel_flag_key(self._prefix, workflow_id),
                ],
                args=[self._ttl_s, keys.cancel_channel(self._prefix), workflow_id],
            )

    async def cancel_requested(self, workflow_id: str) -> bool:
        key = keys.cancel_flag_key(self._prefix, workflow_id)
        async with self._translate("cancel_requested", workflow_id):
            found = await self._batcher.call(("EXISTS", key))
        return bool(found)

    async def subscribe_cancellations(self) -> CancellationStream:
        subscription = _Subscription(self._client, self._prefix)
        async with self._translate("subscribe_cancellations"):
            await subscription.start()
        self._subscriptions.add(subscription)

        async def release() -> None:
            self._subscriptions.discard(subscription)
            await subscription.stop()

        return CancellationStream(subscription.queue, release)

    async def append_event(self, workflow_id: str, event: Mapping[str, Any]) -> int:
        blob = orjson.dumps(event)
        channel = keys.events_channel(self._prefix, workflow_id)
        # Through the batcher: a turn's events and document writes share one round trip.
        command = (
            "EVALSHA", self._append_event_sha, 1, keys.events_key(self._prefix, workflow_id),
            blob, self._ttl_s, channel,
        )
        async with self._translate("append_event", workflow_id):
            try:
                seq = await self._batcher.call(command)
            except NoScriptError:
                await self._client.script_load(_APPEND_EVENT_LUA)
                seq = await self._batcher.call(command)
        return int(seq)

    async def events_since(self, workflow_id: str, after: int = 0) -> list[StoredEvent]:
        start = max(after, 0)
        key = keys.events_key(self._prefix, workflow_id)
        async with self._translate("events_since", workflow_id):
            blobs = await self._batcher.call(("LRANGE", key, start, -1))
        return [(start + i + 1, orjson.loads(blob)) for i, blob in enumerate(blobs)]

    async def subscribe_events(self, workflow_id: str) -> EventStream:
        subscription = _EventSubscription(
            self._client, keys.events_channel(self._prefix, workflow_id)
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


class _Batcher:
    """Sends the commands issued in one turn of the event loop to Redis together.

    The first command of a turn opens a batch and a task that sends it once the
    turn's other callbacks have run, so commands issued meanwhile join it. A batch
    of one is sent as that command; a larger one as one pipeline (one round trip and
    one pooled connection instead of one each). Every caller awaits its own
    command's future, so a cancelled caller never fails anyone else's command (its
    own may still run, as it could have before). Errors stay per command: a
    `ResponseError` (e.g. `NoScriptError`) fails only its command; a connection
    error fails every command of the batch.
    """

    def __init__(self, client: aioredis.Redis) -> None:
        self._client = client
        self._open: list[tuple[tuple[Any, ...], asyncio.Future[Any]]] | None = None
        self._sending: set[asyncio.Task[None]] = set()

    def call(self, command: tuple[Any, ...]) -> asyncio.Future[Any]:
        """Queue `command` (e.g. `("EXISTS", key)`); the future gets its reply."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if self._open is None:
            self._open = []
            task = loop.create_task(self._send())
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)
        self._open.append((command, future))
        return future

    async def drain(self) -> None:
        """Wait until every batch queued so far has been answered."""
        while self._sending:
            await asyncio.wait(list(self._sending))

    async def _send(self) -> None:
        batch, self._open = self._open or [], None
        try:
            if len(batch) == 1:
                command = batch[0][0]
                replies: list[Any] = [
                    await self._client.execute_command(*command)  # type: ignore[no-untyped-call]
                ]
            else:
                pipeline = self._client.pipeline(transaction=False)
                for command, _ in batch:
                    pipeline.execute_command(*command)
                replies = await pipeline.execute(raise_on_error=False)
        except BaseException as exc:
            for _, future in batch:
                if future.done():
                    continue
                if isinstance(exc, Exception):
                    future.set_exception(_own_copy(exc))
                else:
                    future.cancel()  # the sender itself was cancelled (loop shutting down)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), reply in zip(batch, replies, strict=True):
            if future.done():
                continue  # its caller was cancelled
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)


def _own_copy(exc: BaseException) -> BaseException:
    """A copy of `exc` per waiting caller, so each raise keeps its own traceback."""
    try:
        mine = copy.copy(exc)
    except Exception:
        return exc
    mine.__cause__ = exc.__cause__
    mine.__context__ = exc.__context__
    return mine


class _Subscription:
    """One SUBSCRIBE on its own connection, pumped into `queue` by a task.

    `queue` gets workflow ids, then None once the subscription is stopped.
    """

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._client = client
        self._prefix = prefix
        self._channel = keys.cancel_channel(prefix)
        self._pubsub: PubSub | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._pubsub = await self._subscribe()
        self._task = asyncio.create_task(self._pump(), name=f"cancellations:{self._channel}")

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
            async with asyncio.timeout(_SUBSCRIBE_TIMEOUT_S):
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
            log.exception("cancel_subscription_failed", channel=self._channel)
            self.queue.put_nowait(None)

    async def _pump_until_cancelled(self) -> None:
        attempt = 0
        while True:
            try:
                if self._pubsub is None:
                    self._pubsub = await self._subscribe()
                    await self._replay_flags()
                attempt = 0
                await self._forward(self._pubsub)
            except (RedisError, OSError) as exc:
                await self._close_pubsub()
                delay = random.uniform(0, min(_BACKOFF_CAP_S, _BACKOFF_BASE_S * 2**attempt))
                attempt += 1
                log.warning(
                    "cancel_subscription_lost",
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
                # published in between is lost, so replay the standing flags.
                await self._replay_flags()

    async def _replay_flags(self) -> None:
        pattern = keys.cancel_flag_pattern(self._prefix)
        async for key in self._client.scan_iter(match=pattern, count=1000):
            self.queue.put_nowait(keys.workflow_id_of_cancel_flag(self._prefix, _text(key)))

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

    def __init__(self, client: aioredis.Redis, channel: str) -> None:
        self.queue: asyncio.Queue[StoredEvent | None] = asyncio.Queue()
        self._client = client
        self._channel = channel
        self._pubsub: PubSub | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        pubsub = self._client.pubsub()
        try:
            async with asyncio.timeout(_SUBSCRIBE_TIMEOUT_S):
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
