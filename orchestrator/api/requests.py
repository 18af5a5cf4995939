"""Reading and checking requests: every problem becomes an ApiError a frontend can act on.

The body is read bounded (size, time, depth) by `read_json_object`, then decoded into
its typed model (api/bodies.py) by api/decoding.py; what a type cannot say (a query
required without a workflow, the query length limit from settings) is checked here.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, get_args

import msgspec
import orjson
from aiohttp import web

from orchestrator.api.bodies import (
    MAX_SCHEDULE_NAME,
    MAX_WAIT_S,
    HistoryParams,
    Mode,
    QueryRequest,
    ScheduleRequest,
    ValidateRequest,
)
from orchestrator.api.decoding import ValueRefusal, decode, field_names, unknown_fields
from orchestrator.api.errors import BadRequest, RequestTimeout, UnsupportedMediaType
from orchestrator.api.services import SERVICES
from orchestrator.dag.paths import json_type
from orchestrator.dag.values import json_depth
from orchestrator.errors import InvalidSchedule
from state.history import MAX_LIMIT, HistoryQuery, decode_cursor
from state.models import WorkflowStatus


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object (aiohttp answers 413 past client_max_size).

    The body must arrive within ORCH_BODY_TIMEOUT_S (a stalled upload is a 408) and
    nest at most ORCH_MAX_JSON_DEPTH levels (400 `nesting_too_deep`); a
    Content-Encoding other than identity is a 415.
    """
    settings = request.app[SERVICES].settings
    if request.content_type not in ("application/json", "application/octet-stream", ""):
        # octet-stream is what aiohttp reports when no Content-Type was sent at all.
        raise UnsupportedMediaType(
            f"expected Content-Type application/json, got {request.content_type!r}",
            details={"content_type": request.content_type},
        )
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding != "identity":
        raise UnsupportedMediaType(
            f"Content-Encoding {encoding!r} is not supported; send the body uncompressed",
            code="unsupported_content_encoding",
            details={"content_encoding": encoding},
        )
    try:
        length = request.content_length
        if request.content.is_eof() and length is not None and length <= settings.max_body_bytes:
            # All here already and within the app's client_max_size (the usual small
            # body): taken as it lies, without request.read()'s loop of two readany
            # coroutines and its copy (~1.5 µs a request). A body over the limit, or
            # one without a length, takes request.read() and its 413.
            raw = request.content.read_nowait()
        elif request.content.is_eof():
            raw = await request.read()
        else:
            async with asyncio.timeout(settings.body_timeout_s):
                raw = await request.read()
    except TimeoutError:
        raise RequestTimeout(
            f"the request body did not arrive within {settings.body_timeout_s:g} s",
            details={"timeout_s": settings.body_timeout_s},
        ) from None
    if not raw.strip():
        raise BadRequest("the request body is empty; send a JSON object", code="empty_body")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "recursion" in str(exc).lower():  # orjson's own depth limit (1024)
            raise BadRequest(
                "the JSON body is nested too deeply", code="nesting_too_deep"
            ) from None
        raise BadRequest(f"malformed JSON: {exc}", code="malformed_json") from None
    if not isinstance(body, dict):
        raise BadRequest(f"expected a JSON object, got {json_type(body)}", code="invalid_body")
    limit = settings.max_json_depth
    # Every object or array opens with its own `{` or `[` byte, so their count bounds the
    # depth: a body with at most `limit` of them (a query's, as a rule) needs no walk.
    if raw.count(b"{") + raw.count(b"[") > limit and json_depth(body, limit) > limit:
        raise BadRequest(
            f"the JSON body is nested more than {limit} levels deep",
            code="nesting_too_deep",
            details={"limit": limit},
        )
    return body


def parse_query_request(body: dict[str, Any], *, max_query_chars: int) -> QueryRequest:
    """POST /api/query's body (also a schedule's stored request) as a QueryRequest."""
    req = decode(body, QueryRequest, invalid_value=_QUERY_VALUES)
    check_query(req.query, required=req.workflow is None, max_chars=max_query_chars)
    return req


def parse_workflow_body(body: dict[str, Any]) -> dict[str, Any]:
    """The definition of a validate / plan.svg body."""
    return decode(body, ValidateRequest).workflow


def parse_schedule_request(body: dict[str, Any], *, max_query_chars: int) -> ScheduleRequest:
    """POST /api/schedules' body; the cron, zone and workflow are checked by the caller."""
    req = decode(body, ScheduleRequest, invalid_value=_SCHEDULE_VALUES)
    check_query(req.query, required=req.workflow is None, max_chars=max_query_chars)
    return req


