"""Sync queries never outlive the caller: past wait_s they answer 202 like async, and
a hanging agent ends its step at the step deadline, retries included."""

from __future__ import annotations

import asyncio
from typing import Any

from orchestrator.api.services import SERVICES
from orchestrator.settings import Settings, default_registry
from tests.integration.conftest import Agents

QUESTION = "total profit by category"


async def test_sync_query_past_wait_s_answers_202_and_the_workflow_completes(
    api: Any, agents: Agents
) -> None:
    """wait_s 0: 202 with the id, links and Location; the workflow goes on to completed."""
    client = await api()
    response = await client.post("/api/query", json={"query": QUESTION, "wait_s": 0})
    assert response.status == 202
    body = await response.json()
    workflow_id = body["workflow_id"]
    assert body["status"] == "running"
    assert response.headers["Location"] == f"/api/workflow/{workflow_id}/status"
    assert body["links"]["status"] == response.headers["Location"]
    assert body["links"]["cancel"] == f"/api/workflow/{workflow_id}/cancel"
    # The handoff did not stop it: wait for it on the replica that runs it.
    await client.app[SERVICES].orchestrator.wait(workflow_id)
    status = await (await client.get(f"/api/workflow/{workflow_id}/status")).json()
    assert status["status"] == "completed"
    assert status["result"]["data"]["rows"]


async def test_default_wait_comes_from_settings(api: Any, agents: Agents) -> None:
    """ORCH_SYNC_WAIT_S is the wait of a sync query that names none."""
    client = await api(sync_wait_s=0.0)
    response = await client.post("/api/query", json={"query": QUESTION})
    assert response.status == 202
    workflow_id = (await response.json())["workflow_id"]
    await client.app[SERVICES].orchestrator.wait(workflow_id)
    # A wait long enough gets the result itself.
    done = await client.post("/api/query", json={"query": QUESTION, "wait_s": 60})
    assert done.status == 200
    assert (await done.json())["status"] == "completed"


async def test_sync_waits_share_one_timer_each_ending_at_its_own_wait_s(
    api: Any, agents: Agents
) -> None:
    """The sync waits' limits live on one shared timer (api/services.py): a short wait
    beside a long one ends at its own wait_s (202), and its end leaves the long one
    waiting for the workflow's end (here the step deadline: a 502 failed)."""
    await agents["data"].control(delay_ms=60_000)
    client = await api(step_timeout_s=0.5)
    answered, short = await asyncio.gather(
        client.post("/api/query", json={"query": QUESTION, "wait_s": 60}),
        client.post("/api/query", json={"query": QUESTION, "wait_s": 0.05}),
    )
    assert short.status == 202
    assert (await short.json())["status"] == "running"
    assert answered.status == 502
    assert (await answered.json())["status"] == "failed"


async def test_bad_wait_s_is_a_400(api: Any) -> None:
    client = await api()
    for bad, code in (
        ("5", "invalid_type"),
        (True, "invalid_type"),
        (-1, "invalid_wait"),
        (10_000, "invalid_wait"),
    ):
        response = await client.post("/api/query", json={"query": QUESTION, "wait_s": bad})
        assert response.status == 400, bad
        assert (await response.json())["error"]["code"] == code


async def test_hanging_agent_ends_its_step_at_the_step_deadline(api: Any, agents: Agents) -> None:
    """The Data agent hangs far past its read timeout: the step deadline fails it, retries
    included, and the sync query answers with the failed workflow (not a hung request)."""
    await agents["data"].control(delay_ms=60_000)
    client = await api(step_timeout_s=0.3)
    response = await client.post("/api/query", json={"query": QUESTION, "wait_s": 60})
    assert response.status == 502
    body = await response.json()
    assert body["status"] == "failed"
    assert body["steps"]["data"]["status"] == "failed"
    # The client ends the call at the step deadline itself, counting its attempts.
    assert body["steps"]["data"]["error"]["type"] == "agent_timeout"
    assert body["steps"]["data"]["attempts"] >= 1
    # The NLP step was not affected by the Data agent's hang.
    assert body["steps"]["nlp"]["status"] == "completed"


def test_default_timeouts_fit_inside_the_default_wait() -> None:
    """Per-attempt read timeouts leave room for a retry inside the step deadline, and the
    step deadline ends well before a sync query's default wait."""
    settings = Settings.from_env({})
    assert settings.step_timeout_s <= 0.75 * settings.sync_wait_s
    for spec in default_registry().values():
        assert 2 * spec.timeouts.read <= settings.step_timeout_s
        assert spec.timeouts.connect < settings.step_timeout_s
