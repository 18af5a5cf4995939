"""Cron arithmetic, misfire policies and the scheduler's pass, on an injected clock."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from structlog.testing import capture_logs

from orchestrator.errors import InvalidSchedule
from orchestrator.schedules import (
    Scheduler,
    check_cron,
    due_tick,
    latest_tick,
    next_tick,
    zone,
)
from state.schedules import MemorySchedules, Misfire, Schedule
from state.store import StateStoreError
from tests.fakes import FakeClock


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def schedule(cron: str = "0 * * * *", **changes: object) -> Schedule:
    fields: dict[str, object] = {
        "schedule_id": "s1",
        "cron": cron,
        "timezone": "UTC",
        "request": {"query": "q"},
        "created_at": at("2026-01-01T00:00:00"),
        "anchor": at("2026-01-01T00:00:00"),
    }
    fields.update(changes)
    return Schedule(**fields)  # type: ignore[arg-type]


async def run_until(scheduler: Scheduler, event: asyncio.Event) -> None:
    """Run the scheduler's background loop until `event` is set, then close it."""
    scheduler.start()
    try:
        async with asyncio.timeout(30):  # a hang guard, not a timing claim
            await event.wait()
    finally:
        await scheduler.close()


def test_latest_tick_includes_a_tick_exactly_now() -> None:
    assert latest_tick("*/5 * * * *", "UTC", at("2026-01-01T00:05:00")) == at("2026-01-01T00:05:00")
    assert latest_tick("*/5 * * * *", "UTC", at("2026-01-01T00:09:59")) == at("2026-01-01T00:05:00")
    assert next_tick("*/5 * * * *", "UTC", at("2026-01-01T00:05:00")) == at("2026-01-01T00:10:00")


def test_time_zone_and_daylight_saving() -> None:
    """09:00 in Paris is 08:00 UTC in winter and 07:00 UTC in summer."""
    assert next_tick("0 9 * * *", "Europe/Paris", at("2026-01-15T00:00:00")) == at(
        "2026-01-15T08:00:00"
    )
    assert next_tick("0 9 * * *", "Europe/Paris", at("2026-07-15T00:00:00")) == at(
        "2026-07-15T07:00:00"
    )


@pytest.mark.parametrize("cron", ["* * * *", "* * * * * *", "61 * * * *", "", "nonsense"])
def test_bad_cron_is_refused(cron: str) -> None:
    with pytest.raises(InvalidSchedule) as info:
        check_cron(cron)
    assert info.value.field == "cron"


def test_aliases_and_unknown_zone() -> None:
    check_cron("@hourly")
    with pytest.raises(InvalidSchedule) as info:
        zone("Mars/Olympus")
    assert info.value.field == "timezone"


def test_skip_fires_only_within_grace_and_catch_up_fires_the_latest_missed() -> None:
    now = at("2026-01-01T03:30:00")  # ticks at 01:00, 02:00, 03:00 were missed
    assert due_tick(schedule(), now, grace_s=60) is None
    assert due_tick(schedule(), at("2026-01-01T03:00:40"), grace_s=60) == at("2026-01-01T03:00:00")
    assert due_tick(schedule(misfire=Misfire.CATCH_UP), now, grace_s=60) == at(
        "2026-01-01T03:00:00"
    )


def test_no_tick_before_the_anchor_or_while_paused() -> None:
    created = schedule(misfire=Misfire.CATCH_UP, anchor=at("2026-01-01T00:30:00"))
    assert due_tick(created, at("2026-01-01T00:45:00"), grace_s=3600) is None
    assert due_tick(created, at("2026-01-01T01:00:00"), grace_s=60) == at("2026-01-01T01:00:00")
    assert due_tick(schedule(paused=True), at("2026-01-01T01:00:00"), grace_s=60) is None


