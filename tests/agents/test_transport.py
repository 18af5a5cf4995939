"""The `AgentTransport` contract, run against both shipped transports over real sockets.

Every test runs twice (aiohttp, httpx) against servers on 127.0.0.1: an aiohttp app
for well-behaved answers, raw asyncio servers for the ill-behaved ones (resets,
garbage, a full accept queue).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from agents.registry import AgentTimeouts
from agents.transport import (
    AgentTransport,
    AiohttpTransport,
    ResponseTooLarge,
    TransportConnectionError,
    TransportName,
    TransportResponse,
    TransportTimeout,
    create_transport,
)
from agents.transport_httpx import HttpxTransport
from tests.ports import free_port

AiohttpServer = Callable[..., Awaitable[TestServer]]
RawHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

BIG = b"x" * 100_000  # several of aiohttp's 16 KiB chunks
LIMIT = 1 << 20
FAST = AgentTimeouts(connect=5.0, read=5.0, write=5.0, pool=5.0)


class Agent:
    """Echoes, answers big bodies (declared or chunked), hangs on /slow, notes peers."""

    def __init__(self) -> None:
        self.cookies: list[str | None] = []
        self.encodings: list[str | None] = []
        self.peers: list[object] = []
        self.release = asyncio.Event()
        self.entered = asyncio.Event()

    async def echo(self, request: web.Request) -> web.Response:
        self.cookies.append(request.headers.get("Cookie"))
        self.encodings.append(request.headers.get("Accept-Encoding"))
        self.peers.append(request.transport.get_extra_info("peername") if request.transport else 0)
        body = await request.read()
        response = web.Response(
            body=body,
            status=int(request.query.get("status", "200")),
            headers={"X-Echo-Key": request.headers.get("Idempotency-Key", "")},
        )
        response.set_cookie("session", "from-the-agent")
        return response

    async def big(self, request: web.Request) -> web.Response:
        return web.Response(body=BIG)

    async def chunked(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for _ in range(10):
            await response.write(BIG[:10_000])
        await response.write_eof()
        return response

    async def gzipped(self, request: web.Request) -> web.Response:
        """Compressed although the request asked for `identity`."""
        return web.Response(body=gzip.compress(BIG), headers={"Content-Encoding": "gzip"})

    async def slow(self, request: web.Request) -> web.Response:
        self.entered.set()
        await self.release.wait()
        return web.Response(body=b"late")

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/echo", self.echo)
        app.router.add_get("/big", self.big)
        app.router.add_get("/chunked", self.chunked)
        app.router.add_get("/gzipped", self.gzipped)
        app.router.add_get("/slow", self.slow)
        return app


@pytest.fixture
async def served(aiohttp_server: AiohttpServer) -> AsyncIterator[tuple[Agent, str]]:
    agent = Agent()
    server = await aiohttp_server(agent.app())
    yield agent, str(server.make_url("")).rstrip("/")
    agent.release.set()


@pytest.fixture(params=["aiohttp", "httpx"])
def transport_name(request: pytest.FixtureRequest) -> TransportName:
    name: TransportName = request.param
    return name


@pytest.fixture
async def transport(transport_name: TransportName) -> AsyncIterator[AgentTransport]:
    transport = create_transport(transport_name)
    yield transport
    await transport.aclose()


@contextlib.asynccontextmanager
async def raw_server(handler: RawHandler) -> AsyncIterator[str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await server.wait_closed()


async def get(transport: AgentTransport, url: str, **kwargs: object) -> object:
    options: dict[str, object] = {"timeouts": FAST, "max_body_bytes": LIMIT, **kwargs}
    return await transport.request("GET", url, **options)  # type: ignore[arg-type]


def test_the_factory_builds_each_transport() -> None:
    """`aiohttp` is the default; `httpx` is selectable; both satisfy the Protocol."""
    assert isinstance(create_transport(), AiohttpTransport)
    assert isinstance(create_transport("httpx"), HttpxTransport)


# -- answers ------------------------------------------------------------------------


async def test_request_and_answer_round_trip(
    served: tuple[Agent, str], transport: AgentTransport
) -> None:
    """Body and headers go out; status, headers and body come back; a 5xx is no error."""
    agent, base = served
    response = await transport.request(
        "POST",
        f"{base}/echo?status=503",
        body=b'{"q": 1}',
        headers={"Idempotency-Key": "wf:s1", "Content-Type": "application/json"},
        timeouts=FAST,
        max_body_bytes=LIMIT,
    )
    assert (response.status, response.body) == (503, b'{"q": 1}')
    assert response.headers["x-echo-key"] == "wf:s1"  # case-insensitive
    assert agent.encodings == ["identity"]  # raw bodies: the cap counts wire bytes


async def test_answers_cookies_are_never_sent_back(
    served: tuple[Agent, str], transport: AgentTransport
) -> None:
    """A Set-Cookie from one call does not ride along on the next one."""
    agent, base = served
    for _ in range(2):
        response = await transport.request(
            "POST", f"{base}/echo", body=b"{}", timeouts=FAST, max_body_bytes=LIMIT
        )
        assert response.status == 200
    assert agent.cookies == [None, None]


async def test_a_body_of_many_chunks_is_read_whole(
    served: tuple[Agent, str], transport: AgentTransport
) -> None:
    """Bodies larger than one read arrive complete, with Content-Length or chunked."""
    _, base = served
    assert (
        await transport.request("GET", f"{base}/big", timeouts=FAST, max_body_bytes=LIMIT)
    ).body == BIG
    chunked = await transport.request("GET", f"{base}/chunked", timeouts=FAST, max_body_bytes=LIMIT)
    assert chunked.body == BIG


async def test_keep_alive_connections_are_reused(
    served: tuple[Agent, str], transport: AgentTransport
) -> None:
    """Sequential requests ride one connection: the agent sees one client port."""
    agent, base = served
    for _ in range(5):
        await transport.request(
            "POST", f"{base}/echo", body=b"{}", timeouts=FAST, max_body_bytes=LIMIT
        )
    assert len(agent.peers) == 5
    assert len(set(agent.peers)) == 1


async def test_every_kind_of_answer_gives_its_connection_back(
    served: tuple[Agent, str], transport_name: TransportName
) -> None:
    """With a pool of one connection: an error status, a chunked body and a body past the
    cap each leave the pool usable (a leaked connection would make the next request wait
    for the pool and fail); error answers are read whole and their connection reused."""
    agent, base = served
    transport = create_transport(transport_name, max_connections=1)
    try:
        for status in (500, 404, 200):
            answer = await transport.request(
                "POST",
                f"{base}/echo?status={status}",
                body=b"x",
                timeouts=FAST,
                max_body_bytes=LIMIT,
            )
            assert answer.status == status
            assert answer.body == b"x"
        assert len(set(agent.peers)) == 1  # one connection, reused after every answer
        chunked = await transport.request(
            "GET", f"{base}/chunked", timeouts=FAST, max_body_bytes=LIMIT
        )
        assert len(chunked.body) == 100_000
        with pytest.raises(ResponseTooLarge):
            await transport.request("GET", f"{base}/big", timeouts=FAST, max_body_bytes=10)
        after = await transport.request(
            "POST", f"{base}/echo", body=b"after", timeouts=FAST, max_body_bytes=LIMIT
        )
        assert after.body == b"after"
    finally:
        await transport.aclose()


# -- size cap -----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/big", "/chunked"])
async def test_a_body_past_the_cap_is_refused_and_the_pool_survives(
    served: tuple[Agent, str], transport: AgentTransport, path: str
) -> None:
    """Past max_body_bytes: ResponseTooLarge, declared or found while reading; the next
    request on the same transport still works."""
    agent, base = served
    with pytest.raises(ResponseTooLarge) as caught:
        await transport.request("GET", f"{base}{path}", timeouts=FAST, max_body_bytes=len(BIG) - 1)
    assert caught.value.limit_bytes == len(BIG) - 1
    exact = await transport.request("GET", f"{base}{path}", timeouts=FAST, max_body_bytes=len(BIG))
    assert exact.body == BIG
    ok = await transport.request(
        "POST", f"{base}/echo", body=b"after", timeouts=FAST, max_body_bytes=LIMIT
    )
    assert ok.body == b"after"


async def test_a_compressed_answer_is_decoded_and_capped_decoded(
    served: tuple[Agent, str], transport: AgentTransport
) -> None:
    """An agent that compresses anyway: the body comes back decoded, and the cap counts
    the decoded bytes (a few hundred bytes on the wire, 100 kB once inflated)."""
    _, base = served
    whole = await transport.request(
        "GET", f"{base}/gzipped", timeouts=FAST, max_body_bytes=len(BIG)
    )
    assert whole.body == BIG
    with pytest.raises(ResponseTooLarge):
        await transport.request(
            "GET", f"{base}/gzipped", timeouts=FAST, max_body_bytes=len(BIG) // 2
        )


# -- timeouts of each phase ------------------------------------------------------------


async def test_read_timeout(served: tuple[Agent, str], transport: AgentTransport) -> None:
    """An agent that does not answer within `read` is TransportTimeout('read')."""
    _, base = served
    timeouts = AgentTimeouts(connect=5.0, read=0.05, write=5.0, pool=5.0)
    with pytest.raises(TransportTimeout) as caught:
        await transport.request("GET", f"{base}/slow", timeouts=timeouts, max_body_bytes=LIMIT)
    assert (caught.value.phase, caught.value.timeout_s) == ("read", 0.05)


async def test_each_request_gets_its_own_read_timeout(
    served: tuple[Agent, str], transport: AgentTransport
) -> None:
    """A short read limit on one request does not cut another request short."""
    agent, base = served
    short = AgentTimeouts(connect=5.0, read=0.05, write=5.0, pool=5.0)
    slow = asyncio.create_task(
        transport.request("GET", f"{base}/slow", timeouts=FAST, max_body_bytes=LIMIT)
    )
    await agent.entered.wait()
    with pytest.raises(TransportTimeout):
        await transport.request("GET", f"{base}/slow", timeouts=short, max_body_bytes=LIMIT)
    assert not slow.done()  # it has waited longer than the short limit by now
    agent.release.set()
    assert (await slow).body == b"late"


async def test_many_distinct_timeouts_each_keep_their_own_limits(
    served: tuple[Agent, str], transport: AgentTransport
) -> None:
    """Timeouts objects by the hundred (per-call overrides), equal or not, each get their
    own limits: past the transport's cache of them, a short read still times out."""
    _, base = served
    for i in range(300):
        timeouts = AgentTimeouts(connect=5.0, read=5.0 + i / 1000, write=5.0, pool=5.0)
        response = await transport.request(
            "POST", f"{base}/echo", body=b"{}", timeouts=timeouts, max_body_bytes=LIMIT
        )
        assert response.status == 200
    for _ in range(2):  # a new, equal object each time
        short = AgentTimeouts(connect=5.0, read=0.05, write=5.0, pool=5.0)
        with pytest.raises(TransportTimeout) as caught:
            await transport.request("GET", f"{base}/slow", timeouts=short, max_body_bytes=LIMIT)
        assert (caught.value.phase, caught.value.timeout_s) == ("read", 0.05)


