"""Pause and resume through the API: on one instance (memory store) and across two
instances on one Redis, surviving the owner's restart."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from agents.registry import AgentRegistry, AgentSpec
from orchestrator.api.services import SERVICES
from orchestrator.app import create_app
from orchestrator.settings import Settings, default_registry
from state.redis import RedisStateStore
from state.store import StateStore
from tests.integration.conftest import FAST_RETRY, eventually
from tests.integration.gated_agent import GatedAgent, gated_agent

Client = TestClient[web.Request, web.Application]

TWO_STEPS = {
    "name": "two-steps",
    "nodes": [
        {"id": "first", "kind": "agent", "agent": "gated", "input": {"n": 1}},
        {
            "id": "second",
            "kind": "agent",
            "agent": "gated",
            "depends_on": ["first"],
            "input": {"from": "{{ first.step }}"},
        },
    ],
    "output": {"second": "{{ second.input }}"},
}


@pytest.fixture
async def agent() -> AsyncIterator[GatedAgent]:
    async with gated_agent() as running:
        yield running


@pytest.fixture
async def make_api(
    agent: GatedAgent, aiohttp_client: Any
) -> AsyncIterator[Callable[..., Awaitable[Client]]]:
    stores: list[StateStore] = []

    async def make(store: StateStore | None = None, replica_id: str | None = None) -> Client:
        if store is not None:
            stores.append(store)
        # The built-in chain needs nlp/data/viz registered; only 'gated' is ever called.
        specs = [*default_registry().values()]
        registry = AgentRegistry([*specs, AgentSpec(name="gated", url=agent.url, retry=FAST_RETRY)])
        app = create_app(Settings(agents=registry), store=store, replica_id=replica_id)
        client: Client = await aiohttp_client(app)
        return client

    yield make
    for store in stores:
        await store.close()


async def start(client: Client) -> str:
    response = await client.post("/api/query", json={"workflow": TWO_STEPS, "mode": "async"})
    assert response.status == 202
    body = await response.json()
    assert body["links"]["pause"].endswith("/pause")
    return str(body["workflow_id"])


async def status(client: Client, workflow_id: str) -> dict[str, Any]:
    response = await client.get(f"/api/workflow/{workflow_id}/status")
    assert response.status == 200
    body: dict[str, Any] = await response.json()
    return body


async def test_pause_then_resume_on_one_instance(
    make_api: Callable[..., Awaitable[Client]], agent: GatedAgent
) -> None:
    """The running step finishes, the next does not start; resume runs it; pause is
    idempotent, resume of a running workflow is harmless, both are 409 once finished."""
    client = await make_api()
    workflow_id = await start(client)

    async def first_in_flight() -> bool:
        return agent.in_flight["first"] == 1

    await eventually(first_in_flight)
    response = await client.post(f"/api/workflow/{workflow_id}/pause")
    assert response.status == 202  # 'first' is still running
    assert (await response.json())["pause_requested"] is True
    agent.gate("first").set()
    await client.app[SERVICES].orchestrator.wait(workflow_id)
    paused = await status(client, workflow_id)
    assert paused["status"] == "paused"
    assert paused["steps"]["first"]["status"] == "completed"
    assert paused["steps"]["second"]["status"] == "pending"
    assert agent.requests["second"] == 0
    again = await client.post(f"/api/workflow/{workflow_id}/pause")
    assert again.status == 200 and (await again.json())["status"] == "paused"

    agent.gate("second").set()
    resumed = await client.post(f"/api/workflow/{workflow_id}/resume")
    assert resumed.status == 200
    assert (await resumed.json())["status"] == "running"
    await client.app[SERVICES].orchestrator.wait(workflow_id)
    done = await status(client, workflow_id)
    assert done["status"] == "completed"
    assert done["result"] == {"second": {"from": "first"}}
    assert agent.requests == {"first": 1, "second": 1}
    for action in ("pause", "resume"):
        finished = await client.post(f"/api/workflow/{workflow_id}/{action}")
        assert finished.status == 409
        assert (await finished.json())["error"]["details"]["status"] == "completed"
    unknown = await client.post("/api/workflow/nope/pause")
    assert unknown.status == 404


async def test_cancel_of_a_paused_workflow_ends_it(
    make_api: Callable[..., Awaitable[Client]], agent: GatedAgent
) -> None:
    """Nobody runs a paused workflow, yet cancel still brings it to a terminal state."""
    client = await make_api()
    workflow_id = await start(client)
    await client.post(f"/api/workflow/{workflow_id}/pause")
    agent.gate("first").set()
    await client.app[SERVICES].orchestrator.wait(workflow_id)
    assert (await status(client, workflow_id))["status"] == "paused"
    response = await client.post(f"/api/workflow/{workflow_id}/cancel")
    assert response.status == 200
    body = await response.json()
    assert body["status"] == "cancelled"
    assert body["steps"]["second"]["status"] == "cancelled"
    assert agent.requests["second"] == 0


@pytest.mark.redis
async def test_pause_on_one_replica_survives_its_restart_and_resumes_on_another(
    make_api: Callable[..., Awaitable[Client]], agent: GatedAgent, redis_url: str
) -> None:
    """Pause sent to B stops the workflow A runs between nodes; A shuts down; the paused
    state survives in Redis; resume sent to B runs the rest there, once."""
    prefix = f"test:{uuid.uuid4().hex[:8]}:"
    a = await make_api(RedisStateStore.from_url(redis_url, prefix=prefix), replica_id="a")
    b = await make_api(RedisStateStore.from_url(redis_url, prefix=prefix), replica_id="b")
    workflow_id = await start(a)

    async def first_in_flight() -> bool:
        return agent.in_flight["first"] == 1

    await eventually(first_in_flight)
    response = await b.post(f"/api/workflow/{workflow_id}/pause")
    assert response.status == 202
    orchestrator_a = a.app[SERVICES].orchestrator

    async def a_saw_the_pause() -> bool:
        return workflow_id in orchestrator_a.pausing

    await eventually(a_saw_the_pause)
    agent.gate("first").set()

    async def paused() -> bool:
        return bool((await status(b, workflow_id))["status"] == "paused")

    await eventually(paused)
    await a.close()  # the owner goes away; the paused workflow stays paused
    c = await make_api(RedisStateStore.from_url(redis_url, prefix=prefix), replica_id="c")
    seen = await status(c, workflow_id)
    assert seen["status"] == "paused"
    assert seen["owner"] == "a"
    assert await c.app[SERVICES].orchestrator.reconcile() == []  # not an orphan

    agent.gate("second").set()
    resumed = await b.post(f"/api/workflow/{workflow_id}/resume")
    assert resumed.status == 200
    await b.app[SERVICES].orchestrator.wait(workflow_id)
    done = await status(c, workflow_id)
    assert done["status"] == "completed"
    assert done["owner"] == "b"
    assert agent.requests == {"first": 1, "second": 1}
