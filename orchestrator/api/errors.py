"""The HTTP layer's own errors, and the one function that turns every exception into JSON.

ApiError is the HTTP layer's branch of the orchestrator's tree (orchestrator/errors.py
draws all of it): a raise site may pick the `code`, and `details`/`headers` are given
when it is raised.

`error_answer` (run by the service's one middleware, api/middleware.py) maps an
exception by walking its MRO through `_HANDLERS` (starlette's way), so no route
needs a try/except: lower layers' errors are first translated into
ours (`orchestrator.errors.translate`), a `RequestError` is answered with its own
status, code, details and headers, and anything else — the orchestrator's other
branches, a lower layer's error that should have been caught below, any other
exception — is a 500 `internal_error` with a generic message; the traceback goes to
the log, never into the response.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import msgspec
import structlog
from aiohttp import web

from orchestrator.api.bodies import Error, ErrorDetail
from orchestrator.errors import RequestError, translate

log = structlog.get_logger(__name__)

INTERNAL_ERROR_MESSAGE = "internal error; see the service log"


class ApiError(RequestError):
    """An error raised by the HTTP layer itself; the raise site may choose its `code`."""

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
        if code is not None:
            self.code = code
        self._details = details
        self._headers = dict(headers or {})

    def details(self) -> Any:
        return self._details

    def headers(self) -> Mapping[str, str]:
        return {**super().headers(), **self._headers}


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


class UnsupportedMediaType(ApiError):
    status, code = 415, "unsupported_media_type"


class Unprocessable(ApiError):
    status, code = 422, "unprocessable"


class TooManyRequests(ApiError):
    status, code = 429, "rate_limited"


def error_response(status: int, code: str, message: str, details: Any = None) -> web.Response:
    # The body is api/bodies.py's `Error`, the type the OpenAPI document describes.
    body = Error(error=ErrorDetail(code=code, message=message, details=details))
    return web.Response(status=status, body=_encode(body), content_type="application/json")


_encode = msgspec.json.Encoder().encode


def _request_error(exc: BaseException) -> web.Response:
    assert isinstance(exc, RequestError)
    if exc.status >= 500:
        # A dependency is away: worth a line in the log, with what failed underneath.
        log.warning(
            "dependency_unavailable",
            code=exc.code,
            details=exc.details(),
            cause=str(exc.__cause__ or exc),
        )
    response = error_response(exc.status, exc.code, str(exc), exc.details())
    response.headers.update(exc.headers())
    return response


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
    RequestError: _request_error,
    web.HTTPException: _http_exception,
}


def _internal_error(request: web.Request) -> web.Response:
    log.exception("unhandled_error", path=request.path, method=request.method)
    return error_response(500, "internal_error", INTERNAL_ERROR_MESSAGE)


def error_answer(request: web.Request, caught: Exception) -> web.Response:
    """The JSON answer to an exception a handler raised (call it in its `except` block:
    a redirect or other non-error HTTPException is raised again, untouched)."""
    exc = translate(caught)
    for cls in type(exc).__mro__:
        mapper = _HANDLERS.get(cls)
        if mapper is not None:
            if isinstance(exc, web.HTTPException) and exc.status < 400:
                raise caught  # redirects and other non-errors pass through untouched
            return mapper(exc)
    return _internal_error(request)

