"""create_http_client / AgentTransport / AgentHTTPClient over a real aiohttp server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from agents.transport import AgentHTTPClient, AgentTransport, TransportName, create_http_client

AiohttpServer = Callable[..., Awaitable[TestServer]]

BIG = b"x" * 100_000  # several of aiohttp's 16 KiB chunks


class Agent:
    """Echoes what it received, sets a cookie on every answer, hangs on /slow."""

    def __init__(self) -> None:
        self.cookies: list[str | None] = []
        self.release = asyncio.Event()

    async def echo(self, request: web.Request) -> web.Response:
        self.cookies.append(request.headers.get("Cookie"))
        body = await request.read()
        response = web.Response(
            body=body,
            status=int(request.query.get("status", "200")),
            reason=request.query.get("reason"),
            headers={"X-Echo-Key": request.headers.get("Idempotency-Key", "")},
        )
        response.set_cookie("session", "from-the-agent")
        return response

    async def big(self, request: web.Request) -> web.Response:
        return web.Response(body=BIG)

    async def slow(self, request: web.Request) -> web.Response:
        await self.release.wait()
        return web.Response(body=b"late")

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/echo", self.echo)
        app.router.add_get("/big", self.big)
        app.router.add_get("/slow", self.slow)
        return app


@pytest.fixture
async def served(aiohttp_server: AiohttpServer) -> AsyncIterator[tuple[Agent, str]]:
    agent = Agent()
    server = await aiohttp_server(agent.app())
    yield agent, str(server.make_url("")).rstrip("/")
    agent.release.set()


@pytest.fixture(params=["aiohttp", "httpx"])
async def http(request: pytest.FixtureRequest) -> AsyncIterator[httpx.AsyncClient]:
    transport: TransportName = request.param
    client = create_http_client(transport=transport)
    yield client
    await client.aclose()


async def test_default_transport_is_the_agent_transport() -> None:
    """The default client runs over AgentTransport and keeps no cookies."""
    client = create_http_client()
    try:
        assert isinstance(client, AgentHTTPClient)
        assert isinstance(client._transport, AgentTransport)
    finally:
        await client.aclose()


async def test_answers_cookies_are_never_sent_back(
    served: tuple[Agent, str], http: httpx.AsyncClient
) -> None:
    """A Set-Cookie from one call does not ride along on the next one."""
    agent, base = served
    for _ in range(2):
        response = await http.post(f"{base}/echo", content=b"{}")
        assert response.status_code == 200
    assert agent.cookies == [None, None]
    assert not http.cookies


def test_client_refuses_cookies() -> None:
    """Cookies for every request cannot be configured on the agent client."""
    with pytest.raises(TypeError, match="no cookies"):
        AgentHTTPClient(cookies={"a": "b"})
    client = AgentHTTPClient()
    with pytest.raises(TypeError, match="no cookies"):
        client.cookies = {"a": "b"}  # type: ignore[assignment]
    with pytest.raises(TypeError, match="no cookies"):
        client.cookies.set("a", "b")


async def test_request_and_answer_round_trip(
    served: tuple[Agent, str], http: httpx.AsyncClient
) -> None:
    """Body, headers, status and reason phrase pass through unchanged, both ways."""
    _, base = served
    response = await http.post(
        f"{base}/echo",
        params={"status": "503", "reason": "Busy Now"},
        content=b'{"q": 1}',
        headers={"Idempotency-Key": "wf:s1"},
    )
    assert response.status_code == 503
    assert response.reason_phrase == "Busy Now"
    assert response.content == b'{"q": 1}'
    assert response.headers["x-echo-key"] == "wf:s1"
    assert response.is_closed


async def test_a_body_of_many_chunks_is_read_whole(
    served: tuple[Agent, str], http: httpx.AsyncClient
) -> None:
    """A body larger than aiohttp's chunk size arrives complete, and streaming still works."""
    _, base = served
    assert (await http.get(f"{base}/big")).content == BIG
    async with http.stream("GET", f"{base}/big") as response:
        assert b"".join([chunk async for chunk in response.aiter_bytes()]) == BIG


async def test_a_streamed_request_body_is_sent(
    served: tuple[Agent, str], http: httpx.AsyncClient
) -> None:
    """A request body given as an async iterator (not bytes) is sent in full."""
    _, base = served

    async def parts() -> AsyncIterator[bytes]:
        for part in (b'{"a": ', b"1}"):
            yield part

    response = await http.post(f"{base}/echo", content=parts())
    assert response.content == b'{"a": 1}'


async def test_each_request_gets_its_own_read_timeout(
    served: tuple[Agent, str], http: httpx.AsyncClient
) -> None:
    """Requests with different timeouts on one client each get their own read limit."""
    agent, base = served
    with pytest.raises(httpx.ReadTimeout):
        await http.get(f"{base}/slow", timeout=httpx.Timeout(5.0, read=0.05))
    slow = asyncio.create_task(http.get(f"{base}/slow", timeout=httpx.Timeout(5.0, read=5.0)))
    await asyncio.sleep(0.1)  # longer than the first request's read timeout
    assert not slow.done()
    agent.release.set()
    assert (await slow).content == b"late"


async def test_nothing_listening_is_an_httpx_transport_error(http: httpx.AsyncClient) -> None:
    """aiohttp's connection errors come out as httpx's (AgentClient reads the cause)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(httpx.TransportError):
        await http.post(f"http://127.0.0.1:{port}/echo", content=b"{}")
