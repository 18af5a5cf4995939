"""The API's request bodies and its error body, one typed model each (msgspec Structs).

These types are the contract: `api/requests.py` decodes requests into them
(api/decoding.py turns msgspec's errors into ours), and the OpenAPI document's
`components/schemas` are generated from them (api/schemas.py), so a field added
here is documented without another edit. Class docstrings and field `Meta`
descriptions become the schema's descriptions. Response bodies: api/replies.py.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from state.history import DEFAULT_LIMIT, MAX_LIMIT
from state.schedules import Misfire

# The longest wait a client may ask of a sync query.
MAX_WAIT_S = 300.0
# The longest schedule name.
MAX_SCHEDULE_NAME = 200

Mode = Literal["sync", "async"]

# The definition's own schema is a component of the document (api/schemas.py
# `definition_components`); it is checked by the compiler (422 `invalid_workflow`, every
# problem named by node and field), not here, so the field decodes as an object.
DEFINITION_COMPONENT = "WorkflowDefinition"
Definition = Annotated[
    dict[str, Any],
    Meta(
        description="a workflow definition: see GET /api/workflows/schema",
        extra_json_schema={"$ref": f"#/components/schemas/{DEFINITION_COMPONENT}"},
    ),
]
QueryText = Annotated[str, Meta(description="the question; required without `workflow`")]


class QueryRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """POST /api/query: a `query` runs the chain; a `workflow` runs that DAG (with `query`
    among its inputs when both are sent)."""

    query: QueryText | None = None
    mode: Mode = "sync"
    workflow: Definition | None = None
    wait_s: (
        Annotated[
            float,
            Meta(
                ge=0,
                le=MAX_WAIT_S,
                description="sync only: answer 202 if not finished by then "
                "(default ORCH_SYNC_WAIT_S)",
            ),
        ]
        | None
    ) = None


class ValidateRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """POST /api/workflows/validate and /api/workflows/plan.svg: the definition to check."""

    workflow: Definition


class ScheduleRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """POST /api/schedules: a query and/or workflow (as for POST /api/query, without
    `mode`) run on every tick of `cron` in `timezone`."""

    cron: Annotated[str, Meta(description="5 fields, or an @alias (@hourly)")]
    timezone: Annotated[str, Meta(description="an IANA time zone (null: UTC)")] | None = None
    misfire: Misfire | None = Misfire.SKIP
    name: Annotated[str, Meta(max_length=MAX_SCHEDULE_NAME)] | None = None
    query: QueryText | None = None
    workflow: Definition | None = None


_TIME = "epoch seconds or ISO 8601 (no zone: UTC), from 1970 to 9999"


class HistoryParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """GET /api/workflows' query string (an empty value is the same as none)."""

    status: Annotated[
        str,
        Meta(
            description="comma-separated statuses (pending, running, paused, completed, "
            "degraded, failed, cancelled)"
        ),
    ] = ""
    definition: Annotated[str, Meta(description="the definition's name (e.g. chain)")] = ""
    since: Annotated[str, Meta(description=f"created at or after: {_TIME}")] = ""
    until: Annotated[str, Meta(description=f"created before: {_TIME}")] = ""
    limit: Annotated[
        int, Meta(ge=1, le=MAX_LIMIT, description=f"entries per page ({DEFAULT_LIMIT})")
    ] = DEFAULT_LIMIT
    cursor: Annotated[str, Meta(description="the `next_cursor` of the previous page")] = ""


class ErrorDetail(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    code: Annotated[str, Meta(description="what went wrong, for programs (e.g. missing_field)")]
    message: Annotated[str, Meta(description="what went wrong, for people; names the field")]
    details: Annotated[Any, Meta(description="whatever helps to act on the error; may be null")]


class Error(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Every error the API answers (any 4xx or 5xx)."""

    error: ErrorDetail
