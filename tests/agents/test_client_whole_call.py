"""`AgentClient.call` is a plain function handing back the call's coroutine (without a
tracer, its first attempt's own frame is the whole call). Made and awaited, it behaves
as the `async def` it replaces: nothing happens, and nothing is raised or read, until
it is awaited; the traced and untraced calls end the same."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import orjson
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agents.client import AgentClient
from agents.errors import AgentError, AgentHTTPError, AgentTimeout, UnknownAgent
from agents.transport import TransportResponse
from tests.chain_fixtures import mock_agent_registry
from tests.fakes import FakeClock


class CountingTransport:
    """Answers `data` for every request after failing the first `failures` of them."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.sent = 0

    async def request(self, method: str, url: str, **_: Any) -> TransportResponse:
        self.sent += 1
        if self.sent <= self.failures:
            return TransportResponse(503, {"retry-after": "0"}, b"busy")
        return TransportResponse(200, {}, orjson.dumps({"status": "success", "data": {"n": 1}}))

    async def aclose(self) -> None:
        return None


async def instant(_: float) -> None:
    return None


async def test_a_call_made_but_not_awaited_sends_and_raises_nothing() -> None:
    transport = CountingTransport()
    client = AgentClient(mock_agent_registry(), transport)
    unknown = client.call("nope", {}, workflow_id="wf", node_id="n")
    not_json = client.call("data", {"x": object()}, workflow_id="wf", node_id="n")
    fine = client.call("data", {}, workflow_id="wf", node_id="n")
    assert transport.sent == 0 and client.stats("data").attempts == 0
    with pytest.raises(UnknownAgent):
        await unknown
    with pytest.raises(TypeError):
        await not_json
    assert transport.sent == 0
    assert (await fine).data == {"n": 1}
    assert transport.sent == 1


async def test_the_deadline_and_the_duration_are_read_when_the_call_is_awaited() -> None:
    clock = FakeClock()
    transport = CountingTransport()
    client = AgentClient(mock_agent_registry(), transport, clock=clock)
    late = client.call("data", {}, workflow_id="wf", node_id="a", deadline=clock() + 1.0)
    timely = client.call("data", {}, workflow_id="wf", node_id="b", deadline=clock() + 5.0)
    clock.advance(2.0)
    with pytest.raises(AgentTimeout) as caught:
        await late
    assert caught.value.phase == "deadline" and caught.value.attempts == 0
    assert transport.sent == 0
    result = await timely
    assert (result.attempts, result.duration_s) == (1, 0.0)
    assert client.stats("data").outcomes == {"agent_timeout": 1, "success": 1}


@pytest.mark.parametrize("failures", [0, 1, 5])
async def test_a_traced_and_an_untraced_call_end_the_same(failures: int) -> None:
    ends: list[Any] = []
    for traced in (False, True):
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        registry = mock_agent_registry()
        transport = CountingTransport(failures)
        client = AgentClient(
            registry,
            transport,
            sleep=instant,
            tracer=provider.get_tracer("test") if traced else None,
        )
        try:
            result: Any = await client.call("data", {"q": 1}, workflow_id="wf", node_id="n")
            end: Any = (result.data, result.attempts)
        except AgentError as exc:
            end = (type(exc), exc.attempts)
        stats = dataclasses.replace(client.stats("data"), bulkhead_wait_s=0.0)
        breaker = client.breaker("data").snapshot()
        ends.append((end, transport.sent, stats, dict(client.retries), breaker.calls))
        assert len(exporter.get_finished_spans()) == (transport.sent if traced else 0)
    assert ends[0] == ends[1]
    if failures == 5:
        assert ends[0][0][0] is AgentHTTPError


async def test_a_call_cancelled_before_it_starts_sends_nothing() -> None:
    transport = CountingTransport()
    client = AgentClient(mock_agent_registry(), transport)
    task = asyncio.ensure_future(client.call("data", {}, workflow_id="wf", node_id="n"))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert transport.sent == 0 and client.stats("data").outcomes == {}
