"""The HTTP routes (DESIGN.md "API"). Errors are raised, never built here: see api/errors.py."""

from __future__ import annotations

from typing import Any

import msgspec
import orjson
import structlog
from aiohttp import web

from circuit.breaker import Forced
from orchestrator.access.principal import Principal, Role
from orchestrator.api import replies
from orchestrator.api.access import ACCESS, principal
from orchestrator.api.admission import ADMISSION
from orchestrator.api.errors import Forbidden, NotFound, error_response
from orchestrator.api.openapi import docs_csp, docs_page, openapi_document
from orchestrator.api.pictures import svg_of
from orchestrator.api.redact import REDACTOR
from orchestrator.api.requests import (
    parse_history_query,
    parse_idempotency_key,
    parse_query_request,
    parse_workflow_body,
    read_json_object,
    request_digest,
)
from orchestrator.api.services import SERVICES
from orchestrator.dag.compiler import CompiledWorkflow
from orchestrator.dag.plan import plan_workflow
from orchestrator.dag.schema import definition_schema
from orchestrator.errors import WorkflowNotFound
from orchestrator.tracing import incoming_context
from state.models import WorkflowState, WorkflowStatus

routes = web.RouteTableDef()
log = structlog.get_logger(__name__)


def json_response(body: msgspec.Struct, *, status: int = 200) -> web.Response:
    """A typed body (api/replies.py) as JSON."""
    return web.Response(status=status, body=_encode(body), content_type="application/json")


_encode = msgspec.json.Encoder().encode


