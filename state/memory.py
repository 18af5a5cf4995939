"""The embedded `StateStore`: one process, no Redis, the same contract.

TTLs run on an injected clock (`time.monotonic` by default; tests pass a fake):
an expired entry is invisible at once and removed lazily, on its next access
or by a periodic sweep piggy-backed on writes. Documents are kept serialised
(orjson of `to_dict`), exactly what Redis would hold, so a caller can never
alias or mutate stored state, and a document Redis could not store fails
here too.

Every method runs without awaiting anything, so each is atomic with respect to
other coroutines (the asyncio counterpart of the Redis store's Lua scripts).

Memory is bounded, not only by TTL: past `max_workflows` documents or `max_bytes`
of serialised documents, the oldest *finished* workflows are dropped first (as if
their TTL had run out). Running workflows are never dropped.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from state.cancellations import WorkflowIdStream
from state.events import EventStream, StoredEvent
from state.keys import DEFAULT_TTL_S
from state.leases import MemoryLeases
from state.models import WorkflowState
from state.schedules import MemorySchedules
from state.store import LeaseLost

# Upper bound on how long an expired entry may linger before a write sweeps it.
_MAX_SWEEP_INTERVAL_S = 60.0


@dataclass(slots=True, frozen=True)
class _Doc:
    blob: bytes
    terminal: bool
    expires_at: float


@dataclass(slots=True)
class _EventLog:
    expires_at: float
    # Serialised, like documents: a subscriber can never alias another's copy.
    blobs: list[bytes] = field(default_factory=list)


class MemoryStateStore:
    """In-process store with Redis-like TTLs and cancellation fan-out.

    `ttl_s` is how long every entry of a workflow lives after its last write;
    `clock` returns seconds on a monotonic scale and decides expiry.
    """

    def __init__(
        self,
        *,
        ttl_s: int = DEFAULT_TTL_S,
        clock: Callable[[], float] = time.monotonic,
        max_workflows: int | None = None,
        max_bytes: int | None = None,
    ) -> None:
        if ttl_s <= 0:
            raise ValueError(f"ttl_s must be positive, got {ttl_s}")
        self._ttl_s = ttl_s
        self._clock = clock
        self._max_workflows = max_workflows
        self._max_bytes = max_bytes
        self._docs: dict[str, _Doc] = {}
        self._bytes = 0
        # Finished workflows, oldest first: the first to go when a bound is reached.
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._cancel_flags: dict[str, float] = {}  # workflow id -> expires_at
        self._pause_flags: dict[str, float] = {}  # workflow id -> expires_at
        # None is the end-of-stream marker a closing store sends every subscriber.
        self._subscribers: set[asyncio.Queue[str | None]] = set()
        self._events: dict[str, _EventLog] = {}
        self._event_subscribers: dict[str, set[asyncio.Queue[StoredEvent | None]]] = {}
        self._finish_subscribers: set[asyncio.Queue[str | None]] = set()
        # One lease table per store: saves are fenced against its generations.
        self._leases = MemoryLeases(clock=clock)
        self._closed = False
        self._schedules = MemorySchedules(clock=clock)
        self._next_sweep = clock() + self._sweep_interval

    @property
    def ttl_s(self) -> int:
        return self._ttl_s

    @property
    def backend(self) -> str:
        return "memory"

    def leases(self) -> MemoryLeases:
        """Owner leases on the same clock (always the same table: saves are fenced by it)."""
        return self._leases

    def schedules(self) -> MemorySchedules:
        return self._schedules

    @property
    def _sweep_interval(self) -> float:
        return min(float(self._ttl_s), _MAX_SWEEP_INTERVAL_S)

    async def save(self, state: WorkflowState, *, token: int | None = None) -> bool:
        now = self._clock()
        stored = self._live_doc(state.workflow_id, now)
        if stored is None and token is not None:
            # Nothing of the workflow is left (as after a Redis restart without
            # persistence): its owner writes it again, fenced by its token from now.
            self._leases.restore(state.workflow_id, token)
        if self._leases.generation(state.workflow_id) != token:
            raise LeaseLost(state.workflow_id, token=token)
        if stored is not None and stored.terminal:
            return False
        expires_at = now + self._ttl_s
        blob = orjson.dumps(state.to_dict())
        if stored is not None:
            self._bytes -= len(stored.blob)
        self._bytes += len(blob)
        terminal = state.status.is_terminal
        self._docs[state.workflow_id] = _Doc(blob=blob, terminal=terminal, expires_at=expires_at)
        if terminal:
            self._finished[state.workflow_id] = None
            self._evict()
        # Keys of one workflow share one expiry, as the Redis save script does.
        if self._live_flag(state.workflow_id, now):
            self._cancel_flags[state.workflow_id] = expires_at
        log = self._live_events(state.workflow_id, now)
        if log is not None:
            log.expires_at = expires_at
        if self._live_flag(state.workflow_id, now, self._pause_flags):
            self._pause_flags[state.workflow_id] = expires_at
        if state.status.is_terminal:
            for queue in self._finish_subscribers:
                queue.put_nowait(state.workflow_id)
        self._maybe_sweep(now)
        return True

    async def get(self, workflow_id: str) -> WorkflowState | None:
        stored = self._live_doc(workflow_id, self._clock())
        if stored is None:
            return None
        return WorkflowState.from_dict(orjson.loads(stored.blob))

    async def request_cancel(self, workflow_id: str) -> None:
        now = self._clock()
        stored = self._live_doc(workflow_id, now)
        self._cancel_flags[workflow_id] = (
            stored.expires_at if stored is not None else now + self._ttl_s
        )
        for queue in self._subscribers:
            queue.put_nowait(workflow_id)
        self._maybe_sweep(now)

    async def cancel_requested(self, workflow_id: str) -> bool:
        return self._live_flag(workflow_id, self._clock())

    async def set_pause(self, workflow_id: str, paused: bool) -> None:
        now = self._clock()
        if not paused:
            self._pause_flags.pop(workflow_id, None)
            return
        stored = self._live_doc(workflow_id, now)
        self._pause_flags[workflow_id] = (
            stored.expires_at if stored is not None else now + self._ttl_s
        )
        self._maybe_sweep(now)

    async def pause_requested(self, workflow_id: str) -> bool:
        return self._live_flag(workflow_id, self._clock(), self._pause_flags)

    async def subscribe_cancellations(self) -> WorkflowIdStream:
        return self._subscribe(self._subscribers)

    async def subscribe_finishes(self) -> WorkflowIdStream:
        return self._subscribe(self._finish_subscribers)

    def _subscribe(self, subscribers: set[asyncio.Queue[str | None]]) -> WorkflowIdStream:
        if self._closed:
            raise RuntimeError("MemoryStateStore is closed")
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        # Registered before returning: an id published from now on reaches it.
        subscribers.add(queue)

        async def release() -> None:
            subscribers.discard(queue)

        return WorkflowIdStream(queue, release)

    async def append_event(self, workflow_id: str, event: Mapping[str, Any]) -> int:
        now = self._clock()
        blob = orjson.dumps(event)
        log = self._live_events(workflow_id, now)
        if log is None:
            log = self._events[workflow_id] = _EventLog(expires_at=now + self._ttl_s)
        log.blobs.append(blob)
        log.expires_at = now + self._ttl_s
        seq = len(log.blobs)
        for queue in self._event_subscribers.get(workflow_id, ()):
            queue.put_nowait((seq, orjson.loads(blob)))
        self._maybe_sweep(now)
        return seq

    async def events_since(self, workflow_id: str, after: int = 0) -> list[StoredEvent]:
        log = self._live_events(workflow_id, self._clock())
        if log is None:
            return []
        start = max(after, 0)
        return [(start + i + 1, orjson.loads(b)) for i, b in enumerate(log.blobs[start:])]

    async def subscribe_events(self, workflow_id: str) -> EventStream:
        if self._closed:
            raise RuntimeError("MemoryStateStore is closed")
        queue: asyncio.Queue[StoredEvent | None] = asyncio.Queue()
        self._event_subscribers.setdefault(workflow_id, set()).add(queue)

        async def release() -> None:
            queues = self._event_subscribers.get(workflow_id)
            if queues is not None:
                queues.discard(queue)
                if not queues:
                    del self._event_subscribers[workflow_id]

        return EventStream(queue, release)

    async def ping(self) -> bool:
        return not self._closed

    async def close(self) -> None:
        self._closed = True
        for subscribers in (self._subscribers, self._finish_subscribers):
            for queue in subscribers:
                queue.put_nowait(None)
            subscribers.clear()
        for queues in self._event_subscribers.values():
            for event_queue in queues:
                event_queue.put_nowait(None)
        self._event_subscribers.clear()

    def _live_doc(self, workflow_id: str, now: float) -> _Doc | None:
        stored = self._docs.get(workflow_id)
        if stored is not None and stored.expires_at <= now:
            self._drop(workflow_id)
            return None
        return stored

    def _drop(self, workflow_id: str) -> None:
        stored = self._docs.pop(workflow_id, None)
        if stored is not None:
            self._bytes -= len(stored.blob)
        self._finished.pop(workflow_id, None)
        self._leases.forget(workflow_id)

    def _evict(self) -> None:
        """Drop the oldest finished workflows while a bound is exceeded."""
        max_count, max_bytes = self._max_workflows, self._max_bytes
        while self._finished and (
            (max_count is not None and len(self._docs) > max_count)
            or (max_bytes is not None and self._bytes > max_bytes)
        ):
            oldest = next(iter(self._finished))
            self._drop(oldest)
            self._cancel_flags.pop(oldest, None)
            self._pause_flags.pop(oldest, None)

    @property
    def size(self) -> tuple[int, int]:
        """(documents held, their serialised bytes): what the bounds apply to."""
        return len(self._docs), self._bytes

    def _live_flag(
        self, workflow_id: str, now: float, flags: dict[str, float] | None = None
    ) -> bool:
        flags = self._cancel_flags if flags is None else flags
        expires_at = flags.get(workflow_id)
        if expires_at is not None and expires_at <= now:
            del flags[workflow_id]
            return False
        return expires_at is not None

    def _live_events(self, workflow_id: str, now: float) -> _EventLog | None:
        log = self._events.get(workflow_id)
        if log is not None and log.expires_at <= now:
            del self._events[workflow_id]
            return None
        return log

    def _maybe_sweep(self, now: float) -> None:
        if now < self._next_sweep:
            return
        self._next_sweep = now + self._sweep_interval
        for workflow_id in [k for k, d in self._docs.items() if d.expires_at <= now]:
            self._drop(workflow_id)
        for flags in (self._cancel_flags, self._pause_flags):
            for workflow_id in [k for k, t in flags.items() if t <= now]:
                del flags[workflow_id]
        for workflow_id in [k for k, e in self._events.items() if e.expires_at <= now]:
            del self._events[workflow_id]
