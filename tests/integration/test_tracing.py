"""OpenTelemetry: spans per workflow, node and attempt; traceparent to agents and from clients."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agents.reference.a2a_service import A2A_SERVICE, start_a2a_agent
from agents.registry import AgentRegistry, AgentSpec
from orchestrator.app import create_app
from orchestrator.settings import Settings
from orchestrator.tracing import configured_tracer_provider
from tests.integration.conftest import FAST_RETRY, Agents, settings_for
from tests.integration.test_a2a_api import WORKFLOW as A2A_WORKFLOW

QUESTION = "average revenue by region in 2024"
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_PARENT = "00f067aa0ba902b7"


class WorkflowEnded(SpanProcessor):
    """Sets `done` when a `workflow` span ends: a sync answer can come before the
    workflow's task (and so its span) has finished."""

    def __init__(self) -> None:
        self.done = asyncio.Event()

    def on_end(self, span: ReadableSpan) -> None:
        if span.name == "workflow":
            self.done.set()


@pytest.fixture
def exporter() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    yield provider, memory
    provider.shutdown()


async def workflow_spans(provider: TracerProvider, memory: InMemorySpanExporter, send: Any) -> Any:
    """Run `send()` and return the finished spans once the workflow span has ended."""
    ended = WorkflowEnded()
    provider.add_span_processor(ended)
    result = await send()
    async with asyncio.timeout(10):
        await ended.done.wait()
    return result, memory.get_finished_spans()


def by_name(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


async def test_spans_nest_workflow_node_attempt_and_agents_join_the_trace(
    api: Any, agents: Agents, exporter: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    """One trace: workflow > node > agent attempt, with attributes; each agent got traceparent."""
    provider, memory = exporter
    await agents["viz"].control(fail_rate=1.0)
    client = await api(tracer_provider=provider)

    async def send() -> Any:
        return await (await client.post("/api/query", json={"query": QUESTION})).json()

    body, spans = await workflow_spans(provider, memory, send)
    assert body["status"] == "degraded"
    (workflow,) = by_name(spans, "workflow")
    assert workflow.attributes is not None
    assert workflow.attributes["workflow.id"] == body["workflow_id"]
    assert workflow.attributes["workflow.status"] == "degraded"
    trace_id = workflow.context.trace_id
    assert all(s.context.trace_id == trace_id for s in spans)

    (viz_node,) = by_name(spans, "node viz")
    assert viz_node.parent is not None and viz_node.parent.span_id == workflow.context.span_id
    assert viz_node.attributes is not None and viz_node.attributes["node.status"] == "failed"
    viz_attempts = sorted(by_name(spans, "agent viz"), key=lambda s: s.start_time or 0)
    assert [s.attributes["attempt"] for s in viz_attempts if s.attributes] == [1, 2]
    first, second = viz_attempts
    assert first.parent is not None and first.parent.span_id == viz_node.context.span_id
    assert first.attributes is not None and second.attributes is not None
    assert first.attributes["breaker.state"] == "closed"
    assert first.attributes["http.response.status_code"] == 503
    assert first.attributes["error.type"] == "agent_http_error"
    assert first.attributes["outcome"] == "agent_http_error"
    assert "retry.delay_s" not in first.attributes
    delay_s = second.attributes["retry.delay_s"]
    assert isinstance(delay_s, float) and delay_s >= 0
    assert not first.status.is_ok

    # The agent saw the attempt span as the parent of its own work.
    # (The flags byte says "sampled", and may add the W3C level-2 "random" bit.)
    seen = [p.rsplit("-", 1)[0] for p in (await agents["viz"].stats())["traceparents"]]
    assert seen == [f"00-{trace_id:032x}-{span.context.span_id:016x}" for span in viz_attempts]
    (data_attempt,) = by_name(spans, "agent data")
    (data_seen,) = (await agents["data"].stats())["traceparents"]
    assert data_seen.startswith(f"00-{trace_id:032x}-{data_attempt.context.span_id:016x}-")
    assert int(data_seen[-2:], 16) & 1  # sampled


async def test_an_incoming_traceparent_becomes_the_workflow_parent(
    api: Any, exporter: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    """POST /api/query with traceparent: the workflow span joins the caller's trace."""
    provider, memory = exporter
    client = await api(tracer_provider=provider)
    headers = {"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_PARENT}-01"}

    async def send() -> Any:
        return await client.post("/api/query", json={"query": QUESTION}, headers=headers)

    _, spans = await workflow_spans(provider, memory, send)
    (workflow,) = by_name(spans, "workflow")
    assert f"{workflow.context.trace_id:032x}" == CLIENT_TRACE
    assert workflow.parent is not None and f"{workflow.parent.span_id:016x}" == CLIENT_PARENT


async def test_tracing_off_sends_no_traceparent(api: Any, agents: Agents) -> None:
    """Not configured: no provider, and agents get no traceparent header."""
    assert configured_tracer_provider(Settings()) is None
    client = await api()
    headers = {"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_PARENT}-01"}
    await client.post("/api/query", json={"query": QUESTION}, headers=headers)
    for name in ("nlp", "data", "viz"):
        assert (await agents[name].stats())["traceparents"] == []


def test_an_otlp_endpoint_turns_tracing_on() -> None:
    """OTEL_EXPORTER_OTLP_ENDPOINT builds the SDK provider; OTEL_SDK_DISABLED keeps it off."""
    on = Settings.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert on.otel_endpoint == "http://127.0.0.1:4318/v1/traces"
    provider = configured_tracer_provider(on)
    assert isinstance(provider, TracerProvider)
    provider.shutdown()
    traces = Settings.from_env({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://h:1/x"})
    assert traces.otel_endpoint == "http://h:1/x"
    off = Settings.from_env(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_SDK_DISABLED": "true"}
    )
    assert off.otel_endpoint is None


async def test_an_a2a_agent_gets_the_attempt_traceparent_too(
    agents: Agents,
    aiohttp_client: Any,
    exporter: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    """An A2A agent's JSON-RPC request carries the attempt span's traceparent."""
    provider, memory = exporter
    runner, port = await start_a2a_agent("viz", version="1.0")
    try:
        service = runner.app[A2A_SERVICE]
        base = settings_for(agents)
        charts = AgentSpec(
            name="charts", url=f"http://127.0.0.1:{port}", protocol="a2a", retry=FAST_RETRY
        )
        settings = dataclasses.replace(
            base, agents=AgentRegistry([*base.agents.values(), charts])
        )
        client = await aiohttp_client(create_app(settings, tracer_provider=provider))

        async def send() -> Any:
            return await (await client.post("/api/query", json={"workflow": A2A_WORKFLOW})).json()

        body, spans = await workflow_spans(provider, memory, send)
        assert body["status"] == "completed"
        attempts = {f"{s.context.span_id:016x}" for s in by_name(spans, "agent charts")}
        (workflow,) = by_name(spans, "workflow")
        sent = [p for p in service.stats.traceparents if p.startswith("00-")]
        assert sent, "the A2A agent got no traceparent"
        for header in sent:
            _, trace, parent, _ = header.split("-")
            assert trace == f"{workflow.context.trace_id:032x}"
            assert parent in attempts
    finally:
        await runner.cleanup()
