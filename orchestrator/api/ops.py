"""Operator routes: Prometheus `/metrics`, the `/ops` page and the workflow lists it shows.

    GET  /metrics                      Prometheus text format (this app's registry)
    GET  /ops                          the ops page (orchestrator/ops/page.html, no CDN)
    GET  /api/ops/workflows            running and recently finished workflows on this replica
"""

from __future__ import annotations

import importlib.resources
from functools import cache
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from orchestrator.api.routes import json_response
from orchestrator.api.services import SERVICES
from state.models import WorkflowState

routes = web.RouteTableDef()


@routes.get("/metrics")
async def prometheus_metrics(request: web.Request) -> web.Response:
    registry = request.app[SERVICES].metrics.registry
    response = web.Response(body=generate_latest(registry))
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


@routes.get("/ops")
async def ops_page(request: web.Request) -> web.Response:
    return web.Response(
        body=_page(),
        content_type="text/html",
        charset="utf-8",
        headers={
            # Everything the page needs is in it; it talks only to this service.
            "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; "
            "style-src 'unsafe-inline'; img-src 'self' data:; connect-src 'self'",
            "Cache-Control": "no-cache",
        },
    )


@routes.get("/api/ops/workflows")
async def ops_workflows(request: web.Request) -> web.Response:
    orchestrator = request.app[SERVICES].orchestrator
    running = sorted(orchestrator.running.values(), key=lambda s: s.created_at, reverse=True)
    body = {
        "running": [_summary(s) for s in running],
        "recent": [_summary(s) for s in orchestrator.recent],
        # Where the list comes from: this replica's memory (a history index, when the
        # store keeps one, is the better source and replaces it).
        "source": "replica",
    }
    return json_response(body)


def _summary(state: WorkflowState) -> dict[str, Any]:
    finished = state.finished_at
    return {
        "workflow_id": state.workflow_id,
        "definition_name": state.definition_name,
        "status": state.status.value,
        "created_at": state.created_at,
        "finished_at": finished,
        "duration_ms": round((finished - state.created_at) * 1000.0, 3) if finished else None,
        "steps": len(state.steps),
    }


@cache
def _page() -> bytes:
    return importlib.resources.files("orchestrator.ops").joinpath("page.html").read_bytes()
