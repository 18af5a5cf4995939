"""Logs you can follow in a running service: context bound once, request ids."""

from __future__ import annotations

import re
from typing import Any

import structlog
from structlog.testing import capture_logs

from orchestrator.logs import merge_node_context
from tests.integration.conftest import Agents
from tests.integration.sse import read_events

QUESTION = "average revenue by region in 2024"


async def test_every_line_in_a_workflow_and_node_carries_its_context(
    api: Any, agents: Agents
) -> None:
    """workflow_id on every workflow line; step, agent, attempt on every node line."""
    await agents["viz"].control(fail_rate=1.0)
    client = await api()
    with capture_logs(
        processors=[structlog.contextvars.merge_contextvars, merge_node_context]
    ) as logs:
        response = await client.post(
            "/api/query", json={"query": QUESTION}, headers={"X-Request-ID": "req-42"}
        )
        body = await response.json()
        # The stream ends with the terminal event, logged after `workflow_finished`.
        await read_events(await client.get(f"/api/workflow/{body['workflow_id']}/events"))
    assert response.headers["X-Request-ID"] == "req-42"
    mine = [e for e in logs if e.get("workflow_id") == body["workflow_id"]]
    wanted = {"agent_retry", "agent_call_failed", "node_failed"}
    node_lines = [e for e in mine if e["event"] in wanted]
    assert {e["event"] for e in node_lines} == wanted
    for entry in node_lines:
        assert entry["node"] == "viz", entry
        assert entry["agent"] == "viz", entry
        assert entry["attempt"] >= 1, entry
    assert any(e["event"] == "workflow_finished" for e in mine)
    # Every line this request caused carries its id, the workflow's included.
    assert all(e.get("request_id") == "req-42" for e in mine)


async def test_request_ids_are_echoed_or_generated(api: Any) -> None:
    """A sane X-Request-ID comes back; a missing or unsafe one is replaced; errors carry it."""
    client = await api()
    echoed = await client.get("/healthz", headers={"X-Request-ID": "abc-123.x:y"})
    assert echoed.headers["X-Request-ID"] == "abc-123.x:y"
    fresh = await client.get("/healthz")
    assert re.fullmatch(r"[0-9a-f]{32}", fresh.headers["X-Request-ID"])
    unsafe = await client.get("/healthz", headers={"X-Request-ID": "a b\u00e9" + "x" * 200})
    assert re.fullmatch(r"[0-9a-f]{32}", unsafe.headers["X-Request-ID"])
    missing = await client.get("/api/workflow/nope/status", headers={"X-Request-ID": "r1"})
    assert missing.status == 404
    assert missing.headers["X-Request-ID"] == "r1"
