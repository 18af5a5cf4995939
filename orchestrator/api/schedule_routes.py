"""The schedule routes: create, list, get, pause, resume and delete cron schedules.

A schedule stores a workflow request (`query` and/or `workflow`, as for
POST /api/query) with a cron expression, a time zone and a misfire policy;
orchestrator/schedules.py fires it. The request is validated (and its workflow
compiled) when the schedule is created, so a bad one is a 4xx now, not a failed
run every tick.
"""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web
from croniter import CroniterError
from msgspec import UNSET

from orchestrator.api import replies
from orchestrator.api.access import ACCESS, principal
from orchestrator.api.errors import Forbidden
from orchestrator.api.requests import parse_schedule_request, read_json_object
from orchestrator.api.routes import json_response
from orchestrator.api.services import SERVICES, Services
from orchestrator.errors import InvalidSchedule, ScheduleNotFound
from orchestrator.schedules import check_cron, next_tick, zone
from state.schedules import Misfire, Schedule

routes = web.RouteTableDef()


@routes.post("/api/schedules")
async def create(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    body = await read_json_object(request)
    schedule = await _parse(body, request)
    await services.scheduler.store.save(schedule)
    response = json_response(await _body(services, schedule), status=201)
    response.headers["Location"] = f"/api/schedules/{schedule.schedule_id}"
    return response


@routes.get("/api/schedules")
async def list_all(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    who = principal(request)
    schedules = [s for s in await services.scheduler.store.all() if who.may_see(s.tenant)]
    bodies = [await _body(services, s, runs=False) for s in schedules]
    return json_response(replies.Schedules(schedules=bodies))


@routes.get("/api/schedules/{schedule_id}")
async def get(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    return json_response(await _body(services, await _find(request)))


@routes.post("/api/schedules/{schedule_id}/pause")
async def pause(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    schedule = await _find(request)
    schedule.paused = True
    await services.scheduler.store.save(schedule)
    return json_response(await _body(services, schedule))


@routes.post("/api/schedules/{schedule_id}/resume")
async def resume(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    schedule = await _find(request)
    if schedule.paused:
        # Ticks missed while paused never fire, whatever the misfire policy.
        schedule.paused = False
        schedule.anchor = services.scheduler.clock()
        await services.scheduler.store.save(schedule)
    return json_response(await _body(services, schedule))


@routes.delete("/api/schedules/{schedule_id}")
async def delete(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    schedule = await _find(request)
    if not await services.scheduler.store.delete(schedule.schedule_id):
        raise ScheduleNotFound(schedule.schedule_id)
    return web.Response(status=204)


async def _find(request: web.Request) -> Schedule:
    """The schedule of the path, if the caller's tenant may see it; else a 404 (no oracle)."""
    schedule_id = request.match_info["schedule_id"]
    schedule = await request.app[SERVICES].scheduler.store.get(schedule_id)
    if schedule is None or not principal(request).may_see(schedule.tenant):
        raise ScheduleNotFound(schedule_id)
    return schedule


async def _parse(body: dict[str, Any], request: web.Request) -> Schedule:
    services = request.app[SERVICES]
    who = principal(request)
    req = parse_schedule_request(body, max_query_chars=services.settings.max_query_chars)
    timezone = req.timezone or "UTC"
    check_cron(req.cron)
    zone(timezone)
    # A definition that does not compile, or calls agents the tenant may not, fails now.
    allowed = request.app[ACCESS].config.tenant(who.tenant).agents
    workflow, _ = await services.prepare(req, agents=allowed)
    missing = services.disallowed_agents(workflow, allowed)
    if missing:
        raise Forbidden(
            f"tenant {who.tenant!r} may not call agent(s) {', '.join(missing)}",
            code="agent_not_allowed",
            details={"agents": missing},
        )
    now = services.scheduler.clock()
    # What each tick submits: the body of POST /api/query, without mode.
    query_body: dict[str, Any] = {
        k: v for k, v in (("query", req.query), ("workflow", req.workflow)) if v is not None
    }
    return Schedule(
        schedule_id=uuid.uuid4().hex,
        name=req.name,
        tenant=who.tenant,
        cron=req.cron,
        timezone=timezone,
        request=query_body,
        misfire=req.misfire or Misfire.SKIP,
        created_at=now,
        anchor=now,
    )


def _next_run(schedule: Schedule, now: float) -> float | None:
    try:
        return next_tick(schedule.cron, schedule.timezone, now)
    except (CroniterError, InvalidSchedule):  # e.g. its zone left the tz database
        return None


async def _body(
    services: Services, schedule: Schedule, *, runs: bool = True
) -> replies.Schedule:
    now = services.scheduler.clock()
    path = f"/api/schedules/{schedule.schedule_id}"
    return replies.Schedule(
        schedule_id=schedule.schedule_id,
        name=schedule.name,
        tenant=schedule.tenant,
        cron=schedule.cron,
        timezone=schedule.timezone,
        request=schedule.request,
        misfire=schedule.misfire,
        paused=schedule.paused,
        created_at=schedule.created_at,
        anchor=schedule.anchor,
        next_run_at=None if schedule.paused else _next_run(schedule, now),
        links=replies.ScheduleLinks(self=path, pause=f"{path}/pause", resume=f"{path}/resume"),
        runs=[
            replies.ScheduleRun(
                tick=run.tick,
                workflow_id=run.workflow_id,
                status_url=f"/api/workflow/{run.workflow_id}/status",
            )
            for run in await services.scheduler.store.runs(schedule.schedule_id)
        ]
        if runs
        else UNSET,
    )
