"""The per-agent response size cap, over real sockets and both shipped transports."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator, Awaitable, Callable

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from agents.client import AgentClient
from agents.errors import AgentResponseTooLarge
from agents.registry import AgentRegistry, AgentSpec
from agents.transport import AgentTransport, TransportName, create_transport
from circuit.config import BreakerConfig, RetryConfig

AiohttpServer = Callable[..., Awaitable[TestServer]]

pytestmark = pytest.mark.parametrize("transport", ["aiohttp", "httpx"])

LIMIT = 64 * 1024


def _ok(size: int) -> bytes:
    return orjson.dumps({"status": "success", "data": {"blob": "x" * size}})


async def declared(request: web.Request) -> web.Response:
    return web.Response(body=_ok(LIMIT * 4), content_type="application/json")


async def chunked(request: web.Request) -> web.StreamResponse:
    """No Content-Length: an answer that would go on for 64 MB, written in 64 kB chunks."""
    response = web.StreamResponse()
    response.content_type = "application/json"
    response.enable_chunked_encoding()
    await response.prepare(request)
    try:
        await response.write(b'{"status": "success", "data": {"blob": "')
        for _ in range(1_000):
            await response.write(b"x" * 65_536)
    except (ConnectionResetError, RuntimeError):
        pass  # the client stopped reading, as it should
    return response


async def bomb(request: web.Request) -> web.Response:
    """A few kB on the wire that inflate to 16 MB."""
    body = gzip.compress(_ok(16 * 1024 * 1024))
    return web.Response(
        body=body, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"}
    )


async def small(request: web.Request) -> web.Response:
    return web.Response(body=_ok(LIMIT // 2), content_type="application/json")


@pytest.fixture
async def http(transport: TransportName) -> AsyncIterator[AgentTransport]:
    client = create_transport(transport)
    yield client
    await client.aclose()


async def _client(aiohttp_server: AiohttpServer, http: AgentTransport, path: str) -> AgentClient:
    app = web.Application()
    app.router.add_post("/declared/process", declared)
    app.router.add_post("/chunked/process", chunked)
    app.router.add_post("/bomb/process", bomb)
    app.router.add_post("/small/process", small)
    server = await aiohttp_server(app, host="127.0.0.1")
    spec = AgentSpec(
        name="data",
        url=f"http://127.0.0.1:{server.port}/{path}",
        retry=RetryConfig(max_attempts=1),
        breaker=BreakerConfig(fail_max=5),
        max_response_bytes=LIMIT,
    )
    return AgentClient(AgentRegistry([spec]), http)


@pytest.mark.parametrize("path", ["declared", "chunked", "bomb"])
async def test_an_answer_over_the_cap_fails_the_call(
    aiohttp_server: AiohttpServer, http: AgentTransport, path: str
) -> None:
    """Declared, streamed or compressed: past max_response_bytes it is agent_response_too_large."""
    client = await _client(aiohttp_server, http, path)
    with pytest.raises(AgentResponseTooLarge) as caught:
        await client.call("data", {}, workflow_id="w", node_id="s")
    assert caught.value.code == "agent_response_too_large"
    assert caught.value.limit == LIMIT
    assert caught.value.attempts == 1


async def test_an_answer_under_the_cap_is_read_whole(
    aiohttp_server: AiohttpServer, http: AgentTransport
) -> None:
    client = await _client(aiohttp_server, http, "small")
    result = await client.call("data", {}, workflow_id="w", node_id="s")
    assert len(result.data["blob"]) == LIMIT // 2
