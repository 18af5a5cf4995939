"""A2A agents through AgentClient: the reference A2A agent on 127.0.0.1, both wire
versions; state mapping; the same messageId on every retry; CancelTask forwarded."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from aiohttp import web

from agents.a2a import A2AVersion
from agents.client import AgentClient
from agents.errors import (
    AgentBadResponse,
    AgentNeedsInput,
    AgentResponseTooLarge,
    AgentTaskFailed,
    AgentTimeout,
)
from agents.reference.a2a_service import A2A_SERVICE, A2AService, start_a2a_agent
from agents.registry import AgentRegistry, AgentSpec
from agents.transport import AgentTransport, create_transport
from agents.transport_httpx import HttpxTransport
from circuit.config import BreakerConfig, RetryConfig

INTENT = {
    "metric": "revenue",
    "aggregation": "sum",
    "group_by": ["region"],
    "filters": [],
    "chart_hint": "bar",
}
VIZ_INPUT = {
    "intent": INTENT,
    "columns": ["region", "sum_revenue"],
    "rows": [{"region": "APAC", "sum_revenue": 10}, {"region": "EMEA", "sum_revenue": 7}],
}
FAST = RetryConfig(max_attempts=3, base_delay_s=0.001, max_delay_s=0.002)


class Served:
    def __init__(self, runner: web.AppRunner, port: int) -> None:
        self.runner = runner
        self.url = f"http://127.0.0.1:{port}"

    @property
    def service(self) -> A2AService:
        return self.runner.app[A2A_SERVICE]


@pytest.fixture(params=["1.0", "0.3"])
async def served(request: pytest.FixtureRequest) -> AsyncIterator[Served]:
    runner, port = await start_a2a_agent("viz", version=request.param)
    try:
        yield Served(runner, port)
    finally:
        await runner.cleanup()


@pytest.fixture
async def http() -> AsyncIterator[AgentTransport]:
    client = create_transport()
    try:
        yield client
    finally:
        await client.aclose()


def client_for(url: str, http: AgentTransport, **spec: Any) -> AgentClient:
    spec.setdefault("retry", FAST)
    return AgentClient(
        AgentRegistry([AgentSpec(name="charts", url=url, protocol="a2a", **spec)]), http
    )


async def call(client: AgentClient, **kwargs: Any) -> Any:
    return await client.call("charts", VIZ_INPUT, workflow_id="wf", node_id="chart", **kwargs)


async def test_round_trip_reads_the_card_and_returns_the_data(
    served: Served, http: AgentTransport
) -> None:
    """The card gives the version; the node's input arrives as the agent's input, with
    its integers intact; the task's artifact is the call's data."""
    client = client_for(served.url, http)
    assert await client.discover() == {"charts": None}
    peer = client.a2a_peers["charts"]
    assert peer.version is A2AVersion(served.service.version)
    assert peer.skills == ("viz",)
    result = await call(client)
    assert result.data["spec"]["mark"]["type"] == "bar" or result.data["spec"]["mark"] == "bar"
    values = result.data["spec"]["data"]["values"]
    assert values[0]["sum_revenue"] == 10 and isinstance(values[0]["sum_revenue"], int)
    assert result.attempts == 1
    assert served.service.stats.tasks == 1
    assert client.breaker("charts").snapshot().failure_count == 0


async def test_failed_task_is_a_breaker_failure_and_not_retried(
    served: Served, http: AgentTransport
) -> None:
    served.service.faults.fail = True
    client = client_for(served.url, http, breaker=BreakerConfig(fail_max=5))
    with pytest.raises(AgentTaskFailed) as info:
        await call(client)
    assert info.value.state == "failed" and "injected failure" in str(info.value)
    assert info.value.attempts == 1
    assert served.service.stats.sends == 1
    assert client.breaker("charts").snapshot().failure_count == 1


async def test_input_required_is_a_clear_non_retryable_failure(
    served: Served, http: AgentTransport
) -> None:
    served.service.faults.input_required = True
    client = client_for(served.url, http)
    with pytest.raises(AgentNeedsInput) as info:
        await call(client)
    assert info.value.code == "agent_needs_input"
    assert info.value.state == "input_required"
    assert info.value.attempts == 1
    # The agent answered: alive, so no breaker failure.
    assert client.breaker("charts").snapshot().failure_count == 0


async def test_rejected_input_is_not_the_agents_fault(
    served: Served, http: AgentTransport
) -> None:
    client = client_for(served.url, http)
    with pytest.raises(AgentTaskFailed) as info:
        await client.call("charts", {"intent": "nope"}, workflow_id="w", node_id="s")
    assert info.value.state == "rejected"
    assert client.breaker("charts").snapshot().failure_count == 0


async def test_working_task_is_polled_until_done(served: Served, http: AgentTransport) -> None:
    served.service.faults.delay_ms = 150
    client = client_for(served.url, http)
    result = await call(client)
    assert "spec" in result.data
    assert served.service.stats.gets >= 1


async def test_cancelling_the_call_sends_cancel_task(
    served: Served, http: AgentTransport
) -> None:
    """A cancelled caller (a cancelled workflow) makes the client send CancelTask for the
    task in flight; the agent stops it."""
    served.service.faults.delay_ms = 60_000
    client = client_for(served.url, http)
    running = asyncio.create_task(call(client))
    async with asyncio.timeout(30):  # a hang guard, not a timing claim
        await served.service.polled.wait()  # the task exists and is working
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    await client.aclose()  # the forwarded CancelTask has been answered
    assert served.service.stats.cancels == 1
    (task,) = served.service.tasks.values()
    assert task.state == "canceled"


async def test_step_deadline_bounds_the_polling_and_cancels_the_task(
    served: Served, http: AgentTransport
) -> None:
    served.service.faults.delay_ms = 60_000
    client = client_for(served.url, http)
    loop = asyncio.get_running_loop()
    with pytest.raises(AgentTimeout) as info:
        await client.call(
            "charts", VIZ_INPUT, workflow_id="w", node_id="s", deadline=loop.time() + 0.3
        )
    assert info.value.phase == "deadline"
    await client.aclose()
    assert served.service.stats.cancels == 1


async def test_every_retry_carries_the_same_message_id_and_the_version_header() -> None:
    """A 503 then a completed task: two SendMessage requests, one messageId."""
    seen: list[tuple[str, str | None]] = []
    card = {
        "name": "fake",
        "description": "",
        "version": "1",
        "supportedInterfaces": [
            {"url": "http://agent.test/rpc", "protocolBinding": "JSONRPC", "protocolVersion": "1.0"}
        ],
    }

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("agent-card.json"):
            return httpx.Response(200, json=card)
        body = orjson.loads(request.content)
        seen.append((body["params"]["message"]["messageId"], request.headers.get("A2A-Version")))
        if len(seen) == 1:
            return httpx.Response(503)
        task = {
            "id": "t1",
            "status": {"state": "TASK_STATE_COMPLETED"},
            "artifacts": [{"artifactId": "a", "parts": [{"data": {"ok": 1}}]}],
        }
        return httpx.Response(
            200, json={"jsonrpc": "2.0", "id": body["id"], "result": {"task": task}}
        )

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        client = client_for("http://agent.test", HttpxTransport(http))
        result = await client.call("charts", {"x": 1}, workflow_id="wf", node_id="s1")
    assert result.data == {"ok": 1} and result.attempts == 2
    assert seen == [("wf:s1", "1.0"), ("wf:s1", "1.0")]
    assert client.retries["charts"] == 1


async def test_unreachable_card_is_reported_and_read_on_the_first_call(
    http: AgentTransport,
) -> None:
    client = client_for("http://127.0.0.1:1", http, retry=RetryConfig(max_attempts=1))
    found = await client.discover()
    assert found["charts"] is not None and "charts" not in client.a2a_peers


async def test_an_oversized_a2a_answer_is_cut_off() -> None:
    """A2A answers are read under the agent's max_response_bytes like native ones."""
    card = {
        "name": "big",
        "description": "",
        "version": "1",
        "supportedInterfaces": [
            {"url": "http://agent.test/", "protocolBinding": "JSONRPC", "protocolVersion": "1.0"}
        ],
    }

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("agent-card.json"):
            return httpx.Response(200, json=card)
        return httpx.Response(200, content=b'{"jsonrpc": "2.0", "result": "' + b"x" * 5000)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        client = client_for("http://agent.test", HttpxTransport(http), max_response_bytes=2048)
        with pytest.raises(AgentResponseTooLarge):
            await client.call("charts", {"x": 1}, workflow_id="wf", node_id="s1")


async def test_a_card_pointing_at_another_origin_is_refused() -> None:
    """The registry's URLs are the only ones called: a card naming another host is a bad
    response, and nothing is sent there."""
    sent: list[str] = []
    card = {
        "name": "sly",
        "description": "",
        "version": "1",
        "supportedInterfaces": [
            {"url": "http://10.0.0.1/rpc", "protocolBinding": "JSONRPC", "protocolVersion": "1.0"}
        ],
    }

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(str(request.url))
        return httpx.Response(200, json=card)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        client = client_for(
            "http://agent.test", HttpxTransport(http), retry=RetryConfig(max_attempts=1)
        )
        found = await client.discover()
        assert "another origin" in str(found["charts"])
        with pytest.raises(AgentBadResponse):
            await client.call("charts", {"x": 1}, workflow_id="wf", node_id="s1")
    assert all(url.startswith("http://agent.test/") for url in sent)