def _head(length: int) -> bytes:
    return f"HTTP/1.1 200 OK\r\nContent-Length: {length}\r\n\r\n".encode()


async def test_a_body_that_stops_coming_is_a_read_timeout(transport: AgentTransport) -> None:
    """The head arrives, part of the body, then nothing: `read` bounds that wait too, and
    the half-read connection is not used again (the next request opens another)."""
    connections = 0
    stalled = asyncio.Event()

    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await reader.readuntil(b"\r\n\r\n")
        if connections == 1:
            writer.write(_head(10) + b"12345")  # half the body, then silence
            await writer.drain()
            await stalled.wait()
        else:
            writer.write(_head(2) + b"ok")
            await writer.drain()
            await reader.read()  # until the client closes
        writer.close()

    timeouts = AgentTimeouts(connect=5.0, read=0.05, write=5.0, pool=5.0)
    async with raw_server(stall) as url:
        try:
            with pytest.raises(TransportTimeout) as caught:
                await get(transport, f"{url}/x", timeouts=timeouts)
            assert (caught.value.phase, caught.value.timeout_s) == ("read", 0.05)
            response = await get(transport, f"{url}/x", timeouts=timeouts)
            assert response.body == b"ok"  # type: ignore[attr-defined]
            assert connections == 2
        finally:
            stalled.set()


