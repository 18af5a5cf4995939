"""HeadDeadline's watch: a head that arrives whole in one read takes a fast path (no timer,
no copy), and whatever the reads, the wrapper does what the copy-everything watch did.

The reference below is that watch as it was (every head collected into a buffer under a
timer); the property feeds both the same byte stream, cut into the same reads at random,
and compares everything the rest of the service can see after each read: the bytes handed
to aiohttp, the answers written here, closed connections, and the head deadlines pending
on the loop (a state that differed would show in what a later read does: the streams go
on past it).
"""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.api.deadline import HeadDeadline

# The limits deadline.py enforces, for the reference watch (aiohttp's own line limit,
# 64 KiB of head) and the methods aiohttp's parser reads.
_END = b"\r\n\r\n"
_MAX_LINE = 8190
_MAX_HEAD = 64 * 1024
_METHODS = frozenset(
    b"GET HEAD POST PUT DELETE OPTIONS PATCH TRACE CONNECT PROPFIND PROPPATCH MKCOL COPY "
    b"MOVE LOCK UNLOCK REPORT SEARCH".split()
)


class _Reference(HeadDeadline):
    """The watch before the fast path: every head copied into `_head` under a timer."""

    def _feed(self, data: bytes) -> bool:
        view = memoryview(data)
        while view and self._watching:
            if self._body_left:
                taken = min(self._body_left, len(view))
                self._body_left -= taken
                view = view[taken:]
                continue
            if not self._in_head:
                self._in_head = True
                self._head.clear()
                self._arm()
            start = max(0, len(self._head) - 3)
            self._head += view
            if not self._whole_line_ok():
                return False
            end = self._head.find(_END, start)
            if end == -1:
                if len(self._head) > _MAX_HEAD:
                    self._reject(431, "headers_too_large", "the request headers are too large")
                    return False
                return True
            rest = bytes(self._head[end + 4 :])
            head = bytes(self._head[: end + 4])
            self._in_head = False
            self._disarm()
            self._body_left = self._body_length(head)
            view = memoryview(rest)
        return True

    def _whole_line_ok(self) -> bool:
        eol = self._head.find(b"\r\n")
        if eol == -1:
            if len(self._head) > _MAX_LINE:
                self._reject(414, "request_line_too_long", "the request line is too long")
                return False
            return True
        method = bytes(self._head[: self._head.find(b" ", 0, eol)]) if eol else b""
        if method and method not in _METHODS:
            self._reject(405, "method_not_allowed", "this method is not supported")
            return False
        if eol > _MAX_LINE:
            self._reject(414, "request_line_too_long", "the request line is too long")
            return False
        return True


class _Inner:
    def __init__(self) -> None:
        self.received: list[bytes] = []

    def connection_made(self, transport: Any) -> None:
        return None

    def data_received(self, data: bytes) -> None:
        self.received.append(bytes(data))

    def connection_lost(self, exc: Exception | None) -> None:
        return None


class _Transport(asyncio.WriteTransport):
    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: Any) -> None:
        self.written.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def _observe(watch: type[HeadDeadline], reads: list[bytes]) -> list[Any]:
    """What the rest of the service sees after each read: the bytes handed to aiohttp,
    the answers written here, whether the connection was closed, and how many head
    deadlines are pending (the loop's timers, through its public `call_later`)."""
    loop = asyncio.get_running_loop()
    timers: list[asyncio.TimerHandle] = []
    call_later = loop.call_later

    def recording(delay: float, callback: Any, *args: Any) -> asyncio.TimerHandle:
        timer = call_later(delay, callback, *args)
        timers.append(timer)
        return timer

    inner, transport = _Inner(), _Transport()
    protocol = watch(inner, 30.0)
    protocol.connection_made(transport)
    seen: list[Any] = []
    loop.call_later = recording  # type: ignore[method-assign,assignment]
    try:
        for data in reads:
            protocol.data_received(data)
            seen.append(
                (
                    b"".join(inner.received),
                    list(transport.written),
                    transport.closed,
                    sum(not timer.cancelled() for timer in timers),
                )
            )
        protocol.connection_lost(None)
    finally:
        loop.call_later = call_later  # type: ignore[method-assign]
    assert all(timer.cancelled() for timer in timers)  # none left behind
    return seen


_METHOD = st.sampled_from([b"GET", b"POST", b"PUT", b"DELETE", b"BREW", b"", b"NOSPACE"])
_NAME = st.sampled_from(
    [b"Host", b"Content-Type", b"content-length", b" Content-Length", b"X-Pad", b"Accept"]
)


@st.composite
def _request(draw: st.DrawFn) -> bytes:
    method = draw(_METHOD)
    path = b"/" + b"a" * draw(st.sampled_from([1, 20, _MAX_LINE + 10]))
    line = method + b"\r\n" if method == b"NOSPACE" else method + b" " + path + b" HTTP/1.1\r\n"
    headers = [
        draw(_NAME) + b": " + draw(st.sampled_from([b"x", b"application/json", b"7"]))
        for _ in range(draw(st.integers(0, 4)))
    ]
    body = b""
    if draw(st.booleans()):
        body = b"{" + b"b" * draw(st.integers(0, 40)) + b"}"
        headers.append(b"Content-Length: " + str(len(body)).encode())
    if draw(st.integers(0, 9)) == 0:
        headers.append(b"Transfer-Encoding: chunked")
    return line + b"".join(h + b"\r\n" for h in headers) + b"\r\n" + body


@st.composite
def _reads(draw: st.DrawFn) -> list[bytes]:
    stream = b"".join(draw(st.lists(_request(), min_size=1, max_size=4)))
    if draw(st.booleans()):
        stream += b"GET /unfinished HTTP/1.1\r\nHost: x"  # a head still on its way
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(stream) - 1)), max_size=8))))
    bounds = [0, *cuts, len(stream)]
    return [stream[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(reads=_reads())
async def test_the_watch_does_what_the_copying_watch_did_whatever_the_reads(
    reads: list[bytes],
) -> None:
    """Same bytes to aiohttp, same answers, same closes, same state after every read."""
    assert _observe(HeadDeadline, reads) == _observe(_Reference, reads)


async def test_a_request_that_arrives_whole_arms_no_deadline() -> None:
    """The usual request, head and body in one read (and two pipelined in the next): no
    timer is made for them; a head cut in two is timed until its end arrives."""
    body = b'{"query": "q"}'
    request = (
        b"POST /api/query HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    loop = asyncio.get_running_loop()
    made: list[float] = []
    call_later = loop.call_later

    def counting(delay: float, callback: Any, *args: Any) -> asyncio.TimerHandle:
        made.append(delay)
        return call_later(delay, callback, *args)

    loop.call_later = counting  # type: ignore[method-assign,assignment]
    try:
        seen = _observe(HeadDeadline, [request, request + request])
        assert made == []
        assert seen[-1] == (request * 3, [], False, 0)
        seen = _observe(HeadDeadline, [request[:20], request[20:]])
        assert made == [30.0]
        assert [pending for *_, pending in seen] == [1, 0]
    finally:
        loop.call_later = call_later  # type: ignore[method-assign]
