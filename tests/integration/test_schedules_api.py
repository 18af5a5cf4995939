"""Schedules through the API: CRUD and validation on the memory store, and exactly one
run per tick with two app instances on one Redis (injected clock)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from orchestrator.access.config import TenantPolicy
from orchestrator.api.services import SERVICES
from orchestrator.app import create_app
from state.redis import RedisStateStore
from tests.fakes import FakeClock
from tests.integration.conftest import Agents, settings_for
from tests.integration.principals import access_config, auth

QUESTION = "total profit by category"
# A poll this long keeps the background loop out of the way: the tests call tick().
IDLE_POLL_S = 3600.0


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


async def make(agents: Agents, aiohttp_client: Any, clock: FakeClock, **kwargs: Any) -> Any:
    store = kwargs.pop("store", None)
    app = create_app(
        settings_for(agents, schedule_poll_s=IDLE_POLL_S, **kwargs.pop("settings", {})),
        store=store,
        clock=clock,
        replica_id=kwargs.pop("replica_id", None),
    )
    return await aiohttp_client(app)


async def test_schedule_crud_and_a_run_linked_to_its_schedule(
    agents: Agents, aiohttp_client: Any
) -> None:
    clock = FakeClock(at("2026-01-01T08:59:30"))
    client = await make(agents, aiohttp_client, clock)
    created = await client.post(
        "/api/schedules",
        json={
            "cron": "0 9 * * *",
            "timezone": "UTC",
            "name": "morning report",
            "query": QUESTION,
            "misfire": "catch_up",
        },
    )
    assert created.status == 201
    body = await created.json()
    schedule_id = body["schedule_id"]
    assert created.headers["Location"] == f"/api/schedules/{schedule_id}"
    assert body["next_run_at"] == at("2026-01-01T09:00:00")
    assert body["runs"] == [] and body["paused"] is False and body["misfire"] == "catch_up"

    listed = await (await client.get("/api/schedules")).json()
    assert [s["schedule_id"] for s in listed["schedules"]] == [schedule_id]

    services = client.app[SERVICES]
    clock.advance(30)
    (workflow_id,) = await services.scheduler.tick()
    state = await services.orchestrator.wait(workflow_id)
    assert state.status.value == "completed"
    status = await (await client.get(f"/api/workflow/{workflow_id}/status")).json()
    assert status["schedule_id"] == schedule_id
    got = await (await client.get(f"/api/schedules/{schedule_id}")).json()
    assert got["runs"] == [
        {
            "tick": at("2026-01-01T09:00:00"),
            "workflow_id": workflow_id,
            "status_url": f"/api/workflow/{workflow_id}/status",
        }
    ]

    paused = await (await client.post(f"/api/schedules/{schedule_id}/pause")).json()
    assert paused["paused"] is True and paused["next_run_at"] is None
    clock.advance(86_400 + 30)  # the next day's 09:00 passes while paused
    assert await services.scheduler.tick() == []
    resumed = await (await client.post(f"/api/schedules/{schedule_id}/resume")).json()
    assert resumed["paused"] is False
    # catch_up never fires ticks missed while paused.
    assert await services.scheduler.tick() == []

    assert (await client.delete(f"/api/schedules/{schedule_id}")).status == 204
    assert (await client.get(f"/api/schedules/{schedule_id}")).status == 404
    gone = await client.delete(f"/api/schedules/{schedule_id}")
    assert gone.status == 404
    assert (await gone.json())["error"]["code"] == "schedule_not_found"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"query": QUESTION}, 400, "missing_field"),
        ({"cron": "* * *", "query": QUESTION}, 422, "invalid_schedule"),
        (
            {"cron": "* * * * *", "timezone": "Nowhere/City", "query": QUESTION},
            422,
            "invalid_schedule",
        ),
        ({"cron": "* * * * *", "misfire": "sometimes", "query": QUESTION}, 422, "invalid_schedule"),
        ({"cron": "* * * * *"}, 400, "missing_field"),
        ({"cron": "* * * * *", "query": QUESTION, "mode": "sync"}, 400, "unknown_field"),
        ({"cron": 5, "query": QUESTION}, 400, "invalid_type"),
        ({"cron": "0 0 31 2 *", "query": QUESTION}, 422, "invalid_schedule"),  # never fires
        # 20,001 minutes in one field: long enough to cost every poll of every replica.
        ({"cron": "1," * 20_000 + "1 * * * *", "query": QUESTION}, 422, "invalid_schedule"),
        ({"cron": "@hourly", "timezone": "A" * 300, "query": QUESTION}, 422, "invalid_schedule"),
        (
            {
                "cron": "* * * * *",
                "workflow": {"nodes": [{"id": "a", "kind": "agent", "agent": "nope"}]},
            },
            422,
            "invalid_workflow",
        ),
    ],
)
async def test_bad_schedules_are_refused(
    agents: Agents, aiohttp_client: Any, body: dict[str, Any], status: int, code: str
) -> None:
    client = await make(agents, aiohttp_client, FakeClock(at("2026-01-01T00:00:00")))
    response = await client.post("/api/schedules", json=body)
    assert response.status == status
    assert (await response.json())["error"]["code"] == code
    assert (await (await client.get("/api/schedules")).json())["schedules"] == []


@pytest.mark.redis
async def test_two_instances_on_one_redis_start_each_tick_exactly_once(
    agents: Agents, aiohttp_client: Any, redis_url: str
) -> None:
    """Both replicas pass over the schedule at every tick (concurrently); each of five
    ticks starts exactly one workflow, which either replica can report."""
    prefix = f"test:{uuid.uuid4().hex[:8]}:"
    clock = FakeClock(at("2026-01-01T00:00:30"))
    a = await make(
        agents,
        aiohttp_client,
        clock,
        store=RedisStateStore.from_url(redis_url, prefix=prefix),
        replica_id="a",
    )
    b = await make(
        agents,
        aiohttp_client,
        clock,
        store=RedisStateStore.from_url(redis_url, prefix=prefix),
        replica_id="b",
    )
    created = await a.post("/api/schedules", json={"cron": "* * * * *", "query": QUESTION})
    schedule_id = (await created.json())["schedule_id"]
    scheduler_a, scheduler_b = (c.app[SERVICES].scheduler for c in (a, b))
    started: list[str] = []
    for _ in range(5):
        clock.advance(60)
        for ids in await asyncio.gather(scheduler_a.tick(), scheduler_b.tick()):
            started += ids
        # A pass again at the same moment starts nothing more.
        assert await scheduler_b.tick() == [] and await scheduler_a.tick() == []
    assert len(started) == 5 and len(set(started)) == 5
    got = await (await b.get(f"/api/schedules/{schedule_id}")).json()
    assert [r["workflow_id"] for r in got["runs"]] == started[::-1]
    assert [r["tick"] for r in got["runs"]] == [
        at("2026-01-01T00:05:00") - 60 * i for i in range(5)
    ]
    for workflow_id in started:
        for client in (a, b):
            if workflow_id in client.app[SERVICES].orchestrator.running:
                await client.app[SERVICES].orchestrator.wait(workflow_id)
        status = await (await b.get(f"/api/workflow/{workflow_id}/status")).json()
        assert status["schedule_id"] == schedule_id
        assert status["status"] == "completed"
    await a.close()
    await b.close()


async def test_schedules_belong_to_their_tenant_and_run_as_it(
    agents: Agents, aiohttp_client: Any
) -> None:
    """Another tenant neither lists, reads, pauses nor deletes a schedule (404, no
    oracle); its runs carry the creating tenant; agents the tenant may not call are 403."""
    clock = FakeClock(at("2026-01-01T08:59:30"))
    tenants = {"globex": TenantPolicy(agents=frozenset({"nlp"}))}
    client = await make(
        agents, aiohttp_client, clock, settings={"access": access_config(tenants=tenants)}
    )
    created = await client.post(
        "/api/schedules", json={"cron": "0 9 * * *", "query": QUESTION}, headers=auth("user_a")
    )
    assert created.status == 201
    schedule_id = (await created.json())["schedule_id"]
    assert (await created.json())["tenant"] == "acme"
    url = f"/api/schedules/{schedule_id}"
    for method, path in (("GET", url), ("POST", f"{url}/pause"), ("DELETE", url)):
        response = await client.request(method, path, headers=auth("user_b"))
        assert response.status == 404, (method, path)
    listed = await (await client.get("/api/schedules", headers=auth("user_b"))).json()
    assert listed["schedules"] == []
    seen_by_admin = await (await client.get("/api/schedules", headers=auth("admin"))).json()
    assert [s["schedule_id"] for s in seen_by_admin["schedules"]] == [schedule_id]
    refused = await client.post(
        "/api/schedules", json={"cron": "0 9 * * *", "query": QUESTION}, headers=auth("user_b")
    )
    assert refused.status == 403
    assert (await refused.json())["error"]["code"] == "agent_not_allowed"

    clock.advance(30)
    services = client.app[SERVICES]
    (workflow_id,) = await services.scheduler.tick()
    await services.orchestrator.wait(workflow_id)
    mine = await client.get(f"/api/workflow/{workflow_id}/status", headers=auth("user_a"))
    assert (await mine.json())["tenant"] == "acme"
    theirs = await client.get(f"/api/workflow/{workflow_id}/status", headers=auth("user_b"))
    assert theirs.status == 404


async def test_scheduled_runs_count_against_the_tenants_async_quota(
    agents: Agents, aiohttp_client: Any
) -> None:
    """With room for one async workflow in state, the second tick's run is not started."""
    clock = FakeClock(at("2026-01-01T00:00:30"))
    tenants = {"acme": TenantPolicy(max_async_workflows=1)}
    client = await make(
        agents, aiohttp_client, clock, settings={"access": access_config(tenants=tenants)}
    )
    created = await client.post(
        "/api/schedules", json={"cron": "* * * * *", "query": QUESTION}, headers=auth("user_a")
    )
    schedule_id = (await created.json())["schedule_id"]
    scheduler = client.app[SERVICES].scheduler
    clock.advance(60)
    (first,) = await scheduler.tick()
    await client.app[SERVICES].orchestrator.wait(first)
    clock.advance(60)
    assert await scheduler.tick() == []
    got = await (await client.get(f"/api/schedules/{schedule_id}", headers=auth("user_a"))).json()
    assert [r["workflow_id"] for r in got["runs"]] == [first]
