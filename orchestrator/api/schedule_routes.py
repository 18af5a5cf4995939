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

from orchestrator.api.errors import BadRequest, NotFound, Unprocessable
from orchestrator.api.requests import parse_query_request, read_json_object
from orchestrator.api.routes import json_response
from orchestrator.api.services import SERVICES, Services
from orchestrator.schedules import ScheduleError, check_cron, next_tick, zone
from state.schedules import Misfire, Schedule

routes = web.RouteTableDef()

_FIELDS = frozenset({"cron", "timezone", "misfire", "name", "query", "workflow"})
_MAX_NAME = 200


@routes.post("/api/schedules")
async def create(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    body = await read_json_object(request)
    schedule = _parse(body, services)
    await services.scheduler.store.save(schedule)
    response = json_response(await _body(services, schedule), status=201)
    response.headers["Location"] = f"/api/schedules/{schedule.schedule_id}"
    return response


@routes.get("/api/schedules")
async def list_all(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    schedules = await services.scheduler.store.all()
    return json_response(
        {"schedules": [await _body(services, s, runs=False) for s in schedules]}
    )


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
    schedule_id = request.match_info["schedule_id"]
    if not await services.scheduler.store.delete(schedule_id):
        raise _not_found(schedule_id)
    return web.Response(status=204)


async def _find(request: web.Request) -> Schedule:
    schedule_id = request.match_info["schedule_id"]
    schedule = await request.app[SERVICES].scheduler.store.get(schedule_id)
    if schedule is None:
        raise _not_found(schedule_id)
    return schedule


def _not_found(schedule_id: str) -> NotFound:
    return NotFound(
        f"no schedule {schedule_id!r}",
        code="schedule_not_found",
        details={"schedule_id": schedule_id},
    )


def _parse(body: dict[str, Any], services: Services) -> Schedule:
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise BadRequest(
            f"unknown field(s): {', '.join(unknown)}; allowed: {', '.join(sorted(_FIELDS))}",
            code="unknown_field",
            details={"fields": unknown},
        )
    cron = _string(body, "cron", required=True)
    timezone = _string(body, "timezone") or "UTC"
    misfire = _string(body, "misfire") or Misfire.SKIP.value
    name = _string(body, "name")
    assert cron is not None
    try:
        check_cron(cron)
        zone(timezone)
    except ScheduleError as exc:
        raise Unprocessable(
            str(exc), code="invalid_schedule", details={"field": exc.field}
        ) from None
    if misfire not in {m.value for m in Misfire}:
        raise Unprocessable(
            f"misfire must be 'skip' or 'catch_up', got {misfire!r}",
            code="invalid_schedule",
            details={"field": "misfire"},
        )
    if name is not None and len(name) > _MAX_NAME:
        raise BadRequest(f"'name' is over {_MAX_NAME} characters", code="invalid_type")
    query_body: dict[str, Any] = {k: body[k] for k in ("query", "workflow") if k in body}
    req = parse_query_request(query_body, max_query_chars=services.settings.max_query_chars)
    services.prepare(req)  # a definition that does not compile is a 422 now
    now = services.scheduler.clock()
    return Schedule(
        schedule_id=uuid.uuid4().hex,
        name=name,
        cron=cron,
        timezone=timezone,
        request=query_body,
        misfire=Misfire(misfire),
        created_at=now,
        anchor=now,
    )


def _string(body: dict[str, Any], field: str, *, required: bool = False) -> str | None:
    value = body.get(field)
    if value is None:
        if required:
            raise BadRequest(
                f"missing field {field!r}", code="missing_field", details={"field": field}
            )
        return None
    if not isinstance(value, str):
        raise BadRequest(
            f"'{field}' must be a string", code="invalid_type", details={"field": field}
        )
    return value


async def _body(services: Services, schedule: Schedule, *, runs: bool = True) -> dict[str, Any]:
    body = schedule.to_dict()
    now = services.scheduler.clock()
    body["next_run_at"] = (
        None if schedule.paused else next_tick(schedule.cron, schedule.timezone, now)
    )
    if runs:
        body["runs"] = [
            {**run.to_dict(), "status_url": f"/api/workflow/{run.workflow_id}/status"}
            for run in await services.scheduler.store.runs(schedule.schedule_id)
        ]
    body["links"] = {
        "self": f"/api/schedules/{schedule.schedule_id}",
        "pause": f"/api/schedules/{schedule.schedule_id}/pause",
        "resume": f"/api/schedules/{schedule.schedule_id}/resume",
    }
    return body
