"""JSON Schemas of the API's bodies, the `components/schemas` of the OpenAPI document."""

from __future__ import annotations

from typing import Any

from state.models import NodeStatus, WorkflowStatus

_NUM_OR_NULL: dict[str, Any] = {"type": ["number", "null"]}
_STR_OR_NULL: dict[str, Any] = {"type": ["string", "null"]}


def _object(required: dict[str, Any], **optional: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "required": sorted(required),
        "properties": {**required, **optional},
    }


_WORKFLOW_ERROR = {
    "type": ["object", "null"],
    "required": ["code", "message"],
    "properties": {
        "code": {"type": "string"},
        "message": {"type": "string"},
        "step_id": _STR_OR_NULL,
        "agent": _STR_OR_NULL,
    },
}

_STEP = _object(
    {
        "step_id": {"type": "string"},
        "kind": {"type": "string"},
        "status": {"enum": [s.value for s in NodeStatus]},
        "attempts": {"type": "integer", "minimum": 0},
    },
    agent=_STR_OR_NULL,
    started_at=_NUM_OR_NULL,
    finished_at=_NUM_OR_NULL,
    duration_ms=_NUM_OR_NULL,
    output={},
    error={"type": ["object", "null"]},
    fallback=_STR_OR_NULL,
    skip_reason=_STR_OR_NULL,
)

_WORKFLOW = _object(
    {
        "workflow_id": {"type": "string"},
        "definition_name": {"type": "string"},
        "status": {"enum": [s.value for s in WorkflowStatus]},
        "steps": {"type": "object", "additionalProperties": {"$ref": "#/components/schemas/Step"}},
        "created_at": {"type": "number"},
        "updated_at": {"type": "number"},
    },
    inputs={"type": "object"},
    fallbacks={"type": "array", "items": {"type": "object"}},
    result={},
    error=_WORKFLOW_ERROR,
    finished_at=_NUM_OR_NULL,
    owner=_STR_OR_NULL,
    definition={"type": ["object", "null"]},
    tenant=_STR_OR_NULL,
    schedule_id=_STR_OR_NULL,
    duration_ms=_NUM_OR_NULL,
    intent={"description": "the chain only: the NLP agent's intent"},
    data={"description": "the chain only: the Data agent's rows"},
    chart={"description": "the chain only: the Vega-Lite spec, or null"},
)

_WINDOW = {
    "type": ["object", "null"],
    "description": "the rate policy's sliding window now (null under the consecutive policy)",
    "properties": {
        "calls": {"type": "integer"},
        "failures": {"type": "integer"},
        "slow": {"type": "integer"},
        "failure_rate": {"type": "number", "description": "%"},
        "slow_rate": {"type": "number", "description": "%"},
    },
}
_FORCED = {
    "enum": ["open", "disabled", "follow", None],
    "description": "a mode set by ops (open, disabled) or by following other replicas",
}

