"""Cron schedules: which tick is due, and the loop that starts each due run exactly once.

Every replica runs a `Scheduler`. Each pass (`tick()`, every `poll_s`) looks at
every schedule that is not paused and finds its *latest* tick at or before now
(croniter, in the schedule's time zone, so "0 9 * * *" in Europe/Paris follows
daylight saving). That tick fires if:

- it is not before the schedule's anchor (its creation, or its last resume), and
- `misfire` is `skip` and it is at most `grace_s` old, or `misfire` is `catch_up`
  (the latest missed tick fires once however late; older missed ones never do);
- and this replica wins the tick's claim (`ScheduleStore.claim_tick`: Redis
  `SET NX` per schedule and tick), so across all replicas each tick starts one
  run. The claim lives until past the next tick, after which the scheduler
  never looks at the old tick again.

The run is the schedule's request started like `POST /api/query` in async mode;
its state carries `schedule_id`, and the schedule's history lists it. The clock
is injected (tests move it by hand).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import structlog
from croniter import CroniterError, croniter

from orchestrator.errors import InvalidSchedule
from orchestrator.settings import DEFAULTS
from state.schedules import Misfire, Run, Schedule, ScheduleStore
from state.store import StateStoreError
from state.tasks import cancel_until_done

log = structlog.get_logger(__name__)

# Starts the schedule's workflow for one tick; returns the workflow id.
StartRun = Callable[[Schedule, float], Awaitable[str]]

# A claimed tick is remembered this much longer than the gap to the next tick.
_CLAIM_MARGIN_S = 3600.0


# Longer than any cron a person writes ("0,15,30,45 8-18 * * 1-5" is 24): croniter's
# cost grows with the expression, and every replica evaluates every schedule each poll.
MAX_CRON_CHARS = 200


def check_cron(cron: str) -> None:
    """Accept 5-field cron expressions ("*/5 * * * *") and @aliases ("@hourly")."""
    if len(cron) > MAX_CRON_CHARS:
        raise InvalidSchedule(f"cron is over {MAX_CRON_CHARS} characters", field="cron")
    fields = cron.split()
    if not (len(fields) == 5 or (len(fields) == 1 and cron.startswith("@"))):
        raise InvalidSchedule(
            f"cron must have 5 fields (minute hour day month weekday), got {cron!r}",
            field="cron",
        )
    if not croniter.is_valid(cron):
        raise InvalidSchedule(f"invalid cron expression {cron!r}", field="cron")
    try:  # valid but impossible ("0 0 31 2 *": February 31st) never fires
        croniter(cron, datetime.fromtimestamp(0, UTC)).get_next(float)
    except CroniterError:
        raise InvalidSchedule(f"cron expression {cron!r} never fires", field="cron") from None


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a name too long for a path
        raise InvalidSchedule(f"unknown time zone {name!r}", field="timezone") from None


def latest_tick(cron: str, timezone: str, now: float) -> float:
    """The newest tick at or before `now` (epoch seconds)."""
    start = datetime.fromtimestamp(now, zone(timezone))
    prev: float = croniter(cron, start).get_prev(float)
    # get_prev is strictly before its start: a tick exactly at `now` is the one after prev.
    following: float = croniter(cron, datetime.fromtimestamp(prev, zone(timezone))).get_next(float)
    return following if following <= now else prev


def next_tick(cron: str, timezone: str, after: float) -> float:
    """The first tick strictly after `after`."""
    nxt: float = croniter(cron, datetime.fromtimestamp(after, zone(timezone))).get_next(float)
    return nxt


def due_tick(schedule: Schedule, now: float, *, grace_s: float) -> float | None:
    """The tick of `schedule` to fire at `now`, or None (see the module docstring)."""
    if schedule.paused:
        return None
    tick = latest_tick(schedule.cron, schedule.timezone, now)
    if tick < schedule.anchor:
        return None
    if schedule.misfire is Misfire.SKIP and now - tick > grace_s:
        return None
    return tick


class Scheduler:
    """Fires due schedules; one per replica, all sharing one `ScheduleStore`."""

    def __init__(
        self,
        *,
        store: ScheduleStore,
        start: StartRun,
        clock: Callable[[], float] = time.time,
        poll_s: float = DEFAULTS.schedule_poll_s,
        grace_s: float = DEFAULTS.schedule_grace_s,
    ) -> None:
        self.store = store
        self._start = start
        self.clock = clock
        self._poll_s = poll_s
        self._grace_s = grace_s
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    async def tick(self) -> list[str]:
        """One pass: start every due run this replica wins; returns their workflow ids."""
        now = self.clock()
        started: list[str] = []
        for schedule in await self.store.all():
            try:
                workflow_id = await self._fire(schedule, now)
            except StateStoreError as exc:  # a store hiccup: this one waits for the next pass
                log.warning(
                    "schedule_fire_failed", schedule_id=schedule.schedule_id, error=str(exc)
                )
                continue
            except Exception:  # one bad schedule must not stop the rest
                log.warning("schedule_fire_failed", schedule_id=schedule.schedule_id, exc_info=True)
                continue
            if workflow_id is not None:
                started.append(workflow_id)
        return started

    async def _fire(self, schedule: Schedule, now: float) -> str | None:
        tick = due_tick(schedule, now, grace_s=self._grace_s)
        if tick is None:
            return None
        gap = next_tick(schedule.cron, schedule.timezone, tick) - tick
        if not await self.store.claim_tick(
            schedule.schedule_id, tick, ttl_s=gap + self._grace_s + _CLAIM_MARGIN_S
        ):
            return None  # already fired, here or by another replica
        workflow_id = await self._start(schedule, tick)
        await self.store.record_run(schedule.schedule_id, Run(tick=tick, workflow_id=workflow_id))
        log.info(
            "schedule_fired", schedule_id=schedule.schedule_id, tick=tick, workflow_id=workflow_id
        )
        return workflow_id

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="scheduler")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        self._closing = True
        # Cancelled until it has ended, not once: a cancel lost in redis-py let the pass
        # go on and close() waited forever (a test's teardown hung; state/tasks.py).
        await cancel_until_done(task)
        if not task.cancelled():
            task.exception()  # retrieved: nothing to report, the loop only logs

    async def _loop(self) -> None:
        while not self._closing:
            await asyncio.sleep(self._poll_s)
            try:
                await self.tick()
            except StateStoreError as exc:
                # Redis away: try again next pass. One line per pass, not a traceback:
                # rendering one (every frame's locals, with rich) blocked the loop for
                # seconds in the tests, and an outage says nothing a traceback would add.
                log.warning("scheduler_pass_failed", error=str(exc))
            except Exception:  # a bug: its traceback is what someone needs
                log.exception("scheduler_pass_failed")
