"""The embedded `StateStore`: one process, no Redis, the same contract.

TTLs run on an injected clock (`time.monotonic` by default; tests pass a fake):
an expired entry is invisible at once and removed lazily, on its next access
or by a periodic sweep piggy-backed on writes. A workflow is kept as the same
serialised fields Redis holds (state/layout.py: written field by field while it
runs, compacted when it ends), so a caller can never alias or mutate stored
state, and a document Redis could not store fails here too.

Every method runs without awaiting anything, so each is atomic with respect to
other coroutines (the asyncio counterpart of the Redis store's Lua scripts).

Memory is bounded, not only by TTL: past `max_workflows` documents or `max_bytes`
of serialised documents, the oldest *finished* workflows are dropped first (as if
their retention had run out). Running workflows are never dropped.

A finished document is kept as plain JSON unless it is at least `COMPRESS_FROM`
bytes written out. Unlike Redis (network bytes, a shared server's memory), zlib here
only trades this process's CPU for its memory, and that memory is already bounded by
the two limits above: for a small document (a 3-step chain: ~2.2 KB, ~1.6 KB saved)
compressing cost about a tenth of the workflow's whole orchestration CPU. Over the
threshold the saving is real and the cost small beside the document's own.
"""

from __future__ import annotations

import asyncio
import time
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from state import keys
from state.cancellations import WorkflowIdStream
from state.events import EventStream, StoredEvent
from state.history import HistoryPage, HistoryQuery, encode_cursor, member_of
from state.keys import DEFAULT_TTL_S
from state.layout import FieldCache, WriteStats, assemble, compacted, summary
from state.leases import MemoryLeases
from state.models import WorkflowState
from state.schedules import MemorySchedules
from state.store import LeaseLost

# Upper bound on how long an expired entry may linger before a write sweeps it.
_MAX_SWEEP_INTERVAL_S = 60.0
# Finished documents this long or longer written out are kept zlib-compressed.
COMPRESS_FROM = 16 * 1024


@dataclass(slots=True)
class _Doc:
    fields: dict[str, bytes]
    terminal: bool
    expires_at: float
    watched: bool = False
    # Bytes of `fields` (names and values), kept up to date by every write: summing
    # every field again on each transition made a write cost grow with the workflow.
    size: int = 0


@dataclass(slots=True, eq=False)
class _Subscriber:
    queue: asyncio.Queue[str | None] = field(default_factory=asyncio.Queue)
    owner: str | None = None


@dataclass(slots=True)
class _EventLog:
    expires_at: float
    # Serialised, like documents: a subscriber can never alias another's copy. One JSON
    # array per append (a workflow's events come in batches: one serialisation and one
    # copy per batch, not per event), with the number of events logged before it.
    batches: list[bytes] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)
    count: int = 0

    def add(self, blob: bytes, count: int) -> int:
        """Log a batch of `count` events; the number of the first."""
        start = self.count
        self.batches.append(blob)
        self.starts.append(start)
        self.count = start + count
        return start + 1

    def since(self, after: int) -> list[StoredEvent]:
        # The first batch holding an event numbered after `after`, then every later one.
        first = max(bisect_right(self.starts, after) - 1, 0)
        found: list[StoredEvent] = []
        for start, blob in zip(self.starts[first:], self.batches[first:], strict=True):
            skip = max(after - start, 0)
            found.extend(
                (start + i + 1, event) for i, event in enumerate(orjson.loads(blob)) if i >= skip
            )
        return found


