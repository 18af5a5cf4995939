"""The agent transport seam: one HTTP request to an agent, nothing more.

`AgentClient` (agents/client.py) stacks the resilience layers; a transport only
sends one request and gives back the status, the headers and a size-capped body.
Two implementations ship:

- `AiohttpTransport` (the default): one `aiohttp.ClientSession` and its pool.
- `HttpxTransport` (`ORCH_HTTP_TRANSPORT=httpx`, agents/transport_httpx.py): one
  `httpx.AsyncClient`, httpx's own pool; what the respx unit tests of `AgentClient`
  drive. Imported only when chosen: httpx is ~6 MB of memory the default never needs.

Both keep no cookies, follow no redirects and ignore proxy variables from the
environment (agents are called only at the registry's URLs). They ask for
uncompressed bodies; an agent that compresses anyway is decoded as it streams in,
and the size cap counts the decoded bytes, so a small compressed "bomb" stops at
the cap too (give or take what one network chunk inflates to).

A transport raises only the `TransportError` tree below (cancellation passes through
untouched and aborts the request). Each implementation translates its library's
errors into it in exactly one function; `AgentClient` turns these into `AgentError`s
with the agent's and the workflow's context::

    TransportError                 base; never leaves agents/
    ├── TransportTimeout           a phase ran out: connect, read, write or pool
    ├── TransportConnectionError   refused, reset, closed early, not HTTP at all
    └── ResponseTooLarge           the body went past the cap; the connection is dropped

Timeouts per phase (`AgentTimeouts`): `connect` bounds opening a connection, `read`
each wait for bytes of the answer, `pool` the wait for a free connection when
`max_connections` are busy, `write` sending the request. aiohttp has no write
timeout: over aiohttp `write` is not enforced (agent requests are small, and
`AgentClient`'s per-attempt cap still bounds a whole attempt when one is set). Over
aiohttp `read` is kept on one shared timer rather than aiohttp's `sock_read` (see
`_AnswerWatch`): each wait for the body as before, the answer's head as a whole.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl
import sys
from collections.abc import Coroutine, Mapping
from typing import Any, Literal, NamedTuple, Protocol

import aiohttp
import msgspec

from agents.registry import AgentTimeouts
from circuit.bulkhead import Bulkhead
from circuit.cap import NO_CAP, Cap, CapTimer

__all__ = [
    "DEFAULT_KEEPALIVE_EXPIRY_S",
    "DEFAULT_MAX_CONNECTIONS",
    "IDENTITY",
    "AgentTransport",
    "AiohttpTransport",
    "ResponseTooLarge",
    "TimeoutPhaseName",
    "TransportConnectionError",
    "TransportError",
    "TransportName",
    "TransportResponse",
    "TransportTimeout",
    "connection_reason",
    "too_large",
    "create_transport",
]

TransportName = Literal["aiohttp", "httpx"]
TimeoutPhaseName = Literal["connect", "read", "write", "pool"]

# Sized above every agent's bulkhead at once (3 agents x 64 in flight by default), so
# the pool is never the bottleneck and keep-alive connections are reused, not churned.
DEFAULT_MAX_CONNECTIONS = 256
# Below aiohttp's server keep-alive (75 s) so we drop an idle connection before the
# agent does, and never write a request into a socket the agent is closing.
DEFAULT_KEEPALIVE_EXPIRY_S = 15.0

# Agents answer small JSON documents on a near network: compression is not worth
# inviting (and a body that is never inflated cannot be a decompression bomb).
IDENTITY = "identity"


class TransportError(Exception):
    """Base of what a transport raises (see the module docstring)."""


class TransportTimeout(TransportError):
    """One phase of the request ran out of time."""

    def __init__(self, phase: TimeoutPhaseName, timeout_s: float | None) -> None:
        super().__init__(f"{phase} timeout" + ("" if timeout_s is None else f" ({timeout_s} s)"))
        self.phase: TimeoutPhaseName = phase
        self.timeout_s = timeout_s


class TransportConnectionError(TransportError):
    """The connection could not be made or broke before a whole answer arrived.

    `reason` is in fixed words (clients see it in step errors); `detail` is the
    library's own text, which names addresses and ports: for the log only.
    """

    def __init__(self, reason: str, *, detail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


class ResponseTooLarge(TransportError):
    """The answer's body is larger than `limit_bytes`; the rest was not read."""

    def __init__(self, limit_bytes: int, declared_bytes: int | None = None) -> None:
        said = "" if declared_bytes is None else f" (Content-Length {declared_bytes})"
        super().__init__(f"response body larger than {limit_bytes} bytes{said}")
        self.limit_bytes = limit_bytes
        self.declared_bytes = declared_bytes