def check_query(query: str | None, *, required: bool, max_chars: int) -> None:
    """What a query's type cannot say: required without a workflow, not blank, not too long
    (the limit is a setting, ORCH_MAX_QUERY_CHARS)."""
    if query is None:
        if required:
            raise BadRequest(
                "missing field 'query' (a non-empty string), or send a 'workflow'",
                code="missing_field",
                details={"field": "query"},
            )
        return
    if not query.strip():
        raise BadRequest("'query' is empty", code="empty_query", details={"field": "query"})
    if len(query) > max_chars:
        raise BadRequest(
            f"'query' is {len(query)} characters; the limit is {max_chars}",
            code="query_too_long",
            details={"field": "query", "length": len(query), "limit": max_chars},
        )


def _invalid_mode(field: str, value: Any) -> Exception:
    return BadRequest(
        f"unknown mode {value!r}; use 'sync' or 'async'",
        code="invalid_mode",
        details={"field": field, "allowed": list(get_args(Mode))},
    )


def _invalid_wait(field: str, value: Any) -> Exception:
    return BadRequest(
        f"'wait_s' must be between 0 and {MAX_WAIT_S:g} seconds, got {value}",
        code="invalid_wait",
        details={"field": field, "minimum": 0, "maximum": MAX_WAIT_S},
    )


def _invalid_misfire(field: str, value: Any) -> Exception:
    return InvalidSchedule(
        f"misfire must be 'skip' or 'catch_up', got {value!r}", field="misfire"
    )


def _name_too_long(field: str, value: Any) -> Exception:
    return BadRequest(
        f"'name' is over {MAX_SCHEDULE_NAME} characters",
        code="invalid_type",
        details={"field": field, "limit": MAX_SCHEDULE_NAME},
    )


_QUERY_VALUES: dict[str, ValueRefusal] = {"mode": _invalid_mode, "wait_s": _invalid_wait}
_SCHEDULE_VALUES: dict[str, ValueRefusal] = {"misfire": _invalid_misfire, "name": _name_too_long}


# Idempotency-Key: printable ASCII, as Stripe and the IETF draft use it.
_MAX_IDEMPOTENCY_KEY = 255


def parse_idempotency_key(value: str | None) -> str | None:
    """The Idempotency-Key header of a submit (None when absent)."""
    if value is None:
        return None
    if not 0 < len(value) <= _MAX_IDEMPOTENCY_KEY or not all(" " <= c <= "~" for c in value):
        raise BadRequest(
            f"Idempotency-Key must be 1 to {_MAX_IDEMPOTENCY_KEY} printable ASCII characters",
            code="invalid_idempotency_key",
            details={"header": "Idempotency-Key"},
        )
    return value


def request_digest(body: dict[str, Any]) -> str:
    """What makes two submits "the same request": their JSON body, key order aside."""
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def parse_history_query(
    params: Mapping[str, str], *, tenant: str, all_tenants: bool
) -> HistoryQuery:
    """GET /api/workflows' query string; a user sees only its tenant's workflows."""
    unknown = unknown_fields(params, HistoryParams)
    if unknown:
        raise BadRequest(
            f"unknown parameter(s): {', '.join(unknown)}; "
            f"allowed: {', '.join(sorted(field_names(HistoryParams)))}",
            code="unknown_parameter",
            details={"parameters": unknown},
        )
    # A parameter sent twice counts once, as its first value.
    first = {name: params[name] for name in params}
    try:
        # Not strict: a query string's values are all text ("limit=20" is the number 20).
        query = msgspec.convert(first, HistoryParams, strict=False)
    except msgspec.ValidationError:
        raise _bad_parameter("limit", f"an integer from 1 to {MAX_LIMIT}") from None
    statuses = frozenset(s for s in query.status.split(",") if s)
    known = {s.value for s in WorkflowStatus}
    if statuses - known:
        raise _bad_parameter("status", f"one or more of {', '.join(sorted(known))}")
    cursor = query.cursor or None
    if cursor is not None:
        decode_cursor(cursor)  # a forged one is a 400 now, not deep in the store
    return HistoryQuery(
        limit=query.limit,
        cursor=cursor,
        status=statuses,
        definition=query.definition or None,
        since=_timestamp(query.since, "since"),
        until=_timestamp(query.until, "until"),
        tenant=tenant,
        all_tenants=all_tenants,
    )


# 9999-12-31T23:59:59Z, the last moment an ISO 8601 time without extensions can name.
_LATEST_TIMESTAMP = 253_402_300_799.0


def _timestamp(raw: str, name: str) -> float | None:
    if not raw:
        return None
    expected = "epoch seconds or an ISO 8601 time, from 1970 to 9999"
    try:
        seconds = float(raw)
    except ValueError:
        try:
            moment = datetime.fromisoformat(raw)
        except ValueError:
            raise _bad_parameter(name, expected) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        seconds = moment.timestamp()
    # NaN, infinities and far-off numbers would break the index's millisecond members.
    if not 0.0 <= seconds <= _LATEST_TIMESTAMP:
        raise _bad_parameter(name, expected)
    return seconds


def _bad_parameter(name: str, expected: str) -> BadRequest:
    return BadRequest(
        f"parameter {name!r} must be {expected}",
        code="invalid_parameter",
        details={"parameter": name, "expected": expected},
    )
