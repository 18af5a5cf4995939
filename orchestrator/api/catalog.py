"""The route table: for every route, the role it needs and how OpenAPI describes it.

This is the ONE place a route's access rule lives. The auth middleware
(api/access.py) reads `required_role`, the OpenAPI document (api/openapi.py) is
built from `ENDPOINTS`, and the tests check that every route the app serves has an
entry here and vice versa, and drive every entry with every role.

Adding a route = one `Endpoint(...)` below (plus its handler in routes.py); its JSON
bodies are named by their types (api/bodies.py, api/replies.py), whose schemas the
document generates. What an
entry gets without saying: routes with a role document 401/403/429/503 and the
security schemes; every POST documents 403 `origin_not_allowed`, 413 and 415; a
JSON body documents the 400 body errors; a path parameter documents 404 `not_found`.

`role=None` is public (health probes, the contract itself). A role of `USER` means
"its own tenant's workflows": handlers answer 404 for another tenant's (no oracle
for ids). `ADMIN` holds every role and sees every tenant.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from orchestrator.access.principal import Role
from orchestrator.api import replies
from orchestrator.api.bodies import (
    HistoryParams,
    QueryRequest,
    ScheduleRequest,
    ValidateRequest,
)

JSONSchema = Mapping[str, Any]
# A JSON body's type (api/bodies.py, api/replies.py): its schema is generated from it.
Model = type[msgspec.Struct]
# A route's query parameters: their type (each field one parameter), or by hand:
# name -> (schema, description).
QuerySpec = Model | Mapping[str, tuple[JSONSchema, str]]


@dataclass(frozen=True, slots=True)
class Reply:
    """A success response: its description and body (a body type, or for a body that is not
    one of ours, such as SVG or an event stream, a schema in `media_type`)."""

    description: str
    schema: Model | JSONSchema | None = None
    media_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)  # name -> description


@dataclass(frozen=True, slots=True)
class Endpoint:
    method: str
    path: str
    role: Role | None
    summary: str
    tag: str
    replies: Mapping[int, Reply]
    description: str = ""
    # JSON request body's type (None: the route reads no body).
    body: Model | None = None
    # Error statuses this route itself answers -> the error codes it uses.
    errors: Mapping[int, tuple[str, ...]] = field(default_factory=dict)
    query: QuerySpec = field(default_factory=dict)


_WORKFLOW = {
    200: Reply("the workflow document", replies.Workflow),
}

ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "POST",
        "/api/query",
        Role.USER,
        "Run a query (the chain) or a workflow DAG",
        "workflows",
        description="A plain `query` runs the NLP -> Data -> Viz chain; with `workflow` runs "
        "that DAG. `mode: sync` (default) answers with the result if it ends within `wait_s` "
        "(default ORCH_SYNC_WAIT_S), else 202 like async; `async` answers 202 at once. The "
        "workflow belongs to the caller's tenant. With an `Idempotency-Key` header (1-255 "
        "printable ASCII characters) a retry with the same key and body returns the same "
        "workflow (header `Idempotent-Replayed: true`) and runs nothing; the same key with "
        "another body is a 422. Keys are per tenant and expire with the workflow.",
        body=QueryRequest,
        replies={
            200: Reply("finished: completed, degraded or cancelled", replies.Workflow),
            202: Reply(
                "accepted (async, or sync past wait_s)",
                replies.Accepted,
                headers={"Location": "the workflow's status URL"},
            ),
            502: Reply("the workflow failed (an agent it needed failed)", replies.Workflow),
            504: Reply("the workflow's deadline passed", replies.Workflow),
        },
        errors={
            400: (
                "missing_field",
                "invalid_type",
                "empty_query",
                "query_too_long",
                "invalid_mode",
                "invalid_wait",
                "invalid_value",
                "unknown_field",
                "invalid_idempotency_key",
            ),
            403: ("agent_not_allowed",),
            409: ("idempotency_key_in_progress",),
            422: ("invalid_workflow", "definition_too_complex", "idempotency_key_reused"),
            429: ("too_many_workflows", "tenant_quota_exceeded"),
        },
    ),
    Endpoint(
        "GET",
        "/api/workflows",
        Role.USER,
        "History: workflows, newest first",
        "workflows",
        description="A user sees its tenant's workflows, an admin every tenant's. Follow "
        "`next_cursor` (also in a `Link` header) until it is null; a page may hold fewer "
        "than `limit` entries when filters drop most of what it examined. Entries go when "
        "their workflow expires.",
        query=HistoryParams,
        replies={200: Reply("one page", replies.History)},
        errors={
            400: ("unknown_parameter", "invalid_parameter", "invalid_cursor"),
        },
    ),
    Endpoint(
        "GET",
        "/api/workflow/{workflow_id}/status",
        Role.USER,
        "A workflow's state",
        "workflows",
        description="404 when unknown, expired, or another tenant's.",
        replies=_WORKFLOW,
        errors={404: ("workflow_not_found",)},
    ),
    Endpoint(
        "POST",
        "/api/workflow/{workflow_id}/cancel",
        Role.USER,
        "Cancel a workflow wherever it runs",
        "workflows",
        description="Idempotent: cancelling an already cancelled workflow answers 200 with "
        "its document; 409 only for one that ended another way. No body is needed; a body, "
        "if sent, must be JSON. 404 for another tenant's workflow.",
        replies={
            200: Reply("stopped; the document with status cancelled", replies.Cancelled),
            202: Reply("cancel requested; not yet confirmed stopped", replies.Cancelled),
        },
        errors={404: ("workflow_not_found",), 409: ("workflow_finished",)},
    ),
    Endpoint(
        "POST",
        "/api/workflow/{workflow_id}/pause",
        Role.USER,
        "Pause a workflow: running nodes finish, no new one starts",
        "workflows",
        description="From any replica; idempotent. Status becomes `paused` once the running "
        "nodes have ended (202 until then). No body is needed; a body, if sent, must be JSON. "
        "404 for another tenant's workflow.",
        replies={
            200: Reply("paused", replies.Paused),
            202: Reply("pause requested; running nodes still finishing", replies.Paused),
        },
        errors={404: ("workflow_not_found",), 409: ("workflow_finished",)},
    ),
    Endpoint(
        "POST",
        "/api/workflow/{workflow_id}/resume",
        Role.USER,
        "Resume a paused workflow where it stopped",
        "workflows",
        description="On the replica that gets the request; settled steps are kept. A workflow "
        "still finishing its running nodes just goes on. 404 for another tenant's workflow.",
        replies=_WORKFLOW,
        errors={404: ("workflow_not_found",), 409: ("workflow_finished",)},
    ),
    Endpoint(
        "POST",
        "/api/schedules",
        Role.USER,
        "Schedule a query or workflow on a cron expression",
        "schedules",
        description="Each tick starts one run across all replicas, as the caller's tenant, "
        "like an async POST /api/query. The request is validated now.",
        body=ScheduleRequest,
        replies={
            201: Reply(
                "created",
                replies.Schedule,
                headers={"Location": "the schedule's URL"},
            )
        },
        errors={
            400: (
                "missing_field",
                "invalid_type",
                "empty_query",
                "query_too_long",
                "unknown_field",
            ),
            403: ("agent_not_allowed",),
            422: ("invalid_schedule", "invalid_workflow"),
        },
    ),
    Endpoint(
        "GET",
        "/api/schedules",
        Role.USER,
        "The caller's tenant's schedules",
        "schedules",
        replies={200: Reply("every schedule the caller may see", replies.Schedules)},
    ),
    Endpoint(
        "GET",
        "/api/schedules/{schedule_id}",
        Role.USER,
        "A schedule, with its newest runs",
        "schedules",
        replies={200: Reply("the schedule", replies.Schedule)},
        errors={404: ("schedule_not_found",)},
    ),
    Endpoint(
        "DELETE",
        "/api/schedules/{schedule_id}",
        Role.USER,
        "Delete a schedule (its past runs are not touched)",
        "schedules",
        replies={204: Reply("deleted", None)},
        errors={404: ("schedule_not_found",)},
    ),
    Endpoint(
        "POST",
        "/api/schedules/{schedule_id}/pause",
        Role.USER,
        "Stop firing a schedule",
        "schedules",
        replies={200: Reply("the schedule", replies.Schedule)},
        errors={404: ("schedule_not_found",)},
    ),
    Endpoint(
        "POST",
        "/api/schedules/{schedule_id}/resume",
        Role.USER,
        "Fire a schedule again (ticks missed while paused never fire)",
        "schedules",
        replies={200: Reply("the schedule", replies.Schedule)},
        errors={404: ("schedule_not_found",)},
    ),
    Endpoint(
        "GET",
        "/api/workflow/metrics",
        Role.OPS,
        "Workflow and agent totals",
        "operations",
        replies={
            200: Reply("totals, success rate, durations, retries, breaker trips", replies.Metrics)
        },
    ),
    Endpoint(
        "GET",
        "/api/circuit-breakers/status",
        Role.OPS,
        "Every agent's breaker across the deployment, with the agent's URL",
        "operations",
        description="This replica's breakers, every live replica's state of each, and an "
        "overall view per agent (replicas share them through Redis).",
        replies={200: Reply("breakers by agent name", replies.Breakers)},
    ),
    Endpoint(
        "POST",
        "/api/circuit-breakers/{agent}/open",
        Role.OPS,
        "Force an agent's breaker open on every replica",
        "operations",
        description="Every call to the agent then fails at once, on every replica within a "
        "second and across restarts, until reset. Audited.",
        replies={200: Reply("the breaker after the change", replies.Breaker)},
        errors={404: ("agent_not_found",), 503: ("breaker_board_unavailable",)},
    ),
    Endpoint(
        "POST",
        "/api/circuit-breakers/{agent}/reset",
        Role.OPS,
        "Close an agent's breaker on every replica",
        "operations",
        description="Lifts any forced mode and closes the breaker on every replica, whatever "
        "opened it. Audited.",
        replies={200: Reply("the breaker after the change", replies.Breaker)},
        errors={404: ("agent_not_found",), 503: ("breaker_board_unavailable",)},
    ),
    Endpoint(
        "POST",
        "/api/circuit-breakers/{agent}/disable",
        Role.OPS,
        "Disable an agent's breaker (held closed) on every replica",
        "operations",
        description="For emergencies: every call is admitted until `enable` or `reset`. "
        "Audited.",
        replies={200: Reply("the breaker after the change", replies.Breaker)},
        errors={404: ("agent_not_found",), 503: ("breaker_board_unavailable",)},
    ),
    Endpoint(
        "POST",
        "/api/circuit-breakers/{agent}/enable",
        Role.OPS,
        "Lift a forced mode: the breaker follows its policy again",
        "operations",
        description="Audited.",
        replies={200: Reply("the breaker after the change", replies.Breaker)},
        errors={404: ("agent_not_found",), 503: ("breaker_board_unavailable",)},
    ),
    Endpoint(
        "POST",
        "/api/workflows/validate",
        Role.USER,
        "Check a workflow definition (compile it without running) and plan it",
        "workflows",
        body=ValidateRequest,
        replies={200: Reply("valid, with its plan", replies.Validated)},
        errors={
            400: ("missing_field", "invalid_type", "unknown_field"),
            422: ("invalid_workflow", "definition_too_complex"),
        },
    ),
    Endpoint(
        "POST",
        "/api/workflows/plan.svg",
        Role.USER,
        "A workflow definition's plan as a picture",
        "workflows",
        description="The definition is validated as by `/api/workflows/validate`; the plan is "
        "drawn one column per level, one box per node, one curve per dependency (the "
        "critical path highlighted).",
        body=ValidateRequest,
        replies={200: Reply("an SVG document", {"type": "string"}, media_type="image/svg+xml")},
        errors={
            400: ("missing_field", "invalid_type", "unknown_field"),
            403: ("agent_not_allowed",),
            422: ("invalid_workflow",),
        },
    ),
    Endpoint(
        "GET",
        "/api/workflow/{workflow_id}/plan.svg",
        Role.USER,
        "A workflow's plan as a picture, nodes coloured by their steps' status",
        "workflows",
        description="Each node is a `<g class=\"node st-<status>\" data-node=\"<id>\">`; "
        "404 for another tenant's workflow.",
        replies={200: Reply("an SVG document", {"type": "string"}, media_type="image/svg+xml")},
        errors={404: ("workflow_not_found",), 422: ("invalid_workflow",)},
    ),
    Endpoint(
        "GET",
        "/api/workflow/{workflow_id}/events",
        Role.USER,
        "A workflow's progress as Server-Sent Events",
        "workflows",
        description="Replays what already happened (after `Last-Event-ID`, or `after`), then "
        "follows the workflow live from whichever replica runs it, and ends after the "
        "terminal event. Each event: `id` (a per-workflow sequence number), `event` (its "
        "type: `workflow.running`, `step.started`, `step.retrying`, `step.completed`, "
        "`step.fell_back`, `step.failed`, `step.skipped`, `step.cancelled`, "
        "`workflow.<terminal status>`), `data` (JSON). 404 for another tenant's workflow.",
        query={
            "after": (
                {"type": "integer", "minimum": 0},
                "resume after this event id (the `Last-Event-ID` header does the same)",
            )
        },
        replies={
            200: Reply(
                "an event stream", {"type": "string"}, media_type="text/event-stream"
            ),
            204: Reply("nothing more: the client's last event was the terminal one"),
        },
        errors={
            400: ("invalid_event_id",),
            404: ("workflow_not_found",),
            503: ("too_many_streams",),
        },
    ),
    Endpoint(
        "GET",
        "/metrics",
        Role.OPS,
        "Prometheus metrics",
        "operations",
        description="Workflows, steps, agent calls, retries, breakers, bulkheads and the "
        "state store, in the Prometheus text format (README: the metrics list).",
        replies={
            200: Reply(
                "Prometheus text exposition format", {"type": "string"}, media_type="text/plain"
            )
        },
    ),
    Endpoint(
        "GET",
        "/api/ops/workflows",
        Role.OPS,
        "Running and recently finished workflows (the whole deployment, from history)",
        "operations",
        replies={200: Reply("workflow summaries", replies.OpsWorkflows)},
    ),
    Endpoint(
        "GET",
        "/ops",
        None,
        "The ops page (breakers, workflows, a workflow's DAG live; no external files)",
        "operations",
        description="The page itself holds no data: every request it makes carries the key "
        "typed into it and needs that route's role (ops for breakers and lists; a key that "
        "may see the workflow for its DAG and events).",
        replies={200: Reply("an HTML page", {"type": "string"}, media_type="text/html")},
    ),
    Endpoint(
        "GET",
        "/api/workflows/schema",
        Role.USER,
        "The JSON Schema of workflow definitions",
        "workflows",
        replies={200: Reply("a JSON Schema (draft 2020-12)", {"type": "object"})},
    ),
    Endpoint(
        "GET",
        "/healthz",
        None,
        "Liveness",
        "service",
        replies={200: Reply("alive", replies.Health)},
    ),
    Endpoint(
        "GET",
        "/readyz",
        None,
        "Readiness: the state store answers",
        "service",
        replies={200: Reply("ready", replies.Ready)},
        errors={503: ("not_ready",)},
    ),
    Endpoint(
        "GET",
        "/api/openapi.json",
        None,
        "This document",
        "service",
        replies={200: Reply("OpenAPI 3.1", {"type": "object"})},
    ),
    Endpoint(
        "GET",
        "/api/docs",
        None,
        "The API documentation page (renders this document; no external files)",
        "service",
        replies={200: Reply("an HTML page", {"type": "string"}, media_type="text/html")},
    ),
)

_BY_ROUTE: dict[tuple[str, str], Endpoint] = {(e.method, e.path): e for e in ENDPOINTS}
if len(_BY_ROUTE) != len(ENDPOINTS):
    raise RuntimeError("two catalog entries for one method and path")


def endpoint(method: str, path: str) -> Endpoint | None:
    """The entry of a route (`path` is aiohttp's canonical form: `/a/{name}/b`)."""
    return _BY_ROUTE.get(("GET" if method == "HEAD" else method, path))
