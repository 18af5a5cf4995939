"""An A2A agent in a workflow, through the API: the reference Viz agent served over A2A
next to the native NLP and Data agents, all on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agents.reference.a2a_service import A2A_SERVICE, A2AService, start_a2a_agent
from agents.registry import AgentRegistry, AgentSpec
from orchestrator.app import create_app
from tests.integration.conftest import FAST_RETRY, Agents, eventually, settings_for

WORKFLOW = {
    "name": "a2a-report",
    "inputs": {"query": "total revenue by region"},
    "nodes": [
        {"id": "nlp", "kind": "agent", "agent": "nlp", "input": {"query": "{{ inputs.query }}"}},
        {
            "id": "data",
            "kind": "agent",
            "agent": "data",
            "depends_on": ["nlp"],
            "input": {"intent": "{{ nlp.intent }}"},
        },
        {
            "id": "chart",
            "kind": "agent",
            "agent": "charts",
            "depends_on": ["nlp", "data"],
            "input": {
                "intent": "{{ nlp.intent }}",
                "columns": "{{ data.columns }}",
                "rows": "{{ data.rows }}",
            },
        },
    ],
    "output": {"rows": "{{ data.rows }}", "chart": "{{ chart.spec }}"},
}


@pytest.fixture
async def a2a_viz() -> AsyncIterator[tuple[str, A2AService]]:
    runner, port = await start_a2a_agent("viz", version="1.0")
    try:
        yield f"http://127.0.0.1:{port}", runner.app[A2A_SERVICE]
    finally:
        await runner.cleanup()


@pytest.fixture
async def api(agents: Agents, a2a_viz: tuple[str, A2AService], aiohttp_client: Any) -> Any:
    url, _ = a2a_viz
    base = settings_for(agents)
    charts = AgentSpec(name="charts", url=url, protocol="a2a", retry=FAST_RETRY)
    settings = type(base)(agents=AgentRegistry([*base.agents.values(), charts]))
    client = await aiohttp_client(create_app(settings))
    return client


async def test_a2a_agent_in_a_workflow_completes(api: Any, a2a_viz: tuple[str, A2AService]) -> None:
    _, service = a2a_viz

    async def card_read_at_start() -> bool:
        breakers = (await (await api.get("/api/circuit-breakers/status")).json())["breakers"]
        return breakers["charts"]["a2a"] is not None

    await eventually(card_read_at_start)  # before any call: the start-up discovery
    assert service.stats.requests == 0
    response = await api.post("/api/query", json={"workflow": WORKFLOW})
    assert response.status == 200
    body = await response.json()
    assert body["status"] == "completed"
    assert body["result"]["chart"]["$schema"].startswith("https://vega.github.io")
    assert body["steps"]["chart"]["agent"] == "charts"
    assert service.stats.tasks == 1
    breakers = (await (await api.get("/api/circuit-breakers/status")).json())["breakers"]
    assert breakers["charts"]["protocol"] == "a2a"
    assert breakers["charts"]["a2a"]["protocol_version"] == "1.0"
    assert breakers["charts"]["calls"] == 1
    assert breakers["nlp"]["protocol"] == "native" and "a2a" not in breakers["nlp"]


async def test_a2a_task_failure_fails_the_step(api: Any, a2a_viz: tuple[str, A2AService]) -> None:
    _, service = a2a_viz
    service.faults.fail = True
    response = await api.post("/api/query", json={"workflow": WORKFLOW})
    assert response.status == 502
    body = await response.json()
    assert body["status"] == "failed"
    assert body["steps"]["chart"]["error"]["type"] == "agent_task_failed"
    assert body["error"]["agent"] == "charts"


async def test_cancelling_the_workflow_cancels_the_a2a_task(
    api: Any, a2a_viz: tuple[str, A2AService]
) -> None:
    _, service = a2a_viz
    service.faults.delay_ms = 60_000
    accepted = await (
        await api.post("/api/query", json={"workflow": WORKFLOW, "mode": "async"})
    ).json()
    async with asyncio.timeout(10):
        await service.polled.wait()  # the chart task is working and being polled
    response = await api.post(f"/api/workflow/{accepted['workflow_id']}/cancel")
    assert (await response.json())["status"] == "cancelled"

    async def forwarded() -> bool:
        return service.stats.cancels == 1

    await eventually(forwarded)
    (task,) = service.tasks.values()
    assert task.state == "canceled"
