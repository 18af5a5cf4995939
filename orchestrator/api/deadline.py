"""A deadline for request heads, and JSON answers to heads aiohttp would refuse in text.

A client must send each request line and its headers within `timeout_s` of their
first byte, or the connection is closed.

aiohttp has no such timeout (a "slowloris" client can trickle a header byte at a
time and hold a connection and its buffers forever), so `HeadDeadline` wraps the
protocol aiohttp makes for each connection and watches the bytes go by: it finds
where each head ends (the blank line), reads its `Content-Length` to know where the
body ends and the next head starts, and closes the transport when a head is
incomplete at its deadline. Bodies have their own limit (ORCH_BODY_TIMEOUT_S, in
`read_json_object`); a chunked body ends the watching for that connection (the
keep-alive and body timeouts still apply). Everything is passed on to aiohttp
unchanged; the wrapper only reads. A head that arrives whole in one read (the usual
request) has met its deadline already: it is checked where it lies, with no timer armed
and no copy made (~4 µs a request instead of ~9.5; tests/orchestrator/api/
test_head_deadline_watch.py holds it to what the copying watch did, read by read).

Heads aiohttp's parser would refuse with a plain-text 400 before any middleware runs
(so without our JSON error body, and with its version banner) are answered here in
our format and the connection closed: a request line over 8190 bytes (414
`request_line_too_long`), a method aiohttp does not parse (405 `method_not_allowed`),
a header block over 64 KiB (431 `headers_too_large`).

Use `serve_with_head_deadline(runner, host, port, timeout_s=...)` instead of a
`web.TCPSite`; it returns the `asyncio.Server` (close it before `runner.cleanup()`).
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiohttp import web

__all__ = ["HeadDeadline", "serve_with_head_deadline"]

_END = b"\r\n\r\n"
_MAX_LINE = 8190  # aiohttp's own max_line_size
_MAX_HEAD = 64 * 1024
# Methods aiohttp's parser reads (the router then answers 405 JSON for a route that
# does not take one); any other token is refused here in JSON.
_METHODS = frozenset(
    b"GET HEAD POST PUT DELETE OPTIONS PATCH TRACE CONNECT PROPFIND PROPPATCH MKCOL COPY "
    b"MOVE LOCK UNLOCK REPORT SEARCH".split()
)


class HeadDeadline(asyncio.Protocol):
    """Forwards to `inner` (aiohttp's RequestHandler); closes slow heads."""

    def __init__(self, inner: Any, timeout_s: float) -> None:
        self._inner = inner
        self._timeout_s = timeout_s
        self._transport: asyncio.BaseTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._head = bytearray()
        self._in_head = False
        self._body_left = 0
        self._watching = True
        self._rejected = False

    # -- the watch

    def _feed(self, data: bytes) -> bool:
        """Watch `data`; False when the connection was answered and closed here."""
        pos, size = 0, len(data)
        while pos < size and self._watching:
            if self._body_left:
                taken = min(self._body_left, size - pos)
                self._body_left -= taken
                pos += taken
                continue
            if not self._in_head:
                end = data.find(_END, pos)
                if end != -1:
                    # The whole head arrived in this read (the usual request): it met its
                    # deadline already, so no timer is armed and nothing is copied to
                    # collect it; checked where it lies.
                    if not self._line_ok(data, pos):
                        return False
                    self._body_left = self._body_length(data[pos : end + 4])
                    pos = end + 4
                    continue
                self._in_head = True
                self._head.clear()
                self._arm()
            start = max(0, len(self._head) - 3)
            self._head += memoryview(data)[pos:]
            if not self._line_ok(self._head, 0):
                return False
            end = self._head.find(_END, start)
            if end == -1:
                if len(self._head) > _MAX_HEAD:
                    self._reject(431, "headers_too_large", "the request headers are too large")
                    return False
                return True
            data = bytes(self._head[end + 4 :])
            pos, size = 0, len(data)
            head = bytes(self._head[: end + 4])
            self._in_head = False
            self._disarm()
            self._body_left = self._body_length(head)
        return True

    def _line_ok(self, buffer: bytes | bytearray, start: int) -> bool:
        """The request line that starts at `start` of `buffer`, as far as it has arrived."""
        eol = buffer.find(b"\r\n", start)
        if eol == -1:
            if len(buffer) - start > _MAX_LINE:
                self._reject(414, "request_line_too_long", "the request line is too long")
                return False
            return True
        if eol > start:
            space = buffer.find(b" ", start, eol)
            # No space before the line's end: no method this parser reads (405); an empty
            # method (a line that starts with a space) is aiohttp's to refuse.
            if space == -1 or (space > start and bytes(buffer[start:space]) not in _METHODS):
                self._reject(405, "method_not_allowed", "this method is not supported")
                return False
        if eol - start > _MAX_LINE:
            self._reject(414, "request_line_too_long", "the request line is too long")
            return False
        return True

    def _reject(self, status: int, code: str, message: str) -> None:
        self._stop_watching()
        self._rejected = True
        body = orjson.dumps({"error": {"code": code, "message": message, "details": None}})
        reason = {405: "Method Not Allowed", 414: "URI Too Long"}.get(
            status, "Request Header Fields Too Large"
        )
        head = (
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nServer: orchestrator\r\nConnection: close\r\n\r\n"
        )
        transport = self._transport
        if isinstance(transport, asyncio.WriteTransport):
            transport.write(head.encode() + body)
        if transport is not None:
            transport.close()

    def _body_length(self, head: bytes) -> int:
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length" and value.strip().isdigit():
                length = int(value.strip())
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                self._stop_watching()  # no cheap way to find its end: stop watching
                return 0
        return length

    def _arm(self) -> None:
        self._disarm()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._timeout_s, self._expire)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _stop_watching(self) -> None:
        self._watching = False
        self._disarm()
        self._head = bytearray()

    def _expire(self) -> None:
        self._timer = None
        if self._in_head and self._transport is not None:
            self._transport.close()

    # -- the protocol, forwarded

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._rejected or (self._watching and not self._feed(data)):
            return  # answered and closed here: aiohttp never sees it
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        result: bool | None = self._inner.eof_received()
        return result

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


async def serve_with_head_deadline(
    runner: web.AppRunner, host: str, port: int, *, timeout_s: float
) -> asyncio.Server:
    """Listen on host:port for `runner` (set up), every connection under a head deadline."""
    factory = runner.server
    if factory is None:
        raise RuntimeError("call runner.setup() first")
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: HeadDeadline(factory(), timeout_s), host, port, reuse_address=True
    )
