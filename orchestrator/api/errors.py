"""HTTP errors and the one middleware that turns every exception into a JSON error.

    ApiError (status, code, message, details)
    ├── BadRequest            400
    ├── NotFound              404
    ├── RequestTimeout        408
    ├── Conflict              409
    ├── PayloadTooLarge       413
    ├── UnsupportedMediaType  415
    └── Unprocessable         422

Other exceptions are mapped by walking their MRO through `_HANDLERS` (starlette's
way), so a new error type needs one entry here and no try/except in any route.
Anything unmapped is a 500 with a generic message; the traceback goes to the log,
never into the response.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import structlog
from aiohttp import web

from orchestrator.dag.errors import DefinitionError
from orchestrator.errors import WorkflowAlreadyFinished, WorkflowNotFound

log = structlog.get_logger(__name__)


class ApiError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details


class BadRequest(ApiError):
    status, code = 400, "bad_request"


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


def error_response(status: int, code: str, message: str, details: Any = None) -> web.Response:
    body = {"error": {"code": code, "message": message, "details": details}}
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


def _api_error(exc: BaseException) -> web.Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message, exc.details)


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