_BREAKER = _object(
    {
        "name": {"type": "string"},
        "state": {"enum": ["closed", "open", "half_open"]},
        "failure_count": {"type": "integer"},
        "fail_max": {"type": "integer"},
        "reset_timeout_s": {"type": "number"},
        "calls": {"type": "integer"},
        "failures": {"type": "integer"},
        "rejections": {"type": "integer"},
        "trips": {"type": "integer"},
    },
    policy={"enum": ["rate", "consecutive"]},
    forced=_FORCED,
    window=_WINDOW,
    window_type={"enum": ["count", "time"]},
    window_size={"type": "integer"},
    failure_rate_threshold={"type": "number"},
    slow_call_duration_s={"type": "number"},
    slow_call_rate_threshold={"type": "number"},
    minimum_calls={"type": "integer"},
    open_wait_s={"type": "number", "description": "this (or the last) opening's wait"},
    backoff_level={"type": "integer", "description": "failed probes since the last close"},
    success_threshold={"type": "integer"},
    half_open_max_calls={"type": "integer"},
    opened_at=_NUM_OR_NULL,
    half_open_at=_NUM_OR_NULL,
    probes_in_flight={"type": "integer"},
    successes={"type": "integer"},
    url={"type": "string", "description": "the agent's URL (status only)"},
    replicas={
        "type": "object",
        "description": "status only: every live replica's state of this breaker, by replica id",
        "additionalProperties": {"type": "object"},
    },
    overall={
        "type": "object",
        "description": "status only: the deployment's view of this breaker",
        "properties": {
            "state": {"enum": ["closed", "open", "partly_open", "disabled"]},
            "forced": {"type": ["object", "null"]},
            "replicas": {"type": "integer"},
            "open": {"type": "integer"},
            "half_open": {"type": "integer"},
            "closed": {"type": "integer"},
            "window": _WINDOW,
        },
    },
)

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "additionalProperties": False,
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message", "details"],
                "additionalProperties": False,
                "properties": {
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                    "details": {"description": "whatever helps to act on the error; may be null"},
                },
            }
        },
    },
    "QueryRequest": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "query": {"type": ["string", "null"], "description": "required without `workflow`"},
            "mode": {"enum": ["sync", "async"], "default": "sync"},
            "workflow": {
                "type": "object",
                "description": "a workflow definition: see GET /api/workflows/schema",
            },
            "wait_s": {
                "type": ["number", "null"],
                "minimum": 0,
                "maximum": 300,
                "description": "sync only: answer 202 if not finished by then "
                "(default ORCH_SYNC_WAIT_S)",
            },
        },
    },
    "ScheduleRequest": {
        "type": "object",
        "additionalProperties": False,
        "required": ["cron"],
        "properties": {
            "cron": {"type": "string", "description": "5 fields, or an @alias (@hourly)"},
            "timezone": {"type": ["string", "null"], "default": "UTC"},
            "misfire": {"enum": ["skip", "catch_up", None], "default": "skip"},
            "name": {"type": ["string", "null"], "maxLength": 200},
            "query": {"type": ["string", "null"], "description": "required without `workflow`"},
            "workflow": {
                "type": "object",
                "description": "a workflow definition: see GET /api/workflows/schema",
            },
        },
    },
    "Schedule": _object(
        {
            "schedule_id": {"type": "string"},
            "cron": {"type": "string"},
            "timezone": {"type": "string"},
            "misfire": {"enum": ["skip", "catch_up"]},
            "paused": {"type": "boolean"},
            "request": {"type": "object"},
            "created_at": {"type": "number"},
            "anchor": {"type": "number"},
            "next_run_at": _NUM_OR_NULL,
            "links": {"type": "object"},
        },
        name=_STR_OR_NULL,
        tenant=_STR_OR_NULL,
        runs={
            "type": "array",
            "items": _object(
                {
                    "tick": {"type": "number"},
                    "workflow_id": {"type": "string"},
                    "status_url": {"type": "string"},
                }
            ),
        },
    ),
    "Schedules": _object(
        {"schedules": {"type": "array", "items": {"$ref": "#/components/schemas/Schedule"}}}
    ),
    "Paused": {
        "allOf": [
            {"$ref": "#/components/schemas/Workflow"},
            _object({"pause_requested": {"const": True}}),
        ]
    },
    "ValidateRequest": _object(
        {"workflow": {"type": "object", "description": "see GET /api/workflows/schema"}}
    )
    | {"additionalProperties": False},
    "Workflow": _WORKFLOW,
    "Step": _STEP,
    "Accepted": _object(
        {
            "workflow_id": {"type": "string"},
            "status": {"enum": [s.value for s in WorkflowStatus]},
            "links": _object(
                {
                    "status": {"type": "string"},
                    "cancel": {"type": "string"},
                    "events": {"type": "string"},
                    "plan": {"type": "string"},
                }
            ),
        }
    ),
    "Cancelled": {
        "allOf": [
            {"$ref": "#/components/schemas/Workflow"},
            _object({"cancel_requested": {"const": True}}),
        ]
    },
    "Validated": _object(
        {
            "valid": {"const": True},
            "plan": _object(
                {
                    "levels": {"type": "array", "items": {"type": "array"}},
                    "dependencies": {"type": "object"},
                    "critical_path": {"type": "array", "items": {"type": "string"}},
                    "max_parallelism": {"type": "integer"},
                },
                critical_path_length={"type": "number"},
                critical_path_unit={"type": "string"},
            ),
        }
    ),
    "Breaker": _BREAKER,
    "Breakers": _object(
        {
            "breakers": {
                "type": "object",
                "additionalProperties": {"$ref": "#/components/schemas/Breaker"},
            }
        },
        replica={"type": "string", "description": "the replica that answered"},
        shared={
            "type": "object",
            "description": "the breaker board: memory (this process) or redis (every replica)",
            "properties": {
                "backend": {"enum": ["memory", "redis"]},
                "available": {"type": "boolean"},
                "replicas": {"type": "array", "items": {"type": "string"}},
            },
        },
    ),
    "Metrics": _object(
        {
            "workflows": {"type": "object"},
            "steps": {"type": "object"},
            "agents": {"type": "object"},
            "retries_total": {"type": "integer"},
            "breaker_trips_total": {"type": "integer"},
        },
        fallbacks={"type": "integer"},
    ),
    "History": _object(
        {
            "workflows": {
                "type": "array",
                "items": _object(
                    {
                        "workflow_id": {"type": "string"},
                        "definition_name": {"type": "string"},
                        "status": {"enum": [s.value for s in WorkflowStatus]},
                        "created_at": {"type": "number"},
                    },
                    updated_at={"type": "number"},
                    finished_at=_NUM_OR_NULL,
                    owner=_STR_OR_NULL,
                    tenant=_STR_OR_NULL,
                    error=_WORKFLOW_ERROR,
                ),
            },
            "next_cursor": _STR_OR_NULL,
        }
    ),
    "OpsWorkflows": _object(
        {
            "running": {"type": "array", "items": {"$ref": "#/components/schemas/WorkflowSummary"}},
            "recent": {"type": "array", "items": {"$ref": "#/components/schemas/WorkflowSummary"}},
            "source": {"type": "string"},
        }
    ),
    "WorkflowSummary": _object(
        {
            "workflow_id": {"type": "string"},
            "definition_name": {"type": "string"},
            "status": {"enum": [s.value for s in WorkflowStatus]},
            "created_at": {"type": "number"},
            "finished_at": _NUM_OR_NULL,
            "duration_ms": _NUM_OR_NULL,
        }
    ),
    "Health": _object({"status": {"const": "ok"}}),
    "Ready": _object({"status": {"const": "ready"}, "state_store": {"type": "string"}}),
}