async def test_read_bounds_each_wait_for_the_body_not_the_whole_body(
    transport: AgentTransport,
) -> None:
    """A body sent in pieces, each gap well under `read` but all of them together over it,
    is read whole: `read` is a limit on silence, not on the answer's length."""
    pieces, gap_s, read_s = 5, 0.3, 1.0  # 1.5 s of pieces against a 1 s read limit

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(_head(pieces))
        await writer.drain()
        for i in range(pieces):
            await asyncio.sleep(gap_s)  # the pace under test: an agent's, in time
            writer.write(str(i).encode())
            await writer.drain()
        await reader.read()
        writer.close()

    timeouts = AgentTimeouts(connect=5.0, read=read_s, write=5.0, pool=5.0)
    async with raw_server(trickle) as url:
        response = await get(transport, f"{url}/x", timeouts=timeouts)
    assert response.body == b"01234"  # type: ignore[attr-defined]


async def test_a_body_with_its_head_and_one_after_it_are_read_alike(
    transport_name: TransportName,
) -> None:
    """On one kept-alive connection: a body that comes in the same packet as its head (read
    from the buffer at once over aiohttp) and one that comes after it (waited for) are
    read whole, and each leaves the connection to the next request."""
    connections = 0

    async def answers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        for body, apart in ((b"first", False), (b"second", True), (b"third", False)):
            await reader.readuntil(b"\r\n\r\n")
            if apart:
                writer.write(_head(len(body)))
                await writer.drain()
                await asyncio.sleep(0.05)  # the pace under test: the body after its head
                writer.write(body)
            else:
                writer.write(_head(len(body)) + body)
            await writer.drain()
        await reader.read()
        writer.close()

    transport = create_transport(transport_name, max_connections=1)
    try:
        async with raw_server(answers) as url:
            bodies = [
                (await get(transport, f"{url}/x")).body  # type: ignore[attr-defined]
                for _ in range(3)
            ]
    finally:
        await transport.aclose()
    assert bodies == [b"first", b"second", b"third"]
    assert connections == 1


