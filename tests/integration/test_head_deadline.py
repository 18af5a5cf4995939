"""Request heads that trickle in are cut off; normal, keep-alive and body-carrying
requests on the same connections are untouched (the real app, real sockets)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
import pytest
from aiohttp import web

from orchestrator.api.deadline import serve_with_head_deadline
from orchestrator.app import create_app
from orchestrator.settings import Settings

HEAD_TIMEOUT_S = 0.3


@pytest.fixture
async def port() -> AsyncIterator[int]:
    runner = web.AppRunner(create_app(Settings()), shutdown_timeout=1.0)
    await runner.setup()
    server = await serve_with_head_deadline(runner, "127.0.0.1", 0, timeout_s=HEAD_TIMEOUT_S)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await runner.cleanup()


async def _read_response(reader: asyncio.StreamReader) -> bytes:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return head + await asyncio.wait_for(reader.readexactly(length), 10)


async def test_a_head_that_never_completes_is_cut_off(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    await writer.drain()
    # The server closes the connection: EOF, without an answer.
    assert await asyncio.wait_for(reader.read(), 10) == b""
    writer.close()


async def test_complete_requests_on_a_kept_alive_connection_are_untouched(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = b'{"workflow": {"name": "w", "nodes": []}}'
    for _ in range(3):
        writer.write(
            b"POST /api/workflows/validate HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        assert b" 422 " in (await _read_response(reader)).split(b"\r\n")[0]
        assert b" 200 " in (await _read_response(reader)).split(b"\r\n")[0]
        # Idle between requests longer than the head deadline: idle is not a slow head.
        await asyncio.sleep(HEAD_TIMEOUT_S * 2)
    writer.close()


@pytest.mark.parametrize(
    ("request_bytes", "status", "code"),
    [
        (b"FOO /api/query HTTP/1.1\r\nHost: x\r\n\r\n", 405, "method_not_allowed"),
        (b"GET /" + b"a" * 9_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "request_line_too_long"),
        (b"GET /healthz HTTP/1.1\r\n" + b"X-A: " + b"b" * 70_000, 431, "headers_too_large"),
    ],
)
async def test_heads_aiohttp_would_refuse_in_text_get_a_json_error(
    port: int, request_bytes: bytes, status: int, code: str
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request_bytes)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status} ".encode())
    assert b"Server: orchestrator" in head
    assert orjson.loads(body)["error"]["code"] == code