class TransportResponse(NamedTuple):
    """An answer: status, case-insensitive headers, the whole body (within the cap).

    A NamedTuple, as immutable as the frozen dataclass it was: one per request, and a
    transport builds it in C (`_new_tuple`), at a third of the dataclass's cost."""

    status: int
    headers: Mapping[str, str]
    body: bytes


# TransportResponse(...) without its NamedTuple __new__ (a Python frame).
_new_tuple = tuple.__new__


class AgentTransport(Protocol):
    """Sends one HTTP request to an agent. Implementations: see the module docstring.

    `request` raises only `TransportError`s; cancelling it aborts the request and closes
    its connection. A body longer than `max_body_bytes` raises `ResponseTooLarge`
    without reading the rest. `aclose` closes the pool; the owner calls it once.
    """

    async def request(
        self,
        method: str,
        url: str,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeouts: AgentTimeouts,
        max_body_bytes: int,
    ) -> TransportResponse: ...

    async def aclose(self) -> None: ...


_ERRNO_REASONS = {
    errno.ECONNREFUSED: "connection refused",
    errno.ECONNRESET: "connection reset by the agent",
    errno.EPIPE: "connection reset by the agent",
    errno.ENETUNREACH: "network unreachable",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ETIMEDOUT: "connection timed out",
}


def connection_reason(detail: BaseException) -> str:
    """A connection failure in fixed words, never the OS's text (it names host:port)."""
    # httpx's errors can only be met once the httpx transport has loaded it.
    httpx = sys.modules.get("httpx")
    closed: tuple[type[BaseException], ...] = (aiohttp.ServerDisconnectedError,)
    if httpx is not None:
        closed += (httpx.RemoteProtocolError,)
    seen: set[int] = set()
    error: BaseException | None = detail
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, socket.gaierror):
            return "the agent's host name could not be resolved"
        if isinstance(error, ssl.SSLError):
            return "TLS handshake failed"
        if isinstance(error, OSError) and error.errno in _ERRNO_REASONS:
            return _ERRNO_REASONS[error.errno]
        if isinstance(error, closed):
            return "the agent closed the connection"
        if isinstance(error, aiohttp.ClientPayloadError):
            return "the agent's answer was cut short"
        inner = getattr(error, "os_error", None)  # aiohttp.ClientConnectorError
        error = inner if isinstance(inner, BaseException) else error.__cause__ or error.__context__
    refused = "refused" in str(detail).lower()
    if httpx is not None and isinstance(detail, httpx.ConnectError) and refused:
        return "connection refused"  # httpx's own transport keeps only the text
    return f"connection failed ({type(detail).__name__})"


def too_large(declared: int | None, limit: int) -> None:
    """Raise ResponseTooLarge when a declared length is over the cap."""
    if declared is not None and declared > limit:
        raise ResponseTooLarge(limit, declared)


# -- aiohttp ------------------------------------------------------------------------------