async def _the_only_connection_held(
    transport: AgentTransport, agent: Agent, base: str
) -> asyncio.Task[TransportResponse]:
    """A request to /slow holding a one-connection pool until `agent.release` is set."""
    busy = asyncio.create_task(
        transport.request("GET", f"{base}/slow", timeouts=FAST, max_body_bytes=LIMIT)
    )
    await agent.entered.wait()
    return busy


async def test_pool_timeout(served: tuple[Agent, str], transport_name: TransportName) -> None:
    """With every connection busy, a request waits `pool` at most: TransportTimeout('pool')."""
    agent, base = served
    transport = create_transport(transport_name, max_connections=1)
    try:
        busy = await _the_only_connection_held(transport, agent, base)
        timeouts = AgentTimeouts(connect=5.0, read=5.0, write=5.0, pool=0.05)
        with pytest.raises(TransportTimeout) as caught:
            await transport.request("GET", f"{base}/big", timeouts=timeouts, max_body_bytes=LIMIT)
        assert (caught.value.phase, caught.value.timeout_s) == ("pool", 0.05)
        agent.release.set()
        assert (await busy).body == b"late"
    finally:
        await transport.aclose()


async def test_read_counts_from_the_request_sent_not_from_the_wait_for_a_connection(
    served: tuple[Agent, str], transport_name: TransportName
) -> None:
    """A request that waits for the pool longer than its `read` limit, then is answered at
    once, succeeds: `read` bounds the wait for the answer, not the wait before sending."""
    agent, base = served
    transport = create_transport(transport_name, max_connections=1)
    try:
        busy = await _the_only_connection_held(transport, agent, base)
        short_read = AgentTimeouts(connect=5.0, read=0.05, write=5.0, pool=5.0)
        waiting = asyncio.create_task(
            transport.request(
                "POST", f"{base}/echo", body=b"x", timeouts=short_read, max_body_bytes=LIMIT
            )
        )
        await asyncio.sleep(0.2)  # the pace under test: four read limits in the pool
        assert not waiting.done()
        agent.release.set()
        assert (await busy).body == b"late"
        assert (await waiting).body == b"x"
    finally:
        await transport.aclose()


async def test_the_aiohttp_read_limit_leaves_nothing_behind(served: tuple[Agent, str]) -> None:
    """After answers, a read timeout and a refused connection, the aiohttp transport keeps
    no watch of a request and no time cap of the task (circuit/cap.py) behind."""
    from circuit import cap

    _, base = served
    transport = AiohttpTransport()
    task = asyncio.current_task()
    assert task is not None
    try:
        await transport.request(
            "POST", f"{base}/echo", body=b"x", timeouts=FAST, max_body_bytes=LIMIT
        )
        await transport.request("GET", f"{base}/chunked", timeouts=FAST, max_body_bytes=LIMIT)
        short = AgentTimeouts(connect=5.0, read=0.05, write=5.0, pool=5.0)
        with pytest.raises(TransportTimeout):
            await transport.request("GET", f"{base}/slow", timeouts=short, max_body_bytes=LIMIT)
        with pytest.raises(TransportConnectionError):
            await transport.request(
                "GET", f"http://127.0.0.1:{free_port()}/", timeouts=FAST, max_body_bytes=LIMIT
            )
        assert transport._watches == {}
        assert task not in cap._innermost
        assert task.cancelling() == 0  # every cancel of a read limit was withdrawn
    finally:
        await transport.aclose()


