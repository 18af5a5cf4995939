"""GET /metrics: Prometheus text from the app's own registry, with the series operators need."""

from __future__ import annotations

import random
import uuid
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from orchestrator.settings import default_registry
from tests.integration.conftest import Agents, eventually
from tests.integration.gate import GatedAgent

QUESTION = "average revenue by region in 2024"


async def scrape(client: Any) -> dict[str, list[Sample]]:
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    text = await response.text()
    # The official parser: a format error raises here.
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def value(samples: list[Sample], name: str, **labels: str) -> float:
    matching = [
        s.value
        for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert matching, f"no sample {name} {labels}"
    return sum(matching)


async def test_a_chain_run_with_a_failing_agent_shows_in_every_series(
    api: Any, agents: Agents
) -> None:
    """Viz fails every call: workflows, steps, agent calls, retries, breaker, bulkhead, store."""
    await agents["viz"].control(fail_rate=1.0)
    client = await api()
    # Run 1: two failed attempts. Run 2: the third failure trips the breaker (fail_max 3)
    # and its retry is refused. Run 3: refused at once.
    for _ in range(2):
        assert (await client.post("/api/query", json={"query": QUESTION})).status == 200
    third = await client.post("/api/query", json={"query": QUESTION})
    assert (await third.json())["status"] == "degraded"

    m = await scrape(client)

    started = m["orch_workflows_started"]
    assert value(started, "orch_workflows_started_total", definition="chain") == 3
    finished = m["orch_workflows_finished"]
    total = "orch_workflows_finished_total"
    assert value(finished, total, definition="chain", status="degraded") == 3
    duration = m["orch_workflow_duration_seconds"]
    assert value(duration, "orch_workflow_duration_seconds_count", status="degraded") == 3
    steps = m["orch_step_duration_seconds"]
    assert value(steps, "orch_step_duration_seconds_count", step="data", status="completed") == 3
    assert value(steps, "orch_step_duration_seconds_count", step="viz", status="failed") == 3

    calls = m["orch_agent_calls"]
    assert value(calls, "orch_agent_calls_total", agent="data", outcome="success") == 3
    assert value(calls, "orch_agent_calls_total", agent="viz", outcome="agent_http_error") == 1
    assert value(calls, "orch_agent_calls_total", agent="viz", outcome="agent_unavailable") == 2
    assert value(m["orch_agent_attempts"], "orch_agent_attempts_total", agent="viz") == 3
    assert value(m["orch_agent_retries"], "orch_agent_retries_total", agent="viz") >= 1
    assert "orch_agent_retry_budget_refusals" in m

    state = m["orch_circuit_breaker_state"]
    assert value(state, "orch_circuit_breaker_state", agent="viz", state="open") == 1
    assert value(state, "orch_circuit_breaker_state", agent="viz", state="closed") == 0
    assert value(state, "orch_circuit_breaker_state", agent="data", state="closed") == 1
    transitions = m["orch_circuit_breaker_transitions"]
    assert value(
        transitions,
        "orch_circuit_breaker_transitions_total",
        agent="viz",
        from_state="closed",
        to_state="open",
    ) == 1
    rejections = m["orch_circuit_breaker_rejections"]
    assert value(rejections, "orch_circuit_breaker_rejections_total", agent="viz") == 2

    assert value(m["orch_bulkhead_waits"], "orch_bulkhead_waits_total", agent="data") == 0
    assert value(m["orch_agent_in_flight"], "orch_agent_in_flight", agent="data") == 0
    limit = default_registry()["data"].concurrency
    assert value(m["orch_bulkhead_limit"], "orch_bulkhead_limit", agent="data") == limit

    store = m["orch_state_store_operation_seconds"]
    assert value(store, "orch_state_store_operation_seconds_count", operation="save") >= 3
    # (Events go with the document writes, running and terminal: no appends of their own.)
    assert value(store, "orch_state_store_operation_seconds_count", operation="accept") == 3
    assert "orch_state_store_errors" in m


async def test_the_json_metrics_come_from_the_same_numbers(api: Any, agents: Agents) -> None:
    """GET /api/workflow/metrics agrees with /metrics: counts, statuses, per-step counts."""
    await agents["nlp"].control(fail_rate=1.0)
    client = await api()
    for _ in range(2):
        await client.post("/api/query", json={"query": QUESTION})
    summary = await (await client.get("/api/workflow/metrics")).json()
    m = await scrape(client)
    assert summary["workflows"]["started"] == value(
        m["orch_workflows_started"], "orch_workflows_started_total"
    ) == 2
    assert summary["workflows"]["by_status"]["degraded"] == 2
    assert summary["steps"]["chain.nlp"]["count"] == value(
        m["orch_step_duration_seconds"], "orch_step_duration_seconds_count", step="nlp"
    )
    assert summary["fallbacks"] == value(m["orch_step_fallbacks"], "orch_step_fallbacks_total") == 2
    assert summary["workflows"]["duration_ms"]["p95_ms"] is not None


async def test_each_app_has_its_own_registry(api: Any) -> None:
    """Two apps in one process count apart: nothing is registered globally."""
    first, second = await api(), await api()
    await first.post("/api/query", json={"query": QUESTION})
    m1, m2 = await scrape(first), await scrape(second)
    assert value(m1["orch_workflows_started"], "orch_workflows_started_total") == 1
    assert not [s for s in m2["orch_workflows_started"] if s.name.endswith("_total")]


async def test_running_workflows_gauge_follows_the_engine(
    api: Any, agents: Agents, data_gate: GatedAgent
) -> None:
    """orch_workflows_running is what this replica runs now: 1 during a held run, then 0."""
    client = await api(agents={**agents, "data": data_gate})
    await client.post("/api/query", json={"query": QUESTION, "mode": "async"})

    async def running(n: int) -> bool:
        m = await scrape(client)
        return value(m["orch_workflows_running"], "orch_workflows_running") == n

    await data_gate.arrived.wait()
    assert await running(1)
    data_gate.opened.set()
    await eventually(lambda: running(0))


async def test_series_stay_bounded_over_1000_workflows_with_random_names_and_ids(
    api: Any,
) -> None:
    """Through the API and the engine: 1,000 DAGs with client-invented names and node ids
    (and a few reused ones) add no series after the first 200."""
    rng = random.Random(11)
    client = await api(metrics_max_steps=5)

    async def run(n: int) -> None:
        for _ in range(n):
            name = rng.choice(["report", uuid.uuid4().hex])
            node_ids = [f"n{uuid.uuid4().hex[:8]}" for _ in range(rng.randint(1, 3))]
            nodes: list[dict[str, Any]] = [
                {"id": node_ids[0], "kind": "transform", "source": "{{ inputs.x }}"}
            ]
            nodes += [
                {"id": node_id, "kind": "transform", "depends_on": [node_ids[0]], "select": "value"}
                for node_id in node_ids[1:]
            ]
            workflow = {"name": name, "inputs": {"x": [1, 2]}, "nodes": nodes}
            response = await client.post("/api/query", json={"workflow": workflow})
            assert response.status == 200, await response.text()

    def series(metrics: dict[str, list[Sample]]) -> int:
        return sum(len(samples) for samples in metrics.values())

    await run(200)
    after_200 = series(await scrape(client))
    await run(800)
    metrics = await scrape(client)
    assert series(metrics) == after_200
    started = value(metrics["orch_workflows_started"], "orch_workflows_started_total")
    assert started == 1000
