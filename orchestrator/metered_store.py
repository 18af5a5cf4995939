"""`MeteredStore`: any `StateStore`, with the latency and errors of each operation measured."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from orchestrator.metrics import StoreMetrics
from state.cancellations import CancellationStream, WorkflowIdStream
from state.events import EventStream, StoredEvent
from state.history import HistoryPage, HistoryQuery
from state.layout import WriteStats
from state.models import WorkflowState
from state.store import StateStore

if TYPE_CHECKING:
    from state.leases import LeaseStore
    from state.schedules import ScheduleStore

T = TypeVar("T")


class MeteredStore:
    """Delegates every call to `inner`; times it into `metrics` by operation.

    An operation that raises counts as an error (and its time is still observed).
    Subscriptions are timed until they are live, not while they stream.
    """

    def __init__(self, inner: StateStore, metrics: StoreMetrics) -> None:
        self.inner = inner
        backend = inner.backend
        self._latency = {
            op: metrics.latency.labels(backend, op) for op in _OPERATIONS
        }
        self._errors = {op: metrics.errors.labels(backend, op) for op in _OPERATIONS}

    @property
    def ttl_s(self) -> int:
        return self.inner.ttl_s

    @property
    def retention_s(self) -> int:
        return self.inner.retention_s

    @property
    def backend(self) -> str:
        return self.inner.backend

    @property
    def write_stats(self) -> WriteStats:
        return self.inner.write_stats

    @property
    def completes_in_turn(self) -> bool:
        # Timing adds no await of its own: the inner store's answer holds.
        return self.inner.completes_in_turn

    def leases(self) -> LeaseStore:
        return self.inner.leases()

    def schedules(self) -> ScheduleStore:
        return self.inner.schedules()

    async def save(
        self,
        state: WorkflowState,
        *,
        token: int | None = None,
        events: Sequence[Mapping[str, Any]] = (),
    ) -> bool:
        started = time.perf_counter()
        try:
            return await self.inner.save(state, token=token, events=events)
        except Exception:
            self._errors["save"].inc()
            raise
        finally:
            self._latency["save"].observe(time.perf_counter() - started)

    async def accept(self, state: WorkflowState, *, lease_s: float | None = None) -> int | None:
        started = time.perf_counter()
        try:
            return await self.inner.accept(state, lease_s=lease_s)
        except Exception:
            self._errors["accept"].inc()
            raise
        finally:
            self._latency["accept"].observe(time.perf_counter() - started)

    async def get(self, workflow_id: str) -> WorkflowState | None:
        return await self._timed("get", self.inner.get, workflow_id)

    async def request_cancel(self, workflow_id: str) -> None:
        await self._timed("request_cancel", self.inner.request_cancel, workflow_id)

    async def cancel_requested(self, workflow_id: str) -> bool:
        return await self._timed("cancel_requested", self.inner.cancel_requested, workflow_id)

    async def set_pause(self, workflow_id: str, paused: bool) -> None:
        await self._timed("set_pause", self.inner.set_pause, workflow_id, paused)

    async def pause_requested(self, workflow_id: str) -> bool:
        return await self._timed("pause_requested", self.inner.pause_requested, workflow_id)

    async def subscribe_cancellations(self, owner: str | None = None) -> CancellationStream:
        return await self._timed(
            "subscribe_cancellations", self.inner.subscribe_cancellations, owner
        )

    async def watch_finish(self, workflow_id: str) -> None:
        await self._timed("watch_finish", self.inner.watch_finish, workflow_id)

    async def history(self, query: HistoryQuery) -> HistoryPage:
        return await self._timed("history", self.inner.history, query)

    async def reserve_submit(
        self, tenant: str | None, idempotency_key: str, *, workflow_id: str, digest: str
    ) -> tuple[str, str] | None:
        started = time.perf_counter()
        try:
            return await self.inner.reserve_submit(
                tenant, idempotency_key, workflow_id=workflow_id, digest=digest
            )
        except Exception:
            self._errors["reserve_submit"].inc()
            raise
        finally:
            self._latency["reserve_submit"].observe(time.perf_counter() - started)

    async def release_submit(
        self, tenant: str | None, idempotency_key: str, *, workflow_id: str
    ) -> None:
        started = time.perf_counter()
        try:
            await self.inner.release_submit(tenant, idempotency_key, workflow_id=workflow_id)
        except Exception:
            self._errors["release_submit"].inc()
            raise
        finally:
            self._latency["release_submit"].observe(time.perf_counter() - started)

    async def subscribe_finishes(self) -> WorkflowIdStream:
        return await self._timed("subscribe_finishes", self.inner.subscribe_finishes)

    async def append_event(self, workflow_id: str, event: Mapping[str, Any]) -> int:
        return await self._timed("append_event", self.inner.append_event, workflow_id, event)

    async def append_events(self, workflow_id: str, events: Sequence[Mapping[str, Any]]) -> int:
        return await self._timed("append_events", self.inner.append_events, workflow_id, events)

    async def events_since(self, workflow_id: str, after: int = 0) -> list[StoredEvent]:
        return await self._timed("events_since", self.inner.events_since, workflow_id, after)

    async def subscribe_events(self, workflow_id: str) -> EventStream:
        return await self._timed("subscribe_events", self.inner.subscribe_events, workflow_id)

    async def ping(self) -> bool:
        started = time.perf_counter()
        ok = await self.inner.ping()
        self._latency["ping"].observe(time.perf_counter() - started)
        if not ok:
            self._errors["ping"].inc()
        return ok

    async def close(self) -> None:
        await self.inner.close()

    async def _timed(self, op: str, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        started = time.perf_counter()
        try:
            return await fn(*args)
        except Exception:
            self._errors[op].inc()
            raise
        finally:
            self._latency[op].observe(time.perf_counter() - started)


_OPERATIONS = (
    "accept",
    "save",
    "get",
    "request_cancel",
    "cancel_requested",
    "set_pause",
    "pause_requested",
    "subscribe_cancellations",
    "subscribe_finishes",
    "watch_finish",
    "history",
    "reserve_submit",
    "release_submit",
    "append_event",
    "append_events",
    "events_since",
    "subscribe_events",
    "ping",
)