class MemoryStateStore:
    """In-process store with Redis-like TTLs and cancellation fan-out.

    `ttl_s` is how long every entry of a running workflow lives after its last
    write, `retention_s` how long a finished one is kept; `clock` returns seconds
    on a monotonic scale and decides expiry.
    """

    def __init__(
        self,
        *,
        ttl_s: int = DEFAULT_TTL_S,
        retention_s: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_workflows: int | None = None,
        max_bytes: int | None = None,
    ) -> None:
        if ttl_s <= 0:
            raise ValueError(f"ttl_s must be positive, got {ttl_s}")
        self._ttl_s = ttl_s
        self._retention_s = retention_s if retention_s is not None else ttl_s
        if self._retention_s <= 0:
            raise ValueError(f"retention_s must be positive, got {retention_s}")
        self._clock = clock
        self._max_workflows = max_workflows
        self._max_bytes = max_bytes
        self._docs: dict[str, _Doc] = {}
        self._bytes = 0
        # Finished workflows, oldest first: the first to go when a bound is reached.
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._cancel_flags: dict[str, float] = {}  # workflow id -> expires_at
        # (tenant, Idempotency-Key) -> (workflow id, digest, expires_at)
        self._submits: dict[tuple[str | None, str], tuple[str, str, float]] = {}
        self._pause_flags: dict[str, float] = {}  # workflow id -> expires_at
        # None is the end-of-stream marker a closing store sends every subscriber.
        self._subscribers: set[_Subscriber] = set()
        self._events: dict[str, _EventLog] = {}
        self._event_subscribers: dict[str, set[asyncio.Queue[StoredEvent | None]]] = {}
        self._finish_subscribers: set[_Subscriber] = set()
        # One lease table per store: saves are fenced by its generations.
        self._leases = MemoryLeases(clock=clock)
        self._fields = FieldCache()
        self.write_stats = WriteStats()
        self._closed = False
        self._schedules = MemorySchedules(clock=clock)
        self._next_sweep = clock() + self._sweep_interval

    @property
    def ttl_s(self) -> int:
        return self._ttl_s

    @property
    def retention_s(self) -> int:
        return self._retention_s

    @property
    def backend(self) -> str:
        return "memory"

    @property
    def completes_in_turn(self) -> bool:
        # Every method runs without awaiting anything that suspends (the module's docstring).
        return True

    def leases(self) -> MemoryLeases:
        """Owner leases on the same clock (always the same table: saves are fenced by it)."""
        return self._leases

    def schedules(self) -> MemorySchedules:
        return self._schedules

    @property
    def _sweep_interval(self) -> float:
        return min(float(self._ttl_s), _MAX_SWEEP_INTERVAL_S)

    async def save(
        self,
        state: WorkflowState,
        *,
        token: int | None = None,
        events: Sequence[Mapping[str, Any]] = (),
    ) -> bool:
        now = self._clock()
        workflow_id = state.workflow_id
        stored = self._live_doc(workflow_id, now)
        if stored is None and token is not None:
            # Nothing of the workflow is left (as after a Redis restart without
            # persistence): its owner writes it again, fenced by its token from now.
            self._leases.restore(workflow_id, token, state.owner)
        if self._leases.generation(workflow_id) != token:
            self._fields.forget(workflow_id)
            raise LeaseLost(workflow_id, token=token)
        if stored is not None and stored.terminal:
            return False
        terminal = state.status.is_terminal
        if terminal:
            fields, nbytes = self._write_finished(state, now)
        else:
            fields, nbytes = self._write_running(state, stored, now)
        self.write_stats.add(fields, nbytes)
        if terminal and stored is not None and stored.watched:
            for subscriber in self._finish_subscribers:
                subscriber.queue.put_nowait(workflow_id)
        if events:
            # After the document, expiring with it, as on Redis (before an eviction, which
            # drops the log with the document).
            expires_at = now + (self._retention_s if terminal else self._ttl_s)
            self._append(workflow_id, events, now, expires_at)
        if terminal:
            self._evict()
        if now >= self._next_sweep:  # (checked here: no call on every write)
            self._maybe_sweep(now)
        return True

    async def accept(self, state: WorkflowState, *, lease_s: float | None = None) -> int | None:
        workflow_id = state.workflow_id
        now = self._clock()
        if (
            self._live_doc(workflow_id, now) is not None
            or self._leases.generation(workflow_id) is not None
        ):
            raise LeaseLost(workflow_id, token=None)
        token = None
        if lease_s is not None:
            if not state.owner:
                raise ValueError("a claimed workflow needs its owner on the state")
            token = await self._leases.claim(workflow_id, state.owner, lease_s=lease_s)
        if state.status.is_terminal:
            await self.save(state, token=token)
            return token
        # What `save` would do for this new, running document, without asking again what
        # was just checked (nothing stored, the lease just taken): its first fields.
        fields, nbytes = self._write_running(state, None, now)
        self.write_stats.add(fields, nbytes)
        self._maybe_sweep(now)
        return token

    def _write_finished(self, state: WorkflowState, now: float) -> tuple[dict[str, bytes], int]:
        """Compact the workflow: its final document, kept for the retention (and its size)."""
        workflow_id = state.workflow_id
        fields = compacted(state, compress_from=COMPRESS_FROM)
        self._fields.forget(workflow_id)
        expires_at = now + self._retention_s
        size = _size(fields)
        stored = self._docs.get(workflow_id)
        self._bytes += size - (0 if stored is None else stored.size)
        self._docs[workflow_id] = _Doc(fields, True, expires_at, size=size)
        self._finished[workflow_id] = None
        self._pause_flags.pop(workflow_id, None)
        self._cancel_flags.pop(workflow_id, None)
        log = self._live_events(workflow_id, now)
        if log is not None:  # kept for the retention, like the compacted document
            log.expires_at = expires_at
        submit = (state.tenant, state.submit_key or "")
        if state.submit_key is not None and submit in self._submits:
            wid, digest, _ = self._submits[submit]
            self._submits[submit] = (wid, digest, expires_at)
        return fields, size

    def _write_running(
        self, state: WorkflowState, stored: _Doc | None, now: float
    ) -> tuple[dict[str, bytes], int]:
        """Merge the changed fields in; every key of the workflow gets the running TTL.
        Returns the fields written and their bytes (names and values)."""
        workflow_id = state.workflow_id
        full = stored is None or keys.DOC_SPEC_FIELD not in stored.fields
        changes = self._fields.changes(state, full=full)
        expires_at = now + self._ttl_s
        if stored is None:
            # A new document: its fields are the ones sent, nothing to merge into (the
            # dict is the write's own: msgspec's bytes are right-sized, kept as they are).
            sent = grown = _size(changes.fields)
            self._docs[workflow_id] = _Doc(changes.fields, False, expires_at, size=sent)
        else:
            merged = stored.fields
            grown = 0
            sent = 0
            for name, blob in changes.fields.items():
                old = merged.get(name)
                size = len(blob)
                sent += len(name) + size
                grown += size - len(old) if old is not None else len(name) + size
                merged[name] = blob  # msgspec's bytes are right-sized: kept as they are
            stored.size += grown
            stored.expires_at = expires_at
        self._bytes += grown
        self._fields.remember(changes)
        # Keys of one workflow share one expiry, as the Redis save script does. (Flags are
        # rare: with none set, no lookup of this workflow's.)
        if self._cancel_flags and self._live_flag(workflow_id, now):
            self._cancel_flags[workflow_id] = expires_at
        if self._pause_flags and self._live_flag(workflow_id, now, self._pause_flags):
            self._pause_flags[workflow_id] = expires_at
        log = self._live_events(workflow_id, now)
        if log is not None:
            log.expires_at = expires_at
        return changes.fields, sent

    async def get(self, workflow_id: str) -> WorkflowState | None:
        stored = self._live_doc(workflow_id, self._clock())
        if stored is None:
            return None
        return assemble(stored.fields)

    async def request_cancel(self, workflow_id: str) -> None:
        now = self._clock()
        stored = self._live_doc(workflow_id, now)
        self._cancel_flags[workflow_id] = (
            stored.expires_at if stored is not None else now + self._ttl_s
        )
        if stored is not None:
            stored.watched = True
        self._notify_owner(workflow_id)
        self._maybe_sweep(now)

    def _notify_owner(self, workflow_id: str) -> None:
        owner = self._leases.owner(workflow_id)
        for subscriber in self._subscribers:
            # To the owner only; a workflow nobody claimed goes to everyone.
            if owner is None or subscriber.owner == owner:
                subscriber.queue.put_nowait(workflow_id)

    async def watch_finish(self, workflow_id: str) -> None:
        stored = self._live_doc(workflow_id, self._clock())
        if stored is not None:
            stored.watched = True

    async def cancel_requested(self, workflow_id: str) -> bool:
        return self._live_flag(workflow_id, self._clock())

    async def set_pause(self, workflow_id: str, paused: bool) -> None:
        now = self._clock()
        if not paused:
            self._pause_flags.pop(workflow_id, None)
        else:
            stored = self._live_doc(workflow_id, now)
            self._pause_flags[workflow_id] = (
                stored.expires_at if stored is not None else now + self._ttl_s
            )
        self._notify_owner(workflow_id)
        self._maybe_sweep(now)

    async def pause_requested(self, workflow_id: str) -> bool:
        return self._live_flag(workflow_id, self._clock(), self._pause_flags)

    async def subscribe_cancellations(self, owner: str | None = None) -> WorkflowIdStream:
        return self._subscribe(self._subscribers, owner)

    async def subscribe_finishes(self) -> WorkflowIdStream:
        return self._subscribe(self._finish_subscribers, None)

    def _subscribe(self, subscribers: set[_Subscriber], owner: str | None) -> WorkflowIdStream:
        if self._closed:
            raise RuntimeError("MemoryStateStore is closed")
        subscriber = _Subscriber(owner=owner)
        # Registered before returning: an id published from now on reaches it.
        subscribers.add(subscriber)

        async def release() -> None:
            subscribers.discard(subscriber)

        return WorkflowIdStream(subscriber.queue, release)

    async def history(self, query: HistoryQuery) -> HistoryPage:
        now = self._clock()
        upper, lower = query.upper_member(), query.lower_member()
        heads = []
        for workflow_id in list(self._docs):
            stored = self._live_doc(workflow_id, now)
            if stored is None or keys.DOC_HEADER_FIELD not in stored.fields:
                continue
            head = summary(stored.fields[keys.DOC_HEADER_FIELD])
            member = member_of(head.created_at, head.workflow_id)
            if (upper is None or member < upper) and (lower is None or member >= lower):
                heads.append((member, head))
        heads.sort(key=lambda pair: pair[0], reverse=True)
        entries = []
        for examined, (member, head) in enumerate(heads, start=1):
            if query.accepts(head):
                entries.append(head)
            if len(entries) == query.limit or examined >= query.scan_budget:
                more = examined < len(heads)
                return HistoryPage(entries, encode_cursor(member) if more else None)
        return HistoryPage(entries, None)

    async def reserve_submit(
        self, tenant: str | None, idempotency_key: str, *, workflow_id: str, digest: str
    ) -> tuple[str, str] | None:
        key = (tenant, idempotency_key)
        now = self._clock()
        found = self._submits.get(key)
        if found is not None and found[2] > now:
            return found[0], found[1]
        self._submits[key] = (workflow_id, digest, now + self._ttl_s)
        return None

    async def release_submit(
        self, tenant: str | None, idempotency_key: str, *, workflow_id: str
    ) -> None:
        key = (tenant, idempotency_key)
        found = self._submits.get(key)
        if found is not None and found[0] == workflow_id:
            del self._submits[key]

    async def append_event(self, workflow_id: str, event: Mapping[str, Any]) -> int:
        return await self.append_events(workflow_id, [event])

    async def append_events(self, workflow_id: str, events: Sequence[Mapping[str, Any]]) -> int:
        if not events:
            raise ValueError("append_events needs at least one event")
        now = self._clock()
        return self._append(workflow_id, events, now, now + self._ttl_s)

    def _append(
        self, workflow_id: str, events: Sequence[Mapping[str, Any]], now: float, expires_at: float
    ) -> int:
        # A right-sized copy: orjson (3.12 on) hands back its whole write buffer, 4 KB or
        # more whatever the batch's length (a 300-byte event would hold 4 KB while kept).
        # Document fields need no copy: msgspec and zlib return bytes of their length.
        blob = bytes(memoryview(orjson.dumps(events if type(events) is list else list(events))))
        log = self._live_events(workflow_id, now)
        if log is None:
            log = self._events[workflow_id] = _EventLog(expires_at=expires_at)
        log.expires_at = expires_at
        first = log.add(blob, len(events))
        for queue in self._event_subscribers.get(workflow_id, ()):
            for seq, event in enumerate(orjson.loads(blob), start=first):
                queue.put_nowait((seq, event))
        if now >= self._next_sweep:
            self._maybe_sweep(now)
        return log.count

    async def events_since(self, workflow_id: str, after: int = 0) -> list[StoredEvent]:
        log = self._live_events(workflow_id, self._clock())
        if log is None:
            return []
        return log.since(max(after, 0))

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
            for subscriber in subscribers:
                subscriber.queue.put_nowait(None)
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
            self._bytes -= stored.size
        self._finished.pop(workflow_id, None)
        self._leases.forget(workflow_id)
        self._fields.forget(workflow_id)

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
        for key in [k for k, v in self._submits.items() if v[2] <= now]:
            del self._submits[key]


def _size(fields: dict[str, bytes]) -> int:
    # Two sums over `map(len, ...)`: no Python frame per field (a generator's was most of
    # the cost, twice per workflow: its accept and its terminal write).
    return sum(map(len, fields)) + sum(map(len, fields.values()))
