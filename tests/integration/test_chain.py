"""The NLP -> Data -> Viz chain end to end: real agents on 127.0.0.1, the API in-process."""

from __future__ import annotations

from typing import Any

from tests.integration.conftest import Agents, eventually

QUESTION = "average revenue by region in 2024"


async def test_happy_path_returns_intent_data_chart_and_steps(api: Any) -> None:
    """A plain query answers with intent, rows, a Vega-Lite spec and each step's details."""
    client = await api()
    response = await client.post("/api/query", json={"query": QUESTION})
    assert response.status == 200
    body = await response.json()
    assert body["status"] == "completed"
    assert body["workflow_id"]
    assert body["intent"]["metric"] == "revenue"
    assert body["intent"]["aggregation"] == "avg"
    assert "region" in body["intent"]["group_by"]
    assert "region" in body["data"]["columns"]
    regions = {row["region"] for row in body["data"]["rows"]}
    assert len(regions) == len(body["data"]["rows"]) > 1
    assert body["chart"]["$schema"].startswith("https://vega.github.io/schema/vega-lite/v5")
    assert body["fallbacks"] == []
    for step_id in ("nlp", "data", "viz"):
        step = body["steps"][step_id]
        assert step["status"] == "completed"
        assert step["attempts"] == 1
        assert step["duration_ms"] >= 0


async def test_nlp_down_falls_back_to_keyword_parser(api: Any, agents: Agents) -> None:
    """With NLP failing, the keyword parser supplies the intent; the answer is degraded."""
    await agents["nlp"].control(fail_rate=1.0)
    client = await api()
    response = await client.post("/api/query", json={"query": QUESTION})
    assert response.status == 200
    body = await response.json()
    assert body["status"] == "degraded"
    assert [f["step_id"] for f in body["fallbacks"]] == ["nlp"]
    assert "nlp" in body["fallbacks"][0]["reason"]
    assert body["steps"]["nlp"]["fallback"]
    assert body["intent"]["metric"] == "revenue"
    assert body["intent"]["group_by"] == ["region"]
    assert body["data"]["rows"]
    assert body["chart"] is not None


async def test_nlp_breaker_open_still_answers_through_fallback(api: Any, agents: Agents) -> None:
    """Once the NLP breaker is open, queries fall back at once with no request to the agent."""
    await agents["nlp"].control(fail_rate=1.0)
    client = await api()
    for _ in range(2):  # fail_max=3 failures, two attempts each: the breaker opens
        await client.post("/api/query", json={"query": QUESTION})
    breakers = await (await client.get("/api/circuit-breakers/status")).json()
    assert breakers["breakers"]["nlp"]["state"] == "open"
    seen = (await agents["nlp"].stats())["requests"]
    body = await (await client.post("/api/query", json={"query": QUESTION})).json()
    assert body["status"] == "degraded"
    assert (
        "open" in body["fallbacks"][0]["reason"] or "unavailable" in body["fallbacks"][0]["reason"]
    )
    assert (await agents["nlp"].stats())["requests"] == seen


async def test_viz_failure_keeps_data_without_chart(api: Any, agents: Agents) -> None:
    """A failing Viz agent leaves the data in the answer, no chart, status degraded."""
    await agents["viz"].control(fail_rate=1.0)
    client = await api()
    response = await client.post("/api/query", json={"query": QUESTION})
    assert response.status == 200
    body = await response.json()
    assert body["status"] == "degraded"
    assert body["data"]["rows"]
    assert body["chart"] is None
    assert body["steps"]["viz"]["status"] == "failed"
    assert body["steps"]["viz"]["error"]["agent"] == "viz"
    assert body["steps"]["viz"]["attempts"] == 2


async def test_data_failure_fails_the_workflow_naming_agent_and_cause(
    api: Any, agents: Agents
) -> None:
    """A failing Data agent fails the workflow with an error naming the agent; Viz never runs."""
    await agents["data"].control(fail_rate=1.0, fail_status=503)
    client = await api()
    response = await client.post("/api/query", json={"query": QUESTION})
    assert response.status == 502
    body = await response.json()
    assert body["status"] == "failed"
    assert body["error"]["agent"] == "data"
    assert body["error"]["step_id"] == "data"
    assert "503" in body["error"]["message"]
    assert body["steps"]["viz"]["status"] in ("pending", "skipped", "cancelled")
    assert (await agents["viz"].stats())["requests"] == 0


async def test_async_mode_answers_202_then_status_reaches_completed(api: Any) -> None:
    """mode=async answers 202 with the id; the status endpoint later shows the finished workflow."""
    client = await api()
    response = await client.post("/api/query", json={"query": QUESTION, "mode": "async"})
    assert response.status == 202
    accepted = await response.json()
    workflow_id = accepted["workflow_id"]
    assert response.headers["Location"] == f"/api/workflow/{workflow_id}/status"

    async def finished() -> bool:
        body = await (await client.get(f"/api/workflow/{workflow_id}/status")).json()
        return bool(body["status"] == "completed")

    await eventually(finished)
    body = await (await client.get(f"/api/workflow/{workflow_id}/status")).json()
    assert body["result"]["chart"] is not None
    assert all(s["status"] == "completed" for s in body["steps"].values())


async def test_metrics_and_breakers_report_what_happened(api: Any, agents: Agents) -> None:
    """Metrics count workflows, success rate, per-step durations, retries; breakers show counts."""
    await agents["viz"].control(fail_rate=1.0)
    client = await api()
    await client.post("/api/query", json={"query": QUESTION})
    metrics = await (await client.get("/api/workflow/metrics")).json()
    assert metrics["workflows"]["finished"] == 1
    assert metrics["workflows"]["by_status"]["degraded"] == 1
    assert metrics["workflows"]["success_rate"] == 1.0
    assert metrics["steps"]["chain.data"]["count"] == 1
    assert metrics["steps"]["chain.data"]["p95_ms"] is not None
    assert metrics["agents"]["viz"]["retries"] == 1
    assert metrics["retries_total"] == 1
    breakers = (await (await client.get("/api/circuit-breakers/status")).json())["breakers"]
    assert set(breakers) == {"nlp", "data", "viz"}
    viz = breakers["viz"]
    assert viz["failures"] == 2
    assert viz["fail_max"] == 3
    assert viz["state"] == "closed"
    assert viz["url"] == agents["viz"].url


async def test_ops_can_force_open_and_reset_a_breaker(api: Any, agents: Agents) -> None:
    """Force-opening the data breaker fails queries fast without calling it; reset restores them."""
    client = await api()
    opened = await (await client.post("/api/circuit-breakers/data/open")).json()
    assert opened["state"] == "open"
    response = await client.post("/api/query", json={"query": QUESTION})
    assert response.status == 502
    assert (await response.json())["error"]["code"] == "agent_unavailable"
    assert (await agents["data"].stats())["requests"] == 0
    reset = await (await client.post("/api/circuit-breakers/data/reset")).json()
    assert reset["state"] == "closed"
    assert (await client.post("/api/query", json={"query": QUESTION})).status == 200
    missing = await client.post("/api/circuit-breakers/nope/open")
    assert missing.status == 404
