"""The request-id middleware: every log line of a request carries its id; the response echoes it.

The id is the client's `X-Request-ID` when it is a sane token (1-128 characters of
letters, digits and `._:-`), else a fresh one: a client can correlate, never
inject into the logs. It is bound with structlog's contextvars for the request's
task (and copied into any task the request starts, such as the workflow it
submits), and echoed as `X-Request-ID`. Streaming handlers, which send their
headers themselves, read it with `request_id(request)`.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

REQUEST_ID_HEADER = "X-Request-ID"
_VALID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
_KEY: web.RequestKey[str] = web.RequestKey("request_id", str)


def request_id(request: web.Request) -> str:
    return request[_KEY] if _KEY in request else ""


@web.middleware
async def request_id_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    given = request.headers.get(REQUEST_ID_HEADER, "")
    rid = given if _VALID.fullmatch(given) else uuid.uuid4().hex
    request[_KEY] = rid
    with structlog.contextvars.bound_contextvars(request_id=rid):
        response = await handler(request)
    if not response.prepared:
        response.headers[REQUEST_ID_HEADER] = rid
    return response
