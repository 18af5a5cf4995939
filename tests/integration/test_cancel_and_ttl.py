"""Cancellation mid-flight and TTL expiry, through the API against real agents."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from orchestrator.api.services import SERVICES
from state.memory import MemoryStateStore
from tests.integration.conftest import Agents, eventually

QUESTION = "total profit by category"


async def test_cancel_mid_flight_aborts_the_call_and_starts_nothing_after(
    api: Any, agents: Agents
) -> None:
    """Cancel aborts the in-flight Data request (the agent sees it), Viz is never called."""
    await agents["data"].control(delay_ms=60_000)
    client = await api()
    accepted = await (
        await client.post("/api/query", json={"query": QUESTION, "mode": "async"})
    ).json()
    workflow_id = accepted["workflow_id"]

    async def data_in_flight() -> bool:
        return bool((await agents["data"].stats())["in_flight"] == 1)

    await eventually(data_in_flight)
    response = await client.post(f"/api/workflow/{workflow_id}/cancel")
    assert response.status == 200
    body = await response.json()
    assert body["status"] == "cancelled"
    assert body["steps"]["nlp"]["status"] == "completed"
    assert body["steps"]["nlp"]["output"]["intent"]["metric"] == "profit"
    assert body["steps"]["data"]["status"] == "cancelled"
    # Viz never started: cancelled before it was dispatched.
    assert body["steps"]["viz"]["status"] == "cancelled"
    assert body["steps"]["viz"]["started_at"] is None

    async def agent_saw_abort() -> bool:
        return bool((await agents["data"].stats())["cancelled"] == 1)

    await eventually(agent_saw_abort)
    assert (await agents["viz"].stats())["requests"] == 0
    status = await (await client.get(f"/api/workflow/{workflow_id}/status")).json()
    assert status["status"] == "cancelled"
    assert status["steps"]["nlp"]["status"] == "completed"

    # Cancel is idempotent: a second cancel answers 200 with the same document.
    again = await client.post(f"/api/workflow/{workflow_id}/cancel")
    assert again.status == 200
    repeated = await again.json()
    assert repeated["status"] == "cancelled"
    assert repeated["steps"] == status["steps"]
    assert repeated["finished_at"] == status["finished_at"]


async def test_cancel_of_finished_workflow_is_409_with_its_status(api: Any) -> None:
    """Cancelling a completed workflow answers 409 and names the terminal status."""
    client = await api()
    done = await (await client.post("/api/query", json={"query": QUESTION})).json()
    response = await client.post(f"/api/workflow/{done['workflow_id']}/cancel")
    assert response.status == 409
    assert (await response.json())["error"]["details"]["status"] == "completed"


async def test_status_is_404_after_the_ttl(api: Any) -> None:
    """A finished workflow's status is served until its TTL ends, then 404."""
    now = [1_000.0]
    store = MemoryStateStore(ttl_s=30, clock=lambda: now[0])
    client = await api(store=store)
    done = await (await client.post("/api/query", json={"query": QUESTION})).json()
    url = f"/api/workflow/{done['workflow_id']}/status"
    now[0] += 29
    assert (await client.get(url)).status == 200
    now[0] += 2
    response = await client.get(url)
    assert response.status == 404
    assert (await response.json())["error"]["code"] == "workflow_not_found"


async def test_client_disconnect_does_not_stop_the_workflow(api: Any, agents: Agents) -> None:
    """A sync caller that goes away leaves its workflow running, to end in a terminal state."""
    await agents["data"].control(delay_ms=60_000)
    client = await api()
    orchestrator = client.app[SERVICES].orchestrator
    request = asyncio.ensure_future(client.post("/api/query", json={"query": QUESTION}))

    async def data_in_flight() -> bool:
        return bool((await agents["data"].stats())["in_flight"] == 1)

    await eventually(data_in_flight)
    request.cancel()  # the frontend gives up and closes the connection
    with contextlib.suppress(asyncio.CancelledError):
        await request
    (workflow_id,) = orchestrator.running
    status = await (await client.get(f"/api/workflow/{workflow_id}/status")).json()
    assert status["status"] == "running"
    assert (await agents["data"].stats())["cancelled"] == 0
    body = await (await client.post(f"/api/workflow/{workflow_id}/cancel")).json()
    assert body["status"] == "cancelled"


async def test_hanging_agent_ends_in_workflow_timeout(api: Any, agents: Agents) -> None:
    """An agent that never answers cannot keep a workflow open past its deadline."""
    await agents["data"].control(delay_ms=60_000)
    client = await api(workflow_timeout_s=0.3)
    response = await client.post("/api/query", json={"query": QUESTION})
    body = await response.json()
    assert body["status"] == "failed"
    # The workflow deadline reaches the agent call as its deadline too: whichever
    # notices first names the failure.
    assert (response.status, body["error"]["code"]) in {
        (504, "workflow_timeout"),
        (502, "agent_timeout"),
    }
    assert "timed out" in body["error"]["message"]
    assert body["steps"]["nlp"]["status"] == "completed"

    async def agent_saw_abort() -> bool:
        return bool((await agents["data"].stats())["cancelled"] == 1)

    await eventually(agent_saw_abort)
