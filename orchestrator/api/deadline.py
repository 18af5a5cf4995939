"""A deadline for request heads: a client must send each request line and its headers
within `timeout_s` of their first byte, or the connection is closed.

aiohttp has no such timeout (a "slowloris" client can trickle a header byte at a
time and hold a connection and its buffers forever), so `HeadDeadline` wraps the
protocol aiohttp makes for each connection and watches the bytes go by: it finds
where each head ends (the blank line), reads its `Content-Length` to know where the
body ends and the next head starts, and closes the transport when a head is
incomplete at its deadline. Bodies have their own limit (ORCH_BODY_TIMEOUT_S, in
`read_json_object`); a chunked body ends the watching for that connection (the
keep-alive and body timeouts still apply). Everything is passed on to aiohttp
unchanged; the wrapper only reads.

Use `serve_with_head_deadline(runner, host, port, timeout_s=...)` instead of a
`web.TCPSite`; it returns the `asyncio.Server` (close it before `runner.cleanup()`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

__all__ = ["HeadDeadline", "serve_with_head_deadline"]

_END = b"\r\n\r\n"
# Bigger than any head aiohttp accepts (128 fields of 8 KiB): past it, aiohttp itself
# answers 400 and the watch stops buffering.
_MAX_HEAD = 1024 * 1024


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

    # -- the watch

    def _feed(self, data: bytes) -> None:
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
            end = self._head.find(_END, start)
            if end == -1:
                if len(self._head) > _MAX_HEAD:
                    self._stop_watching()
                return
            rest = bytes(self._head[end + 4 :])
            head = bytes(self._head[: end + 4])
            self._in_head = False
            self._disarm()
            self._body_left = self._body_length(head)
            view = memoryview(rest)

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
        if self._watching:
            self._feed(data)
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
