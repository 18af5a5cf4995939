"""User-defined DAGs through the API: run, validate/plan, cancel mid-DAG, refusals."""

from __future__ import annotations

from typing import Any

from orchestrator.api.services import SERVICES
from tests.integration.conftest import Agents, eventually

REGIONAL_REPORT: dict[str, Any] = {
    "name": "regional-report",
    "inputs": {"query": "revenue by region"},
    "options": {"max_parallel": 10, "timeout_s": 60, "on_failure": "stop"},
    "nodes": [
        {"id": "nlp", "kind": "agent", "agent": "nlp", "input": {"query": "{{ inputs.query }}"}},
        {
            "id": "data",
            "kind": "agent",
            "agent": "data",
            "depends_on": ["nlp"],
            "input": {"intent": "{{ nlp.intent }}"},
            "retry": {"max_attempts": 2},
            "timeout_s": 30,
        },
        {"id": "big", "kind": "condition", "depends_on": ["data"], "expr": "len(data.rows) > 2"},
        {
            "id": "viz",
            "kind": "agent",
            "agent": "viz",
            "depends_on": ["nlp", "data", "big"],
            "when": "big.value",
            "input": {
                "intent": "{{ nlp.intent }}",
                "columns": "{{ data.columns }}",
                "rows": "{{ data.rows }}",
            },
            "on_failure": "continue",
            "fallback": {"value": {"spec": None}},
        },
        {"id": "count", "kind": "transform", "depends_on": ["data"], "select": "row_count"},
    ],
    "output": {"rows": "{{ data.rows }}", "chart": "{{ viz.spec }}", "n": "{{ count.value }}"},
}


async def test_user_dag_runs_with_query_as_input(api: Any) -> None:
    """A posted workflow runs through the real agents; `query` overrides inputs.query."""
    client = await api()
    response = await client.post(
        "/api/query", json={"workflow": REGIONAL_REPORT, "query": "total profit by category"}
    )
    assert response.status == 200, await response.text()
    body = await response.json()
    assert body["status"] == "completed"
    assert body["definition_name"] == "regional-report"
    assert body["inputs"]["query"] == "total profit by category"
    result = body["result"]
    assert result["n"] == len(result["rows"]) > 2
    assert {"category", "sum_profit"} <= set(result["rows"][0])
    assert result["chart"]["$schema"].startswith("https://vega.github.io/schema/vega-lite/v5")
    assert body["steps"]["big"]["output"] == {"value": True}
    assert set(body["steps"]) == {"nlp", "data", "big", "viz", "count"}


async def test_false_condition_skips_the_branch(api: Any) -> None:
    """With the condition false, viz is skipped and the output's chart is null."""
    client = await api()
    workflow = {**REGIONAL_REPORT, "nodes": [dict(n) for n in REGIONAL_REPORT["nodes"]]}
    workflow["nodes"][2] = {**workflow["nodes"][2], "expr": "len(data.rows) > 1000"}
    body = await (
        await client.post("/api/query", json={"workflow": workflow, "query": "revenue by region"})
    ).json()
    assert body["status"] == "completed"
    assert body["steps"]["viz"]["status"] == "skipped"
    assert body["result"]["chart"] is None


async def test_async_dag_cancel_stops_every_running_node(api: Any, agents: Agents) -> None:
    """Cancelling a DAG aborts its in-flight calls on parallel branches and starts nothing new."""
    await agents["data"].control(delay_ms=60_000)
    await agents["viz"].control(delay_ms=60_000)
    workflow = {
        "name": "fan-out",
        "nodes": [
            {"id": "d", "kind": "agent", "agent": "data", "input": {"intent": _INTENT}},
            {"id": "v", "kind": "agent", "agent": "viz", "input": _VIZ_INPUT},
            {
                "id": "after",
                "kind": "agent",
                "agent": "nlp",
                "depends_on": ["d", "v"],
                "input": {"query": "revenue"},
            },
        ],
    }
    client = await api()
    response = await client.post("/api/query", json={"workflow": workflow, "mode": "async"})
    assert response.status == 202, await response.text()
    accepted = await response.json()
    workflow_id = accepted["workflow_id"]

    async def both_in_flight() -> bool:
        data = await agents["data"].stats()
        viz = await agents["viz"].stats()
        return bool(data["in_flight"] == 1 and viz["in_flight"] == 1)

    await eventually(both_in_flight)
    running = await (await client.get(f"/api/workflow/{workflow_id}/status")).json()
    assert running["status"] == "running"
    assert {running["steps"]["d"]["status"], running["steps"]["v"]["status"]} == {"running"}

    body = await (await client.post(f"/api/workflow/{workflow_id}/cancel")).json()
    assert body["status"] == "cancelled"
    assert body["steps"]["d"]["status"] == "cancelled"
    assert body["steps"]["v"]["status"] == "cancelled"
    assert body["steps"]["after"]["started_at"] is None

    async def both_aborted() -> bool:
        data = await agents["data"].stats()
        viz = await agents["viz"].stats()
        return bool(data["cancelled"] == 1 and viz["cancelled"] == 1)

    await eventually(both_aborted)
    assert (await agents["nlp"].stats())["requests"] == 0


