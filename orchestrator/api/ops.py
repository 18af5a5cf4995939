"""Operator routes: Prometheus `/metrics`, the `/ops` page and the workflow lists it shows.

    GET  /metrics                      Prometheus text format (this app's registry)
    GET  /ops                          the ops page (orchestrator/ops/page.html, no CDN)
    GET  /api/ops/workflows            running and recently finished workflows, deployment-wide
                                       (from the store's history index, any replica)
"""

from __future__ import annotations

import importlib.resources
from functools import cache

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from orchestrator.api import replies
from orchestrator.api.routes import json_response
from orchestrator.api.services import SERVICES
from state.history import HistoryQuery
from state.models import HistoryEntry, WorkflowStatus, milliseconds

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


# How many of each list the page shows; the full listing is GET /api/workflows.
_OPS_LIST_LIMIT = 25
_FINISHED = frozenset(s.value for s in WorkflowStatus if s.is_terminal)
_UNFINISHED = frozenset(s.value for s in WorkflowStatus) - _FINISHED


@routes.get("/api/ops/workflows")
async def ops_workflows(request: web.Request) -> web.Response:
    # From the history index, so the page shows the whole deployment's workflows whichever
    # replica serves it (not only what this one runs). Operators see every tenant's.
    store = request.app[SERVICES].orchestrator.store
    running = await store.history(
        HistoryQuery(limit=_OPS_LIST_LIMIT, status=_UNFINISHED, all_tenants=True)
    )
    recent = await store.history(
        HistoryQuery(limit=_OPS_LIST_LIMIT, status=_FINISHED, all_tenants=True)
    )
    body = replies.OpsWorkflows(
        running=[_summary(entry) for entry in running.entries],
        recent=[_summary(entry) for entry in recent.entries],
        source="history",
    )
    return json_response(body)


def _summary(entry: HistoryEntry) -> replies.WorkflowSummary:
    created, finished = entry.created_at, entry.finished_at
    return replies.WorkflowSummary(
        workflow_id=entry.workflow_id,
        definition_name=entry.definition_name,
        status=entry.status,
        created_at=created,
        finished_at=finished,
        duration_ms=milliseconds(finished - created) if finished else None,
    )


@cache
def _page() -> bytes:
    return importlib.resources.files("orchestrator.ops").joinpath("page.html").read_bytes()
