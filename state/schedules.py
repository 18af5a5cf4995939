"""Schedules: stored workflow requests with a cron expression, and the claim of each tick.

Contract (tests/state/test_schedule_store.py runs one suite against both backends):

- `save` writes a schedule (create or replace); `get` returns it or None; `all`
  returns every schedule, oldest first; `delete` removes it and its runs (False
  when there was none). Schedules have no TTL: they live until deleted.
- `claim_tick(schedule_id, tick, ttl_s)` is True for exactly one caller per
  schedule and tick, across every process on the same backend (Redis: `SET NX`
  with a TTL; memory: one process). `ttl_s` need only outlive the next tick: the
  scheduler never looks at a tick once a newer one is due.
- `record_run` prepends a run (tick, workflow id) to the schedule's history,
  which keeps the newest `MAX_RUNS`; `runs` returns them, newest first.
- Backend failures surface as `StateStoreError`.

The cron arithmetic lives above (orchestrator/schedules.py); this layer only stores.
`RedisSchedules` is in state/schedules_redis.py (redis-py loaded only where Redis is).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from enum import StrEnum
from typing import Any, Protocol

import msgspec

from state.models import decode, encode

# Runs kept per schedule (newest first).
MAX_RUNS = 50


class Misfire(StrEnum):
    """What happens to ticks missed while no replica was running (or all were busy)."""

    # Fire a tick only while it is due (within the grace period); missed ones are dropped.
    SKIP = "skip"
    # Fire the latest missed tick once, however late; older missed ones are dropped.
    CATCH_UP = "catch_up"


class Schedule(msgspec.Struct):
    """A workflow request (`request`: the body of POST /api/query, without `mode`) run
    on every tick of `cron` in `timezone`. Ticks before `anchor` (creation, or the
    last resume) never fire. Stored as its JSON (msgspec), decoded strictly."""

    schedule_id: str
    cron: str
    timezone: str
    request: dict[str, Any]
    misfire: Misfire = Misfire.SKIP
    paused: bool = False
    name: str | None = None
    # The tenant that created it: its runs belong to that tenant, only it (and admins) see it.
    tenant: str | None = None
    created_at: float = msgspec.field(default_factory=time.time)
    anchor: float = msgspec.field(default_factory=time.time)


class Run(msgspec.Struct, frozen=True):
    tick: float
    workflow_id: str


class ScheduleStore(Protocol):
    async def save(self, schedule: Schedule) -> None: ...

    async def get(self, schedule_id: str) -> Schedule | None: ...

    async def all(self) -> list[Schedule]: ...

    async def delete(self, schedule_id: str) -> bool: ...

    async def claim_tick(self, schedule_id: str, tick: float, *, ttl_s: float) -> bool: ...

    async def record_run(self, schedule_id: str, run: Run) -> None: ...

    async def runs(self, schedule_id: str) -> list[Run]: ...


class MemorySchedules:
    """Schedules of the embedded store; `clock` (seconds) expires claimed ticks."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        # Kept serialised, as Redis would hold them: no caller can alias a stored one.
        self._schedules: dict[str, bytes] = {}
        self._claims: dict[tuple[str, float], float] = {}
        self._runs: dict[str, deque[Run]] = {}

    async def save(self, schedule: Schedule) -> None:
        self._schedules[schedule.schedule_id] = encode(schedule)

    async def get(self, schedule_id: str) -> Schedule | None:
        found = self._schedules.get(schedule_id)
        return None if found is None else decode(found, Schedule)

    async def all(self) -> list[Schedule]:
        return sorted(
            (decode(blob, Schedule) for blob in self._schedules.values()),
            key=lambda s: (s.created_at, s.schedule_id),
        )

    async def delete(self, schedule_id: str) -> bool:
        self._runs.pop(schedule_id, None)
        return self._schedules.pop(schedule_id, None) is not None

    async def claim_tick(self, schedule_id: str, tick: float, *, ttl_s: float) -> bool:
        now = self._clock()
        for key in [k for k, expires in self._claims.items() if expires <= now]:
            del self._claims[key]
        if (schedule_id, tick) in self._claims:
            return False
        self._claims[(schedule_id, tick)] = now + ttl_s
        return True

    async def record_run(self, schedule_id: str, run: Run) -> None:
        self._runs.setdefault(schedule_id, deque(maxlen=MAX_RUNS)).appendleft(run)

    async def runs(self, schedule_id: str) -> list[Run]:
        return list(self._runs.get(schedule_id, ()))
