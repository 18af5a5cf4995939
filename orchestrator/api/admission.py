"""Admitting a workflow: the key's in-flight cap and the tenant's cap on async workflows.

- In flight, per key: a slot of `inflight:<key id>` is held from submit until the
  workflow reaches a terminal state (a watcher task releases it). The slot also
  expires after the workflow's deadline plus a margin, so a replica that died
  holds no slot for ever.
- Held in state, per tenant: each async workflow holds a slot of
  `async:<tenant>` for as long as its document can live (its deadline plus the
  state TTL); it is never released early, because a finished workflow's document
  still occupies the store until its TTL ends.

Both pools live in `Quotas` (Redis when REDIS_URL is set, so the caps hold across
replicas).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog
from aiohttp import web

from orchestrator.access.config import AccessConfig
from orchestrator.access.principal import Principal
from orchestrator.api.errors import TooManyRequests
from orchestrator.errors import StateStoreUnavailable
from state.ratelimit import Quotas
from state.store import StateStoreError

log = structlog.get_logger(__name__)

# Slots outlive a workflow's deadline by this much before they expire on their own.
_SLOT_MARGIN_S = 60.0
# Without a deadline a workflow's slot expires after this long (the state TTL bounds it too).
_UNBOUNDED_S = 3600.0


@dataclass(frozen=True, slots=True)
class Ticket:
    pool: str | None
    member: str


_NOTHING_HELD = Ticket(pool=None, member="")


class Admission:
    def __init__(self, quotas: Quotas, config: AccessConfig, *, state_ttl_s: float) -> None:
        self._quotas = quotas
        self._config = config
        self._state_ttl_s = state_ttl_s
        self._watchers: set[asyncio.Task[None]] = set()

    async def admit(self, who: Principal, *, is_async: bool, timeout_s: float | None) -> Ticket:
        """Hold the slots a new workflow needs, or raise 429 saying which cap is full."""
        cap = self._config.max_async_for(who.tenant)
        if who.limits.max_in_flight <= 0 and not (is_async and cap > 0):
            return _NOTHING_HELD  # no cap applies (an open service): nothing to hold or name
        member = uuid.uuid4().hex
        lifetime = (timeout_s or _UNBOUNDED_S) + _SLOT_MARGIN_S
        pool = None
        try:
            if who.limits.max_in_flight > 0:
                pool = f"inflight:{who.key_id}"
                if not await self._quotas.acquire(
                    pool, member, limit=who.limits.max_in_flight, ttl_s=lifetime
                ):
                    raise TooManyRequests(
                        f"this key already has {who.limits.max_in_flight} workflow(s) in flight",
                        code="too_many_workflows",
                        details={"limit": who.limits.max_in_flight},
                        headers={"Retry-After": "1"},
                    )
            if is_async and cap > 0:
                held = lifetime + self._state_ttl_s
                if not await self._quotas.acquire(
                    f"async:{who.tenant}", member, limit=cap, ttl_s=held
                ):
                    if pool is not None:
                        await self._quotas.release(pool, member)
                    raise TooManyRequests(
                        f"tenant {who.tenant!r} already holds {cap} async workflow(s) in state",
                        code="tenant_quota_exceeded",
                        details={"limit": cap, "tenant": who.tenant},
                        headers={"Retry-After": str(int(min(held, 60)))},
                    )
        except StateStoreError as exc:
            raise StateStoreUnavailable(backend=exc.backend, operation=exc.operation) from exc
        return Ticket(pool=pool, member=member)

    async def abandon(self, ticket: Ticket) -> None:
        """The workflow was never submitted (e.g. it failed validation): free its slot."""
        await self._release(ticket)

    def release_when(self, ticket: Ticket, finished: Callable[[], Awaitable[object]]) -> None:
        """Free the in-flight slot once `finished()` returns (the workflow is terminal)."""
        if ticket.pool is None:
            return

        async def watch() -> None:
            try:
                await finished()
            except Exception:  # the slot is freed either way
                log.warning("admission_watch_failed", exc_info=True)
            finally:
                await self._release(ticket)

        task = asyncio.create_task(watch())
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)

    async def close(self) -> None:
        for task in list(self._watchers):
            task.cancel()
        for task in list(self._watchers):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _release(self, ticket: Ticket) -> None:
        if ticket.pool is None:
            return
        try:
            await self._quotas.release(ticket.pool, ticket.member)
        except StateStoreError:  # it expires on its own
            log.warning("admission_release_failed", pool=ticket.pool, exc_info=True)


ADMISSION: web.AppKey[Admission] = web.AppKey("admission", Admission)
