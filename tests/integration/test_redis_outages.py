"""Redis goes away under a running service: a real redis-server stopped, restarted, frozen.

Each test has a redis-server of its own (tests/redis_server.py), so breaking it
disturbs nobody. The API runs in-process against the real reference agents;
the data step goes through a `GatedAgent`, so the test decides when it ends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.api.services import SERVICES
from orchestrator.app import create_app
from state.redis import RedisStateStore
from tests.integration.conftest import Agents, Reachable, eventually, settings_for
from tests.integration.gate import GatedAgent
from tests.redis_server import RedisServer, redis_server, require_redis_server

pytestmark = pytest.mark.redis

QUESTION = "total revenue by channel"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RedisServer]:
    async for running in redis_server(tmp_path, aof=True):
        yield running


async def _api_on(
    aiohttp_client: Any, agents: Agents, gate: GatedAgent, server: RedisServer, **settings: Any
) -> Any:
    """The API on `server`'s Redis, data calls through `gate`. The app builds its own
    store from the settings: the production path (pool, timeouts)."""
    with_gate: dict[str, Reachable] = {**agents, "data": gate}
    app = create_app(settings_for(with_gate, redis_url=server.url, **settings))
    return await aiohttp_client(app)


def _assert_unavailable(response: Any, body: dict[str, Any]) -> None:
    assert response.status == 503
    assert response.headers["Retry-After"] == "1"
    assert body["error"]["code"] == "state_store_unavailable"


async def test_the_service_starts_without_redis_and_connects_when_it_comes_back(
    api: Any, agents: Agents, tmp_path: Path
) -> None:
    """Not ready and 503 with Retry-After while Redis is absent; ready and working after."""
    server = RedisServer(require_redis_server(), tmp_path, aof=False)  # not started yet
    client = await api(redis_url=server.url)
    try:
        ready = await client.get("/readyz")
        assert ready.status == 503
        response = await client.post("/api/query", json={"query": QUESTION, "mode": "async"})
        _assert_unavailable(response, await response.json())
        response = await client.get("/api/workflow/abc/status")
        _assert_unavailable(response, await response.json())

        await server.start()

        async def ready_now() -> bool:
            return bool((await client.get("/readyz")).status == 200)

        await eventually(ready_now)
        done = await client.post("/api/query", json={"query": QUESTION})
        assert done.status == 200
        assert (await done.json())["status"] == "completed"
    finally:
        await server.kill()


async def test_a_workflow_whose_end_falls_in_an_outage_is_not_lost(
    aiohttp_client: Any, agents: Agents, data_gate: GatedAgent, server: RedisServer
) -> None:
    """Redis dies mid-run: the workflow finishes, the owner answers status from memory,
    every other call is 503 (not 500), and the terminal write lands once Redis is back."""
    client = await _api_on(aiohttp_client, agents, data_gate, server)
    accepted = await (
        await client.post("/api/query", json={"query": QUESTION, "mode": "async"})
    ).json()
    workflow_id = accepted["workflow_id"]
    await data_gate.arrived.wait()

    await server.kill()  # AOF with appendfsync always: what was acknowledged is on disk
    data_gate.opened.set()
    orchestrator = client.app[SERVICES].orchestrator

    async def finished_in_memory() -> bool:
        status = await client.get(f"/api/workflow/{workflow_id}/status")
        return bool(status.status == 200 and (await status.json())["status"] == "completed")

    await eventually(finished_in_memory)
    assert workflow_id in orchestrator.running  # its terminal write is still owed
    for response in (
        await client.get("/api/workflow/unknown/status"),
        await client.post("/api/query", json={"query": QUESTION, "mode": "async"}),
        await client.post("/api/workflow/unknown/cancel"),
    ):
        _assert_unavailable(response, await response.json())
    assert (await client.get("/readyz")).status == 503

    await server.start()  # reloads the AOF

    async def stored() -> bool:
        return workflow_id not in orchestrator.running

    await eventually(stored)
    reader = RedisStateStore.from_url(server.url)
    try:
        state = await reader.get(workflow_id)
        assert state is not None and state.status.value == "completed"
        assert state.steps["viz"].status.value == "completed"
        assert await reader.leases().orphans() == []
    finally:
        await reader.close()
    assert (await agents["nlp"].stats())["requests"] == 1
    assert data_gate.requests == 1


async def test_a_frozen_redis_gets_503_within_the_timeouts_and_recovers(
    aiohttp_client: Any, agents: Agents, data_gate: GatedAgent, server: RedisServer
) -> None:
    """SIGSTOP: connections hang rather than fail; bounded timeouts turn that into 503s."""
    data_gate.opened.set()  # no step is held here
    client = await _api_on(
        aiohttp_client, agents, data_gate, server, redis_timeout_s=0.3, redis_connect_timeout_s=0.3
    )
    server.freeze()
    try:
        status = await client.get("/api/workflow/someone/status")
        _assert_unavailable(status, await status.json())
        submit = await client.post("/api/query", json={"query": QUESTION, "mode": "async"})
        _assert_unavailable(submit, await submit.json())
        assert (await client.get("/readyz")).status == 503
    finally:
        server.thaw()

    async def ready_now() -> bool:
        return bool((await client.get("/readyz")).status == 200)

    await eventually(ready_now)
    done = await client.post("/api/query", json={"query": QUESTION})
    assert done.status == 200


async def test_a_restart_without_persistence_loses_finished_workflows_not_running_ones(
    aiohttp_client: Any, agents: Agents, data_gate: GatedAgent, tmp_path: Path
) -> None:
    """Redis restarted empty (no AOF): a finished workflow's status is gone (404), but the
    one still running is written again by its owner and finishes normally."""
    server = RedisServer(require_redis_server(), tmp_path, aof=False)
    await server.start()
    try:
        client = await _api_on(aiohttp_client, agents, data_gate, server)
        orchestrator = client.app[SERVICES].orchestrator
        first = await client.post("/api/query", json={"query": QUESTION, "mode": "async"})
        finished_id = (await first.json())["workflow_id"]
        await data_gate.arrived.wait()
        data_gate.opened.set()

        async def first_done() -> bool:
            return finished_id not in orchestrator.running

        await eventually(first_done)
        data_gate.opened.clear()
        data_gate.arrived.clear()
        second = await client.post("/api/query", json={"query": QUESTION, "mode": "async"})
        running_id = (await second.json())["workflow_id"]
        await data_gate.arrived.wait()

        await server.kill()
        await server.start()  # empty: nothing was persisted
        data_gate.opened.set()

        async def rewritten() -> bool:
            return running_id not in orchestrator.running

        await eventually(rewritten)
        gone = await client.get(f"/api/workflow/{finished_id}/status")
        assert gone.status == 404
        prefix = client.app[SERVICES].settings.key_prefix
        reader = RedisStateStore.from_url(server.url, prefix=prefix)
        try:
            state = await reader.get(running_id)
            assert state is not None and state.status.value == "completed"
        finally:
            await reader.close()
    finally:
        await server.kill()
