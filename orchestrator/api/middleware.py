"""The service's one middleware (`edge_middleware`), and the request ids it hands out.

One coroutine does what five layered middlewares did, in their order, outermost
first: the request id, the browser checks (api/access.py: preflights, foreign
origins refused, CORS headers on every answer, error answers too), every exception
to JSON (api/errors.py `error_answer`), who is calling and may they (401/403/429),
the body's media type (415), then the route. Each aiohttp middleware is a coroutine
frame made per request and resumed at every wait of the handler below it; one is
the least aiohttp allows with any (it adds its own `_fix_request_current_app`).

The id is the client's `X-Request-ID` when it is a sane token (1-128 characters of
letters, digits and `._:-`), else a fresh one: a client can correlate, never
inject into the logs. It is bound with structlog's contextvars for the request's
task (and copied into any task the request starts, such as the workflow it
submits), and echoed as `X-Request-ID`. Streaming handlers, which send their
headers themselves, read it with `request_id(request)`.

A fresh id is 32 hex digits, like a uuid4's: a random 64-bit prefix per process
(drawn again in a forked child) and a 64-bit counter. Unique without a uuid4 per
request (an os.urandom system call and a UUID object: ~4 us of the ~8 us this
middleware cost per request); an id correlates, it is no secret.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from orchestrator.access.principal import OPEN_PRINCIPAL
from orchestrator.api.access import (
    ACCESS,
    add_cors_headers,
    authenticate,
    browser_refusal,
    check_media_type,
    check_role,
    is_preflight,
    preflight_answer,
    required_role,
    set_principal,
    spend_token,
)
from orchestrator.api.errors import error_answer

REQUEST_ID_HEADER = "X-Request-ID"
_VALID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
_KEY: web.RequestKey[str] = web.RequestKey("request_id", str)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _Ids:
    """Fresh request ids: this process's random prefix, then a counter."""

    def __init__(self) -> None:
        self.reseed()

    def reseed(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._counter = itertools.count()

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter):016x}"


_IDS = _Ids()
# A forked child (a worker, a test helper) must not hand out its parent's ids again.
os.register_at_fork(after_in_child=_IDS.reseed)


def request_id(request: web.Request) -> str:
    return request[_KEY] if _KEY in request else ""


def fresh_request_id() -> str:
    """A new id: 32 hex digits, never handed out before by this process or its parent."""
    return _IDS.next()


def assign_request_id(request: web.Request) -> str:
    """The request's id: the client's sane `X-Request-ID`, else a fresh one; kept on it."""
    given = request.headers.get(REQUEST_ID_HEADER, "")
    rid = given if _VALID.fullmatch(given) else fresh_request_id()
    request[_KEY] = rid
    return rid


@web.middleware
async def edge_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The request id, browser checks, errors to JSON, who is calling, the body's media
    type: the service's layers, outermost first, in one coroutine (one frame per request
    where five middlewares made five, each resumed again at every wait of the handler)."""
    rid = assign_request_id(request)
    # bind/reset rather than the bound_contextvars context manager: the same
    # contextvars tokens, without a generator per request.
    tokens = structlog.contextvars.bind_contextvars(request_id=rid)
    try:
        access = request.app[ACCESS]
        origins = access.config.cors_origins
        origin = request.headers.get("Origin")
        allowed = origin is not None and origin in origins
        refusal = browser_refusal(request, origin, allowed)
        if refusal is not None:
            refusal.headers[REQUEST_ID_HEADER] = rid
            return refusal
        response: web.StreamResponse
        if is_preflight(request):
            response = preflight_answer()
        else:
            try:
                role = required_role(request)
                if role is not None:
                    who = (
                        await authenticate(request, access)
                        if access.config.enabled
                        else OPEN_PRINCIPAL
                    )
                    check_role(request, who, role)
                    if who.limits.requests_per_s > 0:
                        await spend_token(access, who)
                    set_principal(request, who)
                check_media_type(request)
                response = await handler(request)
            except Exception as caught:
                response = error_answer(request, caught)
        add_cors_headers(response, origin, allowed, cors=bool(origins))
    finally:
        structlog.contextvars.reset_contextvars(**tokens)
    if not response.prepared:
        response.headers[REQUEST_ID_HEADER] = rid
    return response
