"""HTTP errors and the one middleware that turns every exception into a JSON error.

    ApiError (status, code, message, details, headers)
    ├── BadRequest            400
    ├── Unauthorized          401  (WWW-Authenticate)
    ├── Forbidden             403
    ├── NotFound              404
    ├── RequestTimeout        408
    ├── Conflict              409
    ├── PayloadTooLarge       413
    ├── UnsupportedMediaType  415
    ├── Unprocessable         422
    ├── TooManyRequests       429  (Retry-After)
    └── Unavailable           503  (Retry-After)

A state store that cannot be reached (or cannot keep up) is a 503
`state_store_unavailable` with `Retry-After`, never a 500.

Other exceptions are mapped by walking their MRO through `_HANDLERS` (starlette's
way), so a new error type needs one entry here and no try/except in any route.
Anything unmapped is a 500 with a generic message; the traceback goes to the log,
never into the response.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
import structlog
from aiohttp import web

from circuit.errors import BreakerBoardError
from orchestrator.dag.errors import DefinitionError
from orchestrator.errors import (
    InvalidSchedule,
    ScheduleNotFound,
    WorkflowAlreadyFinished,
    WorkflowNotFound,
)
from state.store import StateStoreError

log = structlog.get_logger(__name__)

# What a client is told to wait before retrying while the state store is away.
STORE_RETRY_AFTER_S = 1


class ApiError(Exception):
    status = 400
    code = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        details: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details
        self.headers = dict(headers or {})


class BadRequest(ApiError):
    status, code = 400, "bad_request"


class Unauthorized(ApiError):
    status, code = 401, "unauthorized"


class Forbidden(ApiError):
    status, code = 403, "forbidden"


class NotFound(ApiError):
    status, code = 404, "not_found"


class RequestTimeout(ApiError):
    status, code = 408, "request_timeout"


class Conflict(ApiError):
    status, code = 409, "conflict"


class PayloadTooLarge(ApiError):
    status, code = 413, "payload_too_large"


class UnsupportedMediaType(ApiError):
    status, code = 415, "unsupported_media_type"


class Unprocessable(ApiError):
    status, code = 422, "unprocessable"


class TooManyRequests(ApiError):
    status, code = 429, "rate_limited"


class Unavailable(ApiError):
    status, code = 503, "unavailable"


def error_response(status: int, code: str, message: str, details: Any = None) -> web.Response:
    body = {"error": {"code": code, "message": message, "details": details}}
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


def _api_error(exc: BaseException) -> web.Response:
    assert isinstance(exc, ApiError)
    response = error_response(exc.status, exc.code, exc.message, exc.details)
    response.headers.update(exc.headers)
    return response


def _definition_error(exc: BaseException) -> web.Response:
    assert isinstance(exc, DefinitionError)
    problems = [p.to_dict() for p in exc.problems]
    message = f"the workflow definition has {len(problems)} problem(s): " + "; ".join(
        p["message"] for p in problems[:5]
    )
    return error_response(422, "invalid_workflow", message, {"problems": problems})


def _not_found(exc: BaseException) -> web.Response:
    assert isinstance(exc, WorkflowNotFound)
    return error_response(404, "workflow_not_found", str(exc), {"workflow_id": exc.workflow_id})


def _already_finished(exc: BaseException) -> web.Response:
    assert isinstance(exc, WorkflowAlreadyFinished)
    details = {"workflow_id": exc.workflow_id, "status": exc.status.value}
    return error_response(409, "workflow_finished", str(exc), details)


def _store_unavailable(exc: BaseException) -> web.Response:
    assert isinstance(exc, StateStoreError)
    log.warning("state_store_unavailable", operation=exc.operation, error=str(exc))
    response = error_response(
        503,
        "state_store_unavailable",
        "the state store is unreachable or overloaded; retry shortly",
        {"backend": exc.backend, "operation": exc.operation},
    )
    response.headers["Retry-After"] = str(STORE_RETRY_AFTER_S)
    return response


def _board_unavailable(exc: BaseException) -> web.Response:
    # An ops action that could not be recorded for the deployment changed nothing.
    assert isinstance(exc, BreakerBoardError)
    response = error_response(
        503,
        "breaker_board_unavailable",
        f"the shared breaker board ({exc.backend}) is not reachable; nothing was changed",
        {"backend": exc.backend, "operation": exc.operation},
    )
    response.headers["Retry-After"] = "1"
    return response


def _schedule_not_found(exc: BaseException) -> web.Response:
    assert isinstance(exc, ScheduleNotFound)
    return error_response(404, "schedule_not_found", str(exc), {"schedule_id": exc.schedule_id})


def _invalid_schedule(exc: BaseException) -> web.Response:
    assert isinstance(exc, InvalidSchedule)
    return error_response(422, "invalid_schedule", str(exc), {"field": exc.field})


def _http_exception(exc: BaseException) -> web.Response:
    # aiohttp's own: unknown route (404), wrong method (405), body over client_max_size (413).
    assert isinstance(exc, web.HTTPException)
    code = {
        404: "not_found",
        405: "method_not_allowed",
        413: "payload_too_large",
    }.get(exc.status, "http_error")
    message = {
        404: "no such endpoint",
        413: "request body too large",
    }.get(exc.status, exc.reason)
    response = error_response(exc.status, code, message)
    if exc.status == 405 and "Allow" in exc.headers:
        response.headers["Allow"] = exc.headers["Allow"]
    return response


_HANDLERS: dict[type[BaseException], Callable[[BaseException], web.Response]] = {
    ApiError: _api_error,
    DefinitionError: _definition_error,
    WorkflowNotFound: _not_found,
    WorkflowAlreadyFinished: _already_finished,
    ScheduleNotFound: _schedule_not_found,
    InvalidSchedule: _invalid_schedule,
    StateStoreError: _store_unavailable,
    BreakerBoardError: _board_unavailable,
    web.HTTPException: _http_exception,
}


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except Exception as exc:
        for cls in type(exc).__mro__:
            mapper = _HANDLERS.get(cls)
            if mapper is not None:
                if isinstance(exc, web.HTTPException) and exc.status < 400:
                    raise  # redirects and other non-errors pass through untouched
                return mapper(exc)
        log.exception("unhandled_error", path=request.path, method=request.method)
        return error_response(500, "internal_error", "internal error; see the service log")
