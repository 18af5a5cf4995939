"""AgentClient over real sockets: an aiohttp agent on 127.0.0.1, both shipped transports."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from agents.client import AgentClient
from agents.errors import AgentConnectionError, AgentTimeout
from agents.registry import AgentRegistry, AgentSpec, AgentTimeouts
from agents.transport import AgentTransport, TransportName, create_transport
from circuit.config import BreakerConfig, RetryConfig
from tests.ports import free_port

AiohttpServer = Callable[..., Awaitable[TestServer]]

pytestmark = pytest.mark.parametrize("transport", ["aiohttp", "httpx"])


class Agent:
    """A reference-shaped agent whose /process hangs until cancelled or released."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.cancelled = asyncio.Event()
        self.release = asyncio.Event()
        self.requests: list[dict[str, Any]] = []

    async def process(self, request: web.Request) -> web.Response:
        self.requests.append(
            {"body": await request.json(), "key": request.headers.get("Idempotency-Key")}
        )
        self.entered.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            # aiohttp cancels a handler when its client's connection is lost.
            self.cancelled.set()
            raise
        return web.json_response({"status": "success", "data": {"n": len(self.requests)}})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/process", self.process)
        return app


@pytest.fixture
async def http(transport: TransportName) -> AsyncIterator[AgentTransport]:
    client = create_transport(transport)
    yield client
    await client.aclose()


def make_client(url: str, http: AgentTransport, **overrides: Any) -> AgentClient:
    spec = AgentSpec(
        name="data",
        url=url,
        retry=RetryConfig(max_attempts=1),
        breaker=BreakerConfig(policy="consecutive", fail_max=1),
        **overrides,
    )
    return AgentClient(AgentRegistry([spec]), http)


async def test_cancelling_an_in_flight_call_closes_the_connection(
    aiohttp_server: AiohttpServer, http: AgentTransport
) -> None:
    """Cancelling a call aborts the request: the agent's handler is cancelled, nothing counts."""
    agent = Agent()
    server = await aiohttp_server(agent.app())
    client = make_client(str(server.make_url("/")), http)
    task = asyncio.create_task(client.call("data", {"q": 1}, workflow_id="wf", node_id="s1"))
    await agent.entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # Only a lost connection cancels an aiohttp handler: the request really was aborted.
    async with asyncio.timeout(30):  # a hang guard, not a timing claim
        await agent.cancelled.wait()
    assert client.breaker("data").snapshot().failures == 0
    # The pool is not poisoned by the aborted connection: the next call succeeds.
    agent.release.set()
    result = await client.call("data", {"q": 2}, workflow_id="wf", node_id="s2")
    assert result.data == {"n": 2}
    assert [r["key"] for r in agent.requests] == ["wf:s1", "wf:s2"]


async def test_read_timeout_over_a_real_socket(
    aiohttp_server: AiohttpServer, http: AgentTransport
) -> None:
    """A hanging agent hits the spec's read timeout and is an AgentTimeout(read)."""
    agent = Agent()
    server = await aiohttp_server(agent.app())
    client = make_client(str(server.make_url("/")), http, timeouts=AgentTimeouts(read=0.05))
    with pytest.raises(AgentTimeout) as caught:
        await client.call("data", {}, workflow_id="wf", node_id="s")
    assert (caught.value.phase, caught.value.timeout_s) == ("read", 0.05)
    assert client.breaker("data").snapshot().failure_count == 1


async def test_connection_refused_is_unreachable(http: AgentTransport) -> None:
    """Nothing listening on the port is AgentConnectionError, not a timeout."""
    port = free_port()  # free, and no other suite's (tests/ports.py)
    client = make_client(f"http://127.0.0.1:{port}", http)
    with pytest.raises(AgentConnectionError) as caught:
        await client.call("data", {}, workflow_id="wf", node_id="s")
    # Clients see the kind of failure, never the address or the OS's error text.
    assert caught.value.reason == "connection refused"
    assert f":{port}" not in str(caught.value) and "127.0.0.1" not in str(caught.value)


async def test_agent_dropping_the_connection_is_unreachable(http: AgentTransport) -> None:
    """An agent that closes the socket without answering is AgentConnectionError."""

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        client = make_client(f"http://127.0.0.1:{port}", http)
        with pytest.raises(AgentConnectionError) as caught:
            await client.call("data", {}, workflow_id="wf", node_id="s")
        assert caught.value.attempts == 1
    finally:
        server.close()
        await server.wait_closed()