@routes.post("/api/query")
async def query(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    who = principal(request)
    body = await read_json_object(request)
    req = parse_query_request(body, max_query_chars=services.settings.max_query_chars)
    idempotency_key = parse_idempotency_key(request.headers.get("Idempotency-Key"))
    allowed = request.app[ACCESS].config.tenant(who.tenant).agents
    workflow, inputs = await services.prepare(req, agents=allowed)
    if req.workflow is None:
        _check_agents(workflow, allowed, who)
    orchestrator = services.orchestrator
    admission = request.app[ADMISSION]
    ticket = await admission.admit(
        who, is_async=req.mode == "async", timeout_s=workflow.definition.options.timeout_s
    )
    try:
        # An incoming W3C traceparent becomes the workflow span's parent (tracing on only).
        with incoming_context(request.headers, enabled=services.tracing):
            if idempotency_key is None:
                state = await orchestrator.submit(
                    workflow, inputs, definition=req.workflow, tenant=who.tenant
                )
            else:
                state, existed = await orchestrator.submit_once(
                    idempotency_key, request_digest(body), workflow, inputs,
                    definition=req.workflow, tenant=who.tenant,
                )
                if existed:  # a retry of an accepted submit: the same workflow, nothing runs
                    await admission.abandon(ticket)
                    return await _replay_response(request, state, req.mode)
    except BaseException:
        await admission.abandon(ticket)
        raise
    workflow_id = state.workflow_id
    admission.release_when(ticket, lambda: orchestrator.wait(workflow_id))
    if req.mode == "sync":
        wait_s = services.settings.sync_wait_s if req.wait_s is None else req.wait_s
        # Never outlive the caller's gateway: past wait_s the answer is async's 202,
        # and the workflow goes on (wait() shields it from this limit). A cap of the
        # shared timer, with asyncio.timeout's semantics (a cancel from outside, e.g.
        # the client gone, stays a cancel).
        cap = services.sync_waits.start(wait_s)
        try:
            state = await orchestrator.wait(workflow_id)
        except BaseException as exc:
            if not cap.stop(exc):
                raise
            # (past wait_s: `state` is still the accepted one, answered 202 below)
        else:
            cap.stop(None)
        if state.status.is_terminal:
            reply = replies.Workflow.of(state)
            return _workflow_response(request, reply, status=_status_code(state))
    return _accepted_response(state)


async def _replay_response(request: web.Request, state: WorkflowState, mode: str) -> web.Response:
    orchestrator = request.app[SERVICES].orchestrator
    if mode == "sync" and not state.status.is_terminal:
        state = await orchestrator.wait(state.workflow_id)
    if state.status.is_terminal and mode == "sync":
        reply = replies.Workflow.of(state)
        response = _workflow_response(request, reply, status=_status_code(state))
    else:
        response = _accepted_response(state)
    response.headers["Idempotent-Replayed"] = "true"
    return response


@routes.get("/api/workflows")
async def history(request: web.Request) -> web.Response:
    who = principal(request)
    query = parse_history_query(request.query, tenant=who.tenant, all_tenants=who.all_tenants)
    page = await request.app[SERVICES].orchestrator.store.history(query)
    # The store's entries (header documents) become the public shape; fields they add are left out.
    entries = msgspec.convert(page.entries, list[replies.HistoryEntry], from_attributes=True)
    body = _encode(replies.History(workflows=entries, next_cursor=page.cursor))
    if not who.has(Role.OPS):
        body = request.app[REDACTOR](body)  # error messages may name agent addresses
    response = web.Response(body=body, content_type="application/json")
    if page.cursor is not None:
        response.headers["Link"] = f'</api/workflows?cursor={page.cursor}>; rel="next"'
    return response


@routes.get("/api/workflow/metrics")
async def metrics(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    client = services.client
    agents = {}
    for name, breaker in client.breakers().items():
        snap = breaker.snapshot()
        agents[name] = replies.AgentTotals(
            retries=client.retries.get(name, 0),
            breaker_trips=snap.trips,
            breaker_state=snap.state.value,
            calls=snap.calls,
            failures=snap.failures,
            rejections=snap.rejections,
        )
    totals = services.orchestrator.metrics.snapshot()
    body = replies.Metrics(
        workflows=msgspec.convert(totals["workflows"], replies.WorkflowTotals),
        steps=msgspec.convert(totals["steps"], dict[str, replies.NodeTotals]),
        fallbacks=totals["fallbacks"],
        agents=agents,
        retries_total=sum(a.retries for a in agents.values()),
        breaker_trips_total=sum(a.breaker_trips for a in agents.values()),
    )
    return json_response(body)


@routes.get("/api/workflow/{workflow_id}/status")
async def status(request: web.Request) -> web.Response:
    state = await visible_state(request)
    return _workflow_response(request, replies.Workflow.of(state))


async def _control_target(request: web.Request) -> WorkflowState:
    """The workflow a cancel/pause/resume names, if the caller may see it (else 404)."""
    if request.body_exists:
        await read_json_object(request)  # a body is optional; when sent it must be JSON
    return await visible_state(request)


@routes.post("/api/workflow/{workflow_id}/cancel")
async def cancel(request: web.Request) -> web.Response:
    orchestrator = request.app[SERVICES].orchestrator
    state = await _control_target(request)
    state = await orchestrator.cancel(state.workflow_id)
    # 202 when the replica running it has not confirmed the stop within the wait.
    status = 200 if state.status.is_terminal else 202
    reply = replies.Cancelled.of(state, cancel_requested=True)
    return _workflow_response(request, reply, status=status)


@routes.post("/api/workflow/{workflow_id}/pause")
async def pause(request: web.Request) -> web.Response:
    orchestrator = request.app[SERVICES].orchestrator
    state = await _control_target(request)
    state = await orchestrator.pause(state.workflow_id)
    # 202 while the nodes that were running have not all ended yet.
    status = 200 if state.status is WorkflowStatus.PAUSED else 202
    reply = replies.Paused.of(state, pause_requested=True)
    return _workflow_response(request, reply, status=status)


@routes.post("/api/workflow/{workflow_id}/resume")
async def resume(request: web.Request) -> web.Response:
    orchestrator = request.app[SERVICES].orchestrator
    state = await _control_target(request)
    state = await orchestrator.resume(state.workflow_id)
    return _workflow_response(request, replies.Workflow.of(state))


@routes.get("/api/circuit-breakers/status")
async def breakers(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    body = await services.breakers.view()
    peers = services.client.a2a_peers
    for name, entry in body["breakers"].items():
        spec = services.client.registry[name]
        entry["url"] = spec.url
        entry["protocol"] = spec.protocol
        if spec.protocol == "a2a":
            # What the agent's card says (null until it could be read).
            peer = peers.get(name)
            entry["a2a"] = None if peer is None else peer.summary()
    return json_response(msgspec.convert(body, replies.Breakers))


# Ops actions, for every replica: open (held open until reset), reset (lift any mode,
# close), disable (held closed, every call admitted), enable (lift it). The last wins.
# One route each, so the route table (api/catalog.py) gives each its role and audit text.
async def _breaker_action(request: web.Request, mode: Forced | None, event: str) -> web.Response:
    services = request.app[SERVICES]
    name = _agent_name(request)
    breaker = await services.breakers.force(name, mode)
    _audit(request, event)
    return json_response(msgspec.convert(breaker.snapshot().to_dict(), replies.Breaker))


@routes.post("/api/circuit-breakers/{agent}/open")
async def force_open(request: web.Request) -> web.Response:
    return await _breaker_action(request, Forced.OPEN, "breaker_forced_open")


@routes.post("/api/circuit-breakers/{agent}/reset")
async def reset(request: web.Request) -> web.Response:
    return await _breaker_action(request, None, "breaker_reset")


@routes.post("/api/circuit-breakers/{agent}/disable")
async def disable(request: web.Request) -> web.Response:
    return await _breaker_action(request, Forced.DISABLED, "breaker_disabled")


@routes.post("/api/circuit-breakers/{agent}/enable")
async def enable(request: web.Request) -> web.Response:
    return await _breaker_action(request, None, "breaker_enabled")


@routes.post("/api/workflows/validate")
async def check_workflow(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    raw = parse_workflow_body(await read_json_object(request))
    allowed = request.app[ACCESS].config.tenant(principal(request).tenant).agents
    workflow = await services.compile_off_loop(raw, agents=allowed)
    plan = msgspec.convert(plan_workflow(workflow), replies.Plan, from_attributes=True)
    return json_response(replies.Validated(valid=True, plan=plan))


@routes.post("/api/workflows/plan.svg")
async def submitted_plan_svg(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    raw = parse_workflow_body(await read_json_object(request))
    allowed = request.app[ACCESS].config.tenant(principal(request).tenant).agents
    return svg_of(services.compile(raw, agents=allowed))


@routes.get("/api/workflow/{workflow_id}/plan.svg")
async def workflow_plan_svg(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    state = await visible_state(request)
    return svg_of(services.resolve(state), state)


@routes.get("/api/workflows/schema")
async def schema(request: web.Request) -> web.Response:
    # This service's kinds and built-in fallbacks, those given to create_app included.
    services = request.app[SERVICES]
    return _json(definition_schema(services.kinds, builtins=services.builtins))


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return json_response(replies.Health(status="ok"))


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    store = request.app[SERVICES].orchestrator.store
    if await store.ping():
        return json_response(replies.Ready(status="ready", state_store=store.backend))
    return error_response(503, "not_ready", f"state store ({store.backend}) is not reachable")


@routes.get("/api/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    # The definition component is this service's schema: its node kinds and fallbacks.
    services = request.app[SERVICES]
    return _json(openapi_document(definition_schema(services.kinds, builtins=services.builtins)))


@routes.get("/api/docs")
async def docs(request: web.Request) -> web.Response:
    response = web.Response(text=docs_page(), content_type="text/html")
    response.headers["Content-Security-Policy"] = docs_csp()
    return response


async def visible_state(request: web.Request) -> WorkflowState:
    """The workflow of the path, if the caller's tenant may see it; else a 404 (no oracle)."""
    workflow_id = request.match_info["workflow_id"]
    state = await request.app[SERVICES].orchestrator.status(workflow_id)
    if not principal(request).may_see(state.tenant):
        raise WorkflowNotFound(workflow_id)
    return state


def _check_agents(
    workflow: CompiledWorkflow, allowed: frozenset[str] | None, who: Principal
) -> None:
    if allowed is None:
        return
    needed = frozenset().union(*(node.compiled.agents for node in workflow.nodes.values()))
    missing = sorted(needed - allowed)
    if missing:
        raise Forbidden(
            f"tenant {who.tenant!r} may not call agent(s) {', '.join(missing)}",
            code="agent_not_allowed",
            details={"agents": missing},
        )


def _audit(request: web.Request, event: str) -> None:
    who = principal(request)
    log.warning(
        event,
        agent=request.match_info["agent"],
        key_id=who.key_id,
        tenant=who.tenant,
        remote=request.remote,
    )


def _agent_name(request: web.Request) -> str:
    client = request.app[SERVICES].client
    name = request.match_info["agent"]
    if name not in client.registry:
        raise NotFound(
            f"no agent {name!r}; known: {', '.join(client.registry)}",
            code="agent_not_found",
            details={"agent": name},
        )
    return name


def _json(document: dict[str, Any]) -> web.Response:
    # Documents that are JSON Schema / OpenAPI themselves, not bodies of ours.
    return web.Response(body=orjson.dumps(document), content_type="application/json")


def _accepted_response(state: WorkflowState) -> web.Response:
    response = json_response(replies.Accepted.of(state), status=202)
    response.headers["Location"] = f"/api/workflow/{state.workflow_id}/status"
    return response


def _workflow_response(
    request: web.Request, reply: replies.Workflow, *, status: int = 200
) -> web.Response:
    """The workflow document; agent addresses in it are only for callers with `ops`."""
    body = _encode(reply)
    if not principal(request).has(Role.OPS):
        body = request.app[REDACTOR](body)
    return web.Response(status=status, body=body, content_type="application/json")


def _status_code(state: WorkflowState) -> int:
    if state.status is WorkflowStatus.FAILED:
        timed_out = state.error is not None and state.error.code == "workflow_timeout"
        return 504 if timed_out else 502
    return 200