_INTENT: dict[str, Any] = {
    "query": "revenue",
    "metric": "revenue",
    "aggregation": "sum",
    "group_by": [],
    "filters": [],
    "order": None,
    "limit": None,
    "chart_hint": None,
}
_VIZ_INPUT = {"intent": _INTENT, "columns": ["sum_revenue"], "rows": [{"sum_revenue": 1.0}]}


async def test_validate_returns_the_plan(api: Any) -> None:
    """/api/workflows/validate answers the levels, dependencies, critical path and parallelism."""
    client = await api()
    response = await client.post("/api/workflows/validate", json={"workflow": REGIONAL_REPORT})
    assert response.status == 200, await response.text()
    plan = (await response.json())["plan"]
    assert plan["levels"][0] == ["nlp"]
    assert plan["levels"][1] == ["data"]
    assert sorted(plan["levels"][2]) == ["big", "count"]
    assert plan["levels"][3] == ["viz"]
    assert plan["dependencies"]["viz"] == ["nlp", "data", "big"]
    assert plan["critical_path"] == ["nlp", "data", "big", "viz"]
    assert plan["max_parallelism"] == 2


async def test_validate_reports_every_problem_at_once(api: Any) -> None:
    """Duplicate ids, unknown deps/agents/kinds and a cycle are all reported with node ids."""
    client = await api()
    workflow = {
        "name": "broken",
        "nodes": [
            {"id": "a", "kind": "agent", "agent": "nlp", "depends_on": ["c"], "input": {}},
            {"id": "a", "kind": "agent", "agent": "nlp", "input": {}},
            {"id": "b", "kind": "agent", "agent": "nope", "depends_on": ["ghost"], "input": {}},
            {"id": "c", "kind": "agent", "agent": "nlp", "depends_on": ["d"], "input": {}},
            {"id": "d", "kind": "agent", "agent": "nlp", "depends_on": ["c"], "input": {}},
        ],
    }
    response = await client.post("/api/workflows/validate", json={"workflow": workflow})
    assert response.status == 422
    error = (await response.json())["error"]
    assert error["code"] == "invalid_workflow"
    problems = error["details"]["problems"]
    by_node = {(p["code"], p["node_id"]) for p in problems}
    codes = {p["code"] for p in problems}
    assert len(codes) >= 4, problems
    assert any(node == "a" for _, node in by_node)
    assert any(node == "b" for _, node in by_node)
    assert any("ghost" in p["message"] for p in problems)
    assert any("nope" in p["message"] for p in problems)
    assert any(
        "c" in p["message"] and "d" in p["message"] and "cycle" in p["message"] for p in problems
    )


async def test_validate_refuses_sandbox_escapes_and_unknown_fields(api: Any) -> None:
    client = await api()
    workflow = {
        "name": "evil",
        "nodes": [
            {"id": "x", "kind": "condition", "expr": "().__class__.__bases__[0].__subclasses__()"},
        ],
    }
    response = await client.post("/api/workflows/validate", json={"workflow": workflow})
    assert response.status == 422
    assert "__class__" in (await response.text())
    workflow = {"name": "typo", "nodes": [{"id": "x", "kind": "condition", "expr": "1", "whn": 1}]}
    response = await client.post("/api/workflows/validate", json={"workflow": workflow})
    assert response.status == 422
    assert "whn" in (await response.text())
    response = await client.post("/api/workflows/validate", json={"definition": {}})
    assert response.status == 400


async def test_edges_form_is_accepted(api: Any) -> None:
    """The nodes-and-edges form of visual editors is normalised to depends_on."""
    client = await api()
    workflow = {
        "name": "edges",
        "nodes": [
            {"id": "nlp", "kind": "agent", "agent": "nlp", "input": {"query": "revenue by region"}},
            {
                "id": "data",
                "kind": "agent",
                "agent": "data",
                "input": {"intent": "{{ nlp.intent }}"},
            },
        ],
        "edges": [{"source": "nlp", "target": "data"}],
    }
    response = await client.post("/api/workflows/validate", json={"workflow": workflow})
    assert response.status == 200, await response.text()
    assert (await response.json())["plan"]["dependencies"]["data"] == ["nlp"]
    run = await (await client.post("/api/query", json={"workflow": workflow})).json()
    assert run["status"] == "completed"
    assert run["steps"]["data"]["output"]["rows"]


async def test_schema_is_published(api: Any) -> None:
    client = await api()
    schema = await (await client.get("/api/workflows/schema")).json()
    assert schema["$schema"].startswith("https://json-schema.org/draft/2020-12")
    assert schema["additionalProperties"] is False


async def test_the_same_posted_workflow_is_compiled_once(api: Any) -> None:
    """Two runs of one definition: the second reuses the compiled workflow (content hash)."""
    client = await api()
    compiled = client.app[SERVICES].compiled
    for query in ("total profit by category", "revenue by region"):
        response = await client.post(
            "/api/query", json={"workflow": REGIONAL_REPORT, "query": query}
        )
        assert response.status == 200, await response.text()
        assert (await response.json())["status"] == "completed"
    assert (compiled.misses, compiled.hits) == (1, 1)
