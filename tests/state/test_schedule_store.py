"""The ScheduleStore contract (state/schedules.py), one suite run against both backends."""

from __future__ import annotations

import asyncio

from state.schedules import MAX_RUNS, Misfire, Run, Schedule
from tests.state.conftest import Backend, new_id


def make_schedule(**changes: object) -> Schedule:
    fields: dict[str, object] = {
        "schedule_id": new_id(),
        "cron": "*/5 * * * *",
        "timezone": "Europe/Paris",
        "request": {"query": "revenue by region"},
        "misfire": Misfire.CATCH_UP,
        "name": "every five",
        "created_at": 1000.0,
        "anchor": 1000.0,
    }
    fields.update(changes)
    return Schedule(**fields)  # type: ignore[arg-type]


async def test_save_get_list_delete(backend: Backend) -> None:
    """A saved schedule reads back equal, from a peer too; all() is oldest first; delete
    removes it once."""
    store = await backend.new()
    schedules = store.schedules()
    peer = (await backend.peer(store)).schedules()
    later = make_schedule(created_at=2000.0)
    first = make_schedule()
    await schedules.save(later)
    await schedules.save(first)
    assert await peer.get(first.schedule_id) == first
    assert [s.schedule_id for s in await peer.all()] == [first.schedule_id, later.schedule_id]
    first.paused = True
    await peer.save(first)
    assert (await schedules.get(first.schedule_id)) == first
    assert await schedules.delete(first.schedule_id) is True
    assert await schedules.delete(first.schedule_id) is False
    assert await peer.get(first.schedule_id) is None
    assert await schedules.get(new_id()) is None


async def test_stored_schedule_cannot_be_aliased(backend: Backend) -> None:
    store = (await backend.new()).schedules()
    schedule = make_schedule()
    await store.save(schedule)
    schedule.request["query"] = "changed"
    found = await store.get(schedule.schedule_id)
    assert found is not None and found.request == {"query": "revenue by region"}


async def test_one_claim_per_tick_across_replicas(backend: Backend) -> None:
    """Of many concurrent claims of one tick through two stores, exactly one wins."""
    store = await backend.new()
    a, b = store.schedules(), (await backend.peer(store)).schedules()
    schedule_id = new_id()
    results = await asyncio.gather(
        *(s.claim_tick(schedule_id, 1_800_000_000.0, ttl_s=600) for s in (a, b) * 5)
    )
    assert sorted(results) == [False] * 9 + [True]
    assert await a.claim_tick(schedule_id, 1_800_000_300.0, ttl_s=600) is True
    assert await b.claim_tick(new_id(), 1_800_000_000.0, ttl_s=600) is True


async def test_runs_newest_first_and_capped(backend: Backend) -> None:
    store = await backend.new()
    schedules = store.schedules()
    schedule = make_schedule()
    await schedules.save(schedule)
    for i in range(MAX_RUNS + 5):
        await schedules.record_run(schedule.schedule_id, Run(tick=float(i), workflow_id=f"w{i}"))
    runs = await (await backend.peer(store)).schedules().runs(schedule.schedule_id)
    assert len(runs) == MAX_RUNS
    assert runs[0] == Run(tick=float(MAX_RUNS + 4), workflow_id=f"w{MAX_RUNS + 4}")
    await schedules.delete(schedule.schedule_id)
    assert await schedules.runs(schedule.schedule_id) == []


async def test_namespaces_do_not_see_each_other(backend: Backend) -> None:
    store = await backend.new()
    other = (await backend.isolated(store)).schedules()
    schedule = make_schedule()
    await store.schedules().save(schedule)
    assert await other.get(schedule.schedule_id) is None
    assert await other.claim_tick(schedule.schedule_id, 60.0, ttl_s=60) is True
    assert await store.schedules().claim_tick(schedule.schedule_id, 60.0, ttl_s=60) is True
