"""The request-id middleware: every log line of a request carries its id; the response echoes it.

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

REQUEST_ID_HEADER = "X-Request-ID"
_VALID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
_KEY: web.RequestKey[str] = web.RequestKey("request_id", str)


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


@web.middleware
async def request_id_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    given = request.headers.get(REQUEST_ID_HEADER, "")
    rid = given if _VALID.fullmatch(given) else fresh_request_id()
    request[_KEY] = rid
    # bind/reset rather than the bound_contextvars context manager: the same
    # contextvars tokens, without a generator per request.
    tokens = structlog.contextvars.bind_contextvars(request_id=rid)
    try:
        response = await handler(request)
    finally:
        structlog.contextvars.reset_contextvars(**tokens)
    if not response.prepared:
        response.headers[REQUEST_ID_HEADER] = rid
    return response
