"""Replicas as real `orchestrator serve` processes on one real Redis: crash and restart.

Each test starts its own redis-server (AOF on, tests/redis_server.py) and its own
orchestrator processes on free 127.0.0.1 ports, against the reference agents
running in the test process (their /stats count the requests each agent saw).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.conftest import Agents, eventually
from tests.integration.gate import GatedAgent
from tests.ports import free_port
from tests.redis_server import RedisServer, redis_server

pytestmark = pytest.mark.redis

QUESTION = "total revenue by channel"
ROOT = Path(__file__).resolve().parents[2]


class Replica:
    """One `orchestrator serve` child process and an HTTP client for its API."""

    def __init__(self, process: asyncio.subprocess.Process, port: int) -> None:
        self.process = process
        self.port = port
        self.http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10)

    async def status(self, workflow_id: str) -> httpx.Response:
        return await self.http.get(f"/api/workflow/{workflow_id}/status")

    async def document(self, workflow_id: str) -> dict[str, Any]:
        response = await self.status(workflow_id)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def kill(self) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
            await self.process.wait()

    async def close(self) -> None:
        await self.http.aclose()
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(15):
                    await self.process.wait()
            except TimeoutError:
                await self.kill()


StartReplica = Callable[[], Awaitable[Replica]]


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RedisServer]:
    async for running in redis_server(tmp_path, aof=True):
        yield running


@pytest.fixture
async def start_replica(
    server: RedisServer, agents: Agents, redis_prefix: str, tmp_path: Path
) -> AsyncIterator[Callable[..., Awaitable[Replica]]]:
    """Start an `orchestrator serve` on the test's Redis and agents; all stopped at the end."""
    started: list[Replica] = []
    reserved: set[int] = set()

    async def start(*, lease_s: float = 1.5, data_url: str | None = None) -> Replica:
        # Reserved before the first await: replicas started together get different ports.
        port = free_port(taken=reserved)
        reserved.add(port)
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": os.environ.get("HOME", "/tmp"),
            "REDIS_URL": server.url,
            "ORCH_KEY_PREFIX": redis_prefix,
            "ORCH_LEASE_S": str(lease_s),
            "ORCH_SHUTDOWN_GRACE_S": "0.5",
            "ORCH_LOG_LEVEL": "warning",
            "NLP_AGENT_URL": agents["nlp"].url,
            "DATA_AGENT_URL": data_url or agents["data"].url,
            "VIZ_AGENT_URL": agents["viz"].url,
        }
        log_path = tmp_path / f"replica-{port}.log"
        with log_path.open("wb") as log:  # a local file, opened once
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "orchestrator", "serve", "--port", str(port),
                cwd=ROOT, env=env, stdout=log, stderr=log,
            )  # fmt: skip
        replica = Replica(process, port)
        started.append(replica)

        async def ready() -> bool:
            if process.returncode is not None:
                raise AssertionError(f"replica exited: {log_path.read_text()}")
            # Its own announcement first (printed once its socket is bound): a replica of
            # another suite on the same port must never pass for ours.
            if "orchestrator listening on" not in log_path.read_text(errors="replace"):
                return False
            try:
                return (await replica.http.get("/readyz")).status_code == 200
            except httpx.TransportError:
                return False

        await eventually(ready, interval_s=0.05)  # interpreter start-up: bounded
        return replica

    yield start
    await asyncio.gather(*(replica.close() for replica in started))


async def _data_in_flight(agents: Agents) -> None:
    async def in_flight() -> bool:
        return bool((await agents["data"].stats())["in_flight"] == 1)

    await eventually(in_flight)


async def test_a_killed_replicas_workflow_is_resumed_by_the_other_without_rerunning_steps(
    start_replica: Callable[..., Awaitable[Replica]], agents: Agents
) -> None:
    """SIGKILL the owner mid-step: the survivor resumes within the lease, NLP (done) is not
    called again, and every replica then shows the same document."""
    first, second = await asyncio.gather(start_replica(), start_replica())
    await agents["data"].control(delay_ms=60_000)
    accepted = await first.http.post("/api/query", json={"query": QUESTION, "mode": "async"})
    assert accepted.status_code == 202
    workflow_id = accepted.json()["workflow_id"]
    await _data_in_flight(agents)

    # Transitions are written behind (ORCH_STATE_WRITE_DELAY_S): kill only once the store
    # holds NLP's completion, which is what "a completed step is not run again" is about.
    async def data_running_stored() -> bool:
        return bool((await second.document(workflow_id))["steps"]["data"]["status"] == "running")

    await eventually(data_running_stored)
    owner = (await second.document(workflow_id))["owner"]

    await first.kill()
    await agents["data"].control(delay_ms=0)

    async def resumed_and_done() -> bool:
        return bool((await second.document(workflow_id))["status"] == "completed")

    # Lease 1.5 s, reconcile every 0.75 s: bounded well above that, never a fixed sleep.
    await eventually(resumed_and_done, interval_s=0.05)
    body = await second.document(workflow_id)
    assert body["owner"] != owner
    assert body["steps"]["nlp"]["attempts"] == 1
    assert (await agents["nlp"].stats())["requests"] == 1  # completed before the kill: kept
    assert (await agents["data"].stats())["requests"] == 2  # in flight at the kill: run again
    assert (await agents["viz"].stats())["requests"] == 1

    third = await start_replica()
    assert await third.document(workflow_id) == await second.document(workflow_id)


async def test_a_redis_restart_mid_run_loses_nothing(
    start_replica: Callable[..., Awaitable[Replica]],
    agents: Agents,
    data_gate: GatedAgent,
    server: RedisServer,
) -> None:
    """Redis (AOF) killed and restarted while a step is in flight: the other replica answers
    503 with Retry-After meanwhile, the owner answers from memory, and afterwards the
    workflow completes once, with the same document on both replicas."""
    # A lease far longer than the outage: this test is about Redis, not about takeover.
    first, second = await asyncio.gather(
        start_replica(lease_s=30, data_url=data_gate.url),
        start_replica(lease_s=30, data_url=data_gate.url),
    )
    accepted = await first.http.post("/api/query", json={"query": QUESTION, "mode": "async"})
    workflow_id = accepted.json()["workflow_id"]
    # The step is held in flight until Redis is down (a gate, not a delay to race).
    await data_gate.arrived.wait()

    await server.kill()
    elsewhere = await second.status(workflow_id)
    assert elsewhere.status_code == 503
    assert elsewhere.headers["Retry-After"] == "1"
    assert elsewhere.json()["error"]["code"] == "state_store_unavailable"
    from_memory = await first.status(workflow_id)
    assert from_memory.status_code == 200
    assert from_memory.json()["workflow_id"] == workflow_id
    data_gate.opened.set()  # the step ends while Redis is down
    await server.start()

    async def done_everywhere() -> bool:
        statuses = [(await r.status(workflow_id)).json() for r in (first, second)]
        return all(body.get("status") == "completed" for body in statuses)

    await eventually(done_everywhere, interval_s=0.05)
    assert await first.document(workflow_id) == await second.document(workflow_id)
    for name in ("nlp", "data", "viz"):
        assert (await agents[name].stats())["requests"] == 1, name
    assert data_gate.requests == 1
