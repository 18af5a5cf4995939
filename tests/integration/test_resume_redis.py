"""A replica that dies or shuts down does not strand its workflows (real Redis, real agents)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
import redis.asyncio as aioredis

from agents.reference import parse_intent
from orchestrator.api.services import SERVICES
from state import keys
from state.models import NodeRun, NodeStatus, WorkflowState, WorkflowStatus
from state.redis import RedisStateStore
from tests.integration.conftest import Agents, eventually

pytestmark = pytest.mark.redis

QUESTION = "total revenue by channel"


@pytest.fixture
def prefix(redis_prefix: str) -> str:
    return redis_prefix  # this test's own keys, deleted after it (tests/conftest.py)


async def _status(client: Any, workflow_id: str) -> dict[str, Any]:
    body: dict[str, Any] = await (await client.get(f"/api/workflow/{workflow_id}/status")).json()
    return body


async def test_an_orphaned_workflow_is_resumed_without_rerunning_completed_steps(
    api: Any, agents: Agents, redis_url: str, prefix: str
) -> None:
    """What a dead replica left half-done is finished by another; its completed NLP step is kept."""
    store = RedisStateStore.from_url(redis_url, prefix=prefix)
    now = time.time()
    nlp = NodeRun(
        step_id="nlp",
        kind="agent",
        agent="nlp",
        status=NodeStatus.COMPLETED,
        attempts=1,
        started_at=now - 1,
        finished_at=now - 0.9,
        output={"intent": dict(parse_intent(QUESTION))},
    )
    data = NodeRun(
        step_id="data",
        kind="agent",
        agent="data",
        status=NodeStatus.RUNNING,
        attempts=1,
        started_at=now - 0.9,
    )
    viz = NodeRun(step_id="viz", kind="agent", agent="viz")
    orphan = WorkflowState(
        workflow_id=uuid.uuid4().hex,
        definition_name="chain",
        status=WorkflowStatus.RUNNING,
        inputs={"query": QUESTION},
        steps={"nlp": nlp, "data": data, "viz": viz},
        owner="dead",
    )
    assert await store.save(orphan)
    assert await store.leases().claim(orphan.workflow_id, "dead", lease_s=0.05)

    survivor = await api(
        store=RedisStateStore.from_url(redis_url, prefix=prefix), replica_id="survivor", lease_s=0.3
    )

    async def finished() -> bool:
        return bool((await _status(survivor, orphan.workflow_id))["status"] == "completed")

    await eventually(finished)
    body = await _status(survivor, orphan.workflow_id)
    assert body["owner"] == "survivor"
    assert body["steps"]["nlp"]["started_at"] == nlp.started_at  # kept, not run again
    assert body["steps"]["data"]["status"] == "completed"
    assert body["result"]["chart"] is not None
    assert (await agents["nlp"].stats())["requests"] == 0
    assert (await agents["data"].stats())["requests"] == 1
    assert await store.leases().orphans() == []
    await store.close()


async def test_a_live_owners_workflow_is_left_alone(
    api: Any, agents: Agents, redis_url: str, prefix: str
) -> None:
    """While its owner heartbeats, no other replica takes a workflow over."""
    await agents["data"].control(delay_ms=60_000)
    owner = await api(
        store=RedisStateStore.from_url(redis_url, prefix=prefix), replica_id="owner", lease_s=0.3
    )
    other = await api(
        store=RedisStateStore.from_url(redis_url, prefix=prefix), replica_id="other", lease_s=0.3
    )
    accepted = await (
        await owner.post("/api/query", json={"query": QUESTION, "mode": "async"})
    ).json()
    workflow_id = accepted["workflow_id"]

    async def data_in_flight() -> bool:
        return bool((await agents["data"].stats())["in_flight"] == 1)

    await eventually(data_in_flight)
    # Several lease periods pass: the heartbeat keeps the lease, nobody resumes it.
    for _ in range(3):
        taken = await _reconcile(other)
        assert taken == []
    assert (await _status(other, workflow_id))["owner"] == "owner"
    assert (await agents["data"].stats())["requests"] == 1
    await owner.post(f"/api/workflow/{workflow_id}/cancel")


async def test_shutdown_hands_running_workflows_to_another_replica(
    api: Any, agents: Agents, redis_url: str, prefix: str
) -> None:
    """A replica stopped mid-workflow writes nothing more; another resumes and finishes it."""
    await agents["data"].control(delay_ms=60_000)
    leaving = await api(
        store=RedisStateStore.from_url(redis_url, prefix=prefix),
        replica_id="leaving",
        lease_s=0.3,
        shutdown_grace_s=0.05,
    )
    staying = await api(
        store=RedisStateStore.from_url(redis_url, prefix=prefix), replica_id="staying", lease_s=0.3
    )
    accepted = await (
        await leaving.post("/api/query", json={"query": QUESTION, "mode": "async"})
    ).json()
    workflow_id = accepted["workflow_id"]

    async def data_in_flight() -> bool:
        return bool((await agents["data"].stats())["in_flight"] == 1)

    await eventually(data_in_flight)
    await agents["data"].control(delay_ms=0)
    await leaving.close()
    # Not cancelled: still running, or already resumed and finished by "staying" (its
    # 0.3 s lease may lapse before this read on a loaded machine).
    assert (await _status(staying, workflow_id))["status"] in {"running", "completed"}

    async def finished() -> bool:
        return bool((await _status(staying, workflow_id))["status"] == "completed")

    await eventually(finished)
    body = await _status(staying, workflow_id)
    assert body["owner"] == "staying"
    assert (await agents["nlp"].stats())["requests"] == 1  # NLP was not run again


async def _reconcile(client: Any) -> list[str]:
    taken: list[str] = await client.app[SERVICES].orchestrator.reconcile()
    return taken


async def test_a_replica_that_lost_its_lease_stops_and_writes_nothing(
    api: Any, agents: Agents, redis_url: str, prefix: str
) -> None:
    """Presumed dead and taken over, a replica stops the workflow without touching its state."""
    await agents["data"].control(delay_ms=60_000)
    store = RedisStateStore.from_url(redis_url, prefix=prefix)
    paused = await api(
        store=RedisStateStore.from_url(redis_url, prefix=prefix), replica_id="paused", lease_s=0.3
    )
    accepted = await (
        await paused.post("/api/query", json={"query": QUESTION, "mode": "async"})
    ).json()
    workflow_id = accepted["workflow_id"]

    async def data_in_flight() -> bool:
        return bool((await agents["data"].stats())["in_flight"] == 1)

    await eventually(data_in_flight)

    # The agent sees the call before the transition's write (written behind) lands:
    # wait for it, so what the takeover freezes is the document with data running.
    async def data_running_written() -> bool:
        state = await store.get(workflow_id)
        return state is not None and state.steps["data"].status.value == "running"

    await eventually(data_running_written)
    # Another replica took the workflow over and recorded `paused` as dead (what the
    # reaping script records). The claim goes first: `paused` keeps beating meanwhile,
    # and a beat that fell between the death record and the claim would find every
    # token still its own and clear its death, so the claim after it went unnoticed
    # until the next write (the document stays fenced either way; what is tested here
    # is that the heartbeat stops the workflow).
    assert await store.leases().claim(workflow_id, "thief", lease_s=60, previous="paused")
    redis = aioredis.Redis.from_url(redis_url)
    await redis.zrem(keys.replicas_key(prefix), "paused")
    await redis.zadd(keys.dead_replicas_key(prefix), {"paused": time.time() * 1000})
    await redis.aclose()
    orchestrator = paused.app[SERVICES].orchestrator

    async def stopped() -> bool:
        return workflow_id not in orchestrator.running

    await eventually(stopped)
    body = await _status(paused, workflow_id)
    assert body["status"] == "running"  # the cancel was not written over the new owner's state
    assert body["steps"]["data"]["status"] == "running"

    async def agent_saw_abort() -> bool:
        return bool((await agents["data"].stats())["cancelled"] == 1)

    await eventually(agent_saw_abort)
    await store.close()