async def test_a_request_sent_again_on_a_new_connection_keeps_one_read_limit() -> None:
    """aiohttp sends an idempotent request once more when its kept-alive connection was
    dropped: the answer comes, and the first try's read limit is not left behind on the
    task (it would cancel it later, out of nowhere)."""
    from circuit import cap

    connections = 0

    async def drop_the_second(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await reader.readuntil(b"\r\n\r\n")
        writer.write(_head(2) + b"ok")
        await writer.drain()
        if connections == 1:
            await reader.readuntil(b"\r\n\r\n")  # the second request: hang up instead
        else:
            await reader.read()
        writer.close()

    transport = AiohttpTransport()
    task = asyncio.current_task()
    assert task is not None
    try:
        async with raw_server(drop_the_second) as url:
            for _ in range(2):
                response = await get(transport, f"{url}/x")
                assert response.body == b"ok"  # type: ignore[attr-defined]
        assert connections == 2
        assert task not in cap._innermost
        assert task.cancelling() == 0
    finally:
        await transport.aclose()


@contextlib.contextmanager
def full_accept_queue() -> Iterator[str]:
    """A port whose accept queue is full: the kernel drops further SYNs, connects hang."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    address = listener.getsockname()
    fillers = []
    try:
        for _ in range(4):  # backlog 0 still queues one or two on Linux
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(address)
            fillers.append(filler)
        yield f"http://127.0.0.1:{address[1]}"
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


async def test_connect_timeout(transport: AgentTransport) -> None:
    """A connection that cannot be opened within `connect` is TransportTimeout('connect')."""
    timeouts = AgentTimeouts(connect=0.1, read=5.0, write=5.0, pool=5.0)
    with full_accept_queue() as url:
        with pytest.raises(TransportTimeout) as caught:
            await transport.request("GET", f"{url}/x", timeouts=timeouts, max_body_bytes=LIMIT)
    assert (caught.value.phase, caught.value.timeout_s) == ("connect", 0.1)


# -- broken agents ------------------------------------------------------------------


async def test_connection_refused(transport: AgentTransport) -> None:
    """Nothing listening on the port is TransportConnectionError, not a timeout."""
    port = free_port()  # free, and no other suite's (tests/ports.py)
    with pytest.raises(TransportConnectionError):
        await get(transport, f"http://127.0.0.1:{port}/x")


async def test_connection_reset(transport: AgentTransport) -> None:
    """An agent that resets the connection mid-request is TransportConnectionError."""

    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    async with raw_server(reset) as url:
        with pytest.raises(TransportConnectionError):
            await get(transport, f"{url}/x")


async def test_connection_closed_before_an_answer(transport: AgentTransport) -> None:
    """An agent that hangs up without a word is TransportConnectionError."""

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    async with raw_server(hang_up) as url:
        with pytest.raises(TransportConnectionError):
            await get(transport, f"{url}/x")


@pytest.mark.parametrize(
    "answer",
    [
        b"this is not HTTP at all\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\ntoo short",
        b"HTTP/1.1 abc nonsense\r\n\r\n",
    ],
    ids=["not-http", "truncated-body", "bad-status-line"],
)
async def test_garbage_is_a_connection_error(transport: AgentTransport, answer: bytes) -> None:
    """An answer that is not (whole) HTTP is TransportConnectionError, never a raw library error."""

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        writer.close()

    async with raw_server(garbage) as url:
        with pytest.raises(TransportConnectionError):
            await get(transport, f"{url}/x")


async def test_cancel_aborts_the_request(transport: AgentTransport) -> None:
    """Cancelling an in-flight request closes its connection: the agent sees EOF at once."""
    entered = asyncio.Event()
    closed = asyncio.Event()

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        entered.set()
        if await reader.read(1) == b"":  # EOF: the client closed the connection
            closed.set()
        writer.close()

    async with raw_server(hold) as url:
        task = asyncio.create_task(get(transport, f"{url}/x"))
        await entered.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        async with asyncio.timeout(30):  # a hang guard, not a timing claim
            await closed.wait()