class AiohttpTransport:
    """`AgentTransport` over one `aiohttp.ClientSession` (created on first use)."""

    def __init__(
        self,
        *,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        keepalive_expiry_s: float = DEFAULT_KEEPALIVE_EXPIRY_S,
    ) -> None:
        self._max_connections = max_connections
        self._keepalive_expiry_s = keepalive_expiry_s
        self._session: aiohttp.ClientSession | None = None
        # Our own pool gate, so a wait for a connection is its own phase ("pool") with its
        # own limit; aiohttp's connector never waits, it has the same number of slots. A
        # free slot is taken with a counter (no coroutine, no timer).
        self._slots = Bulkhead(max_connections)
        # One ClientTimeout per distinct AgentTimeouts (one per agent, plus overrides),
        # found first by the identity of the AgentTimeouts (each agent passes the same
        # object every time: no hashing of its four fields per request). The entry keeps
        # its key alive, so an id is never reused while it is in here.
        self._timeouts: dict[AgentTimeouts, aiohttp.ClientTimeout] = {}
        self._by_id: dict[int, tuple[AgentTimeouts, aiohttp.ClientTimeout]] = {}
        # The `read` limits, on one timer of the event loop (circuit/cap.py), not
        # aiohttp's `sock_read`: see `_AnswerWatch`.
        self._reads = CapTimer()
        # The request each task is waiting on the head of an answer for (`_AnswerWatch`).
        self._watches: dict[asyncio.Task[Any], _AnswerWatch] = {}
        # The loop the session was made in (the only one it serves): a request finds its
        # task there, without `asyncio.current_task()` asking for the running loop (a
        # system call, getpid: two per request).
        self._loop: asyncio.AbstractEventLoop | None = None

    def _open(self) -> aiohttp.ClientSession:
        # Made inside the running loop: aiohttp binds a session to the loop it is made in.
        loop = self._loop = asyncio.get_running_loop()
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=self._max_connections,
                limit_per_host=0,
                keepalive_timeout=self._keepalive_expiry_s,
            ),
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,
            headers={"Accept-Encoding": IDENTITY},
            response_class=_watched_response(self._reads, self._watches, loop),
        )
        return self._session

    def _client_timeout(self, timeouts: AgentTimeouts) -> aiohttp.ClientTimeout:
        known = self._by_id.get(id(timeouts))
        if known is not None and known[0] is timeouts:
            return known[1]
        cached = self._timeouts.get(timeouts)
        if cached is None:
            if len(self._timeouts) >= 256:  # bounded: overrides could be many
                self._timeouts.clear()
            cached = self._timeouts[timeouts] = aiohttp.ClientTimeout(
                total=None, connect=None, sock_connect=timeouts.connect, sock_read=None
            )
        if len(self._by_id) >= 256:
            self._by_id.clear()
        self._by_id[id(timeouts)] = (timeouts, cached)
        return cached

    async def request(
        self,
        method: str,
        url: str,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeouts: AgentTimeouts,
        max_body_bytes: int,
    ) -> TransportResponse:
        session = self._session or self._open()
        slots = self._slots
        if not slots.try_acquire():
            try:
                async with asyncio.timeout(timeouts.pool):
                    await slots.acquire()
            except TimeoutError:
                raise TransportTimeout("pool", timeouts.pool) from None
        task = asyncio.current_task(self._loop) or asyncio.current_task()
        assert task is not None  # a transport is used from a task: its caps need one
        watch = self._watches[task] = _AnswerWatch(timeouts.read, NO_CAP)
        try:
            # Awaited, not `async with`: the request's own coroutine, without the context
            # manager's two around it (resumed with it each time the request waits) and
            # the three of its exit; `release` in `finally` is what the exit does once the
            # body is read (the writer task has ended by then), and after an error.
            try:
                response = await session.request(
                    method,
                    url,
                    data=body,
                    headers=headers,
                    allow_redirects=False,
                    timeout=self._client_timeout(timeouts),
                )
            except BaseException as exc:
                if watch.cap.stop(exc):
                    raise TransportTimeout("read", timeouts.read) from None
                raise
            finally:
                del self._watches[task]
            watch.cap.stop(None)
            try:
                declared = response.content_length
                stream = response.content
                if (
                    declared is not None
                    and declared <= max_body_bytes
                    and stream.is_eof()
                    and "Content-Encoding" not in response.headers
                ):
                    # The common answer: all of it came with the head (an agent's small
                    # answer, one packet), taken from the stream's buffer at once, with no
                    # coroutine (`read` makes four) and no wait (for the writer task, long
                    # done: the agent read the request to answer it; `release` waits).
                    content = stream.read_nowait()
                else:
                    content = await self._read(response, max_body_bytes, timeouts.read)
                return _new_tuple(TransportResponse, (response.status, response.headers, content))
            finally:
                response.release()
        except aiohttp.ClientError as exc:
            raise _from_aiohttp(exc, timeouts) from exc
        finally:
            slots.release()

    async def _read(self, response: aiohttp.ClientResponse, limit: int, read_s: float) -> bytes:
        """The body still to come (or compressed), chunk by chunk within the cap: `read_s`
        bounds each wait for the next chunk, as aiohttp's `sock_read` would."""
        try:
            too_large(response.content_length, limit)
        except ResponseTooLarge:
            response.close()  # drop the connection rather than drain the body
            raise
        stream = response.content
        reads = self._reads
        parts: list[bytes] = []
        size = 0
        while True:
            cap = reads.start(read_s)
            try:
                chunk = await stream.readany()
            except BaseException as exc:
                if cap.stop(exc):
                    response.close()  # half an answer: the connection is not reused
                    raise TransportTimeout("read", read_s) from None
                raise
            cap.stop(None)
            if not chunk:
                return b"".join(parts)
            size += len(chunk)
            if size > limit:
                response.close()
                raise ResponseTooLarge(limit)
            parts.append(chunk)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class _AnswerWatch(msgspec.Struct):
    """The `read` limit of one request, from the moment it is sent until its head is in.

    aiohttp's own `sock_read` arms a timer of the event loop when a request is sent and
    arms it again (cancelling the last) at every chunk that comes in: two timers per
    answer, each a handle, a heap push and a cancelled entry the loop pops later, one
    timer comparison (a Python call) at a time. Instead, aiohttp is given no `sock_read`;
    the wait for the head is capped on the transport's one `CapTimer`, from when the
    response starts to be read (`_watched_response`: after the connection is made and
    the request written, where `sock_read` starts, so `connect` stays its own phase),
    and each wait for more of the body in `_read`. One difference, on the head alone:
    it must all come within `read` (aiohttp let each of its chunks restart the count;
    a head is a few hundred bytes, sent at once)."""

    # (A Struct, one per request: built in C, with no Python `__init__` frame.)

    read_s: float
    cap: Cap  # NO_CAP until the answer starts to be read