async def test_scheduler_fires_each_tick_once_and_records_the_run() -> None:
    clock = FakeClock(at("2026-01-01T00:00:10"))
    store = MemorySchedules(clock=clock)
    started: list[tuple[str, float]] = []

    async def start(s: Schedule, tick: float) -> str:
        started.append((s.schedule_id, tick))
        return f"wf{len(started)}"

    await store.save(schedule("* * * * *"))
    scheduler = Scheduler(store=store, start=start, clock=clock, grace_s=30)
    assert await scheduler.tick() == ["wf1"]  # 00:00:00 is due (10 s ago)
    assert await scheduler.tick() == []  # claimed already
    clock.advance(60)
    assert await scheduler.tick() == ["wf2"]
    clock.advance(3600)  # an hour of ticks missed: only the current one fires, once
    assert await scheduler.tick() == ["wf3"]
    assert await scheduler.tick() == []
    assert started == [
        ("s1", at("2026-01-01T00:00:00")),
        ("s1", at("2026-01-01T00:01:00")),
        ("s1", at("2026-01-01T01:01:00")),
    ]
    assert [r.workflow_id for r in await store.runs("s1")] == ["wf3", "wf2", "wf1"]


async def test_a_failing_start_does_not_stop_other_schedules() -> None:
    clock = FakeClock(at("2026-01-01T00:00:00"))
    store = MemorySchedules(clock=clock)

    async def start(s: Schedule, tick: float) -> str:
        if s.schedule_id == "bad":
            raise RuntimeError("boom")
        return "ok"

    await store.save(schedule("* * * * *", schedule_id="bad", created_at=1.0))
    await store.save(schedule("* * * * *", schedule_id="good", created_at=2.0))
    assert await Scheduler(store=store, start=start, clock=clock).tick() == ["ok"]


async def test_the_background_loop_fires_due_schedules() -> None:
    """start() runs passes every poll_s in-process (the memory store's way) until close()."""

    clock = FakeClock(at("2026-01-01T00:00:05"))
    store = MemorySchedules(clock=clock)
    fired = asyncio.Event()

    async def start(s: Schedule, tick: float) -> str:
        fired.set()
        return "wf"

    await store.save(schedule("* * * * *"))
    await run_until(Scheduler(store=store, start=start, clock=clock, poll_s=0.001), fired)
    assert [r.workflow_id for r in await store.runs("s1")] == ["wf"]


async def test_close_ends_the_loop_even_when_a_pass_loses_the_cancel() -> None:
    """A pass that swallows close()'s cancel (as Python 3.11's asyncio.wait_for inside
    redis-py can) does not leave close() waiting forever."""
    entered = asyncio.Event()
    lost: list[str] = []

    class LosesOneCancel(MemorySchedules):
        async def all(self) -> list[Schedule]:
            entered.set()
            try:
                await asyncio.Event().wait()  # a read in flight
            except asyncio.CancelledError:
                if lost:
                    raise
                lost.append("cancel")
            return []

    async def start(s: Schedule, tick: float) -> str:
        raise AssertionError("nothing is due")

    scheduler = Scheduler(store=LosesOneCancel(), start=start, poll_s=0.001)
    scheduler.start()
    async with asyncio.timeout(30):  # a hang guard, not a timing claim
        await entered.wait()
        await scheduler.close()
    assert lost == ["cancel"]


@pytest.mark.parametrize(
    ("failure", "traceback"),
    [
        (StateStoreError("redis away", backend="redis", operation="schedules"), False),
        (RuntimeError("a bug"), True),
    ],
)
async def test_a_failed_pass_logs_a_store_outage_in_one_line_and_a_bug_with_its_traceback(
    failure: Exception, traceback: bool
) -> None:
    """While Redis is away every pass fails: each says so in one line (a traceback per
    pass, rendered with every frame's locals, blocked the loop); a bug keeps its traceback."""
    failed_twice = asyncio.Event()
    passes: list[int] = []

    class Failing(MemorySchedules):
        async def all(self) -> list[Schedule]:
            passes.append(1)
            if len(passes) >= 2:
                failed_twice.set()
            raise failure

    async def start(s: Schedule, tick: float) -> str:
        raise AssertionError("nothing is due")

    with capture_logs() as logs:
        await run_until(Scheduler(store=Failing(), start=start, poll_s=0.001), failed_twice)
    failures = [e for e in logs if e["event"] == "scheduler_pass_failed"]
    assert len(failures) >= 1  # the second pass may be cut short by close()
    for entry in failures:
        assert bool(entry.get("exc_info")) is traceback
        assert (entry.get("error") == str(failure)) is not traceback