def _watched_response(
    reads: CapTimer,
    watches: dict[asyncio.Task[Any], _AnswerWatch],
    loop: asyncio.AbstractEventLoop,
) -> type[aiohttp.ClientResponse]:
    """aiohttp's response class (the session's public `response_class`), starting the
    `read` cap of its request (`_AnswerWatch`) when aiohttp starts reading the answer."""

    start = aiohttp.ClientResponse.start  # (not `super()`: an object made per call)

    class WatchedResponse(aiohttp.ClientResponse):
        def start(
            self, connection: aiohttp.connector.Connection
        ) -> Coroutine[Any, Any, aiohttp.ClientResponse]:
            # A plain method handing back aiohttp's coroutine: no frame of its own. Its
            # task, found on the session's loop (`loop`: no getpid of get_running_loop).
            task = asyncio.current_task(loop) or asyncio.current_task()
            watch = None if task is None else watches.get(task)
            if watch is not None:
                if watch.cap is not NO_CAP:
                    # An earlier start's cap, when aiohttp sends an idempotent request
                    # again after its kept-alive connection dropped: this try has its own.
                    watch.cap.stop(None)
                watch.cap = reads.start_at(None, watch.read_s, task=task)
            return start(self, connection)

    return WatchedResponse


def _from_aiohttp(exc: aiohttp.ClientError, timeouts: AgentTimeouts) -> TransportError:
    """The one place aiohttp's errors become ours."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return TransportTimeout("connect", timeouts.connect)
    # No ServerTimeoutError (aiohttp's `sock_read`): `read` is ours (`_AnswerWatch`).
    if isinstance(exc, aiohttp.ClientResponseError):  # the answer was not HTTP
        return TransportConnectionError("the agent's answer is not valid HTTP", detail=repr(exc))
    return TransportConnectionError(connection_reason(exc), detail=repr(exc))


def create_transport(
    name: TransportName = "aiohttp",
    *,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    keepalive_expiry_s: float = DEFAULT_KEEPALIVE_EXPIRY_S,
) -> AgentTransport:
    """The transport `ORCH_HTTP_TRANSPORT` names; the caller closes it with `aclose()`."""
    if name == "aiohttp":
        return AiohttpTransport(
            max_connections=max_connections, keepalive_expiry_s=keepalive_expiry_s
        )
    if name == "httpx":
        from agents.transport_httpx import HttpxTransport

        return HttpxTransport(
            max_connections=max_connections, keepalive_expiry_s=keepalive_expiry_s
        )
    raise ValueError(f"unknown transport {name!r}: expected 'aiohttp' or 'httpx'")
