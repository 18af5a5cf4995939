"""The ops page, the workflow lists it reads and the plan pictures."""

from __future__ import annotations

import re
import time
import xml.etree.ElementTree as ET
from typing import Any

from orchestrator.dag.plan import Plan
from orchestrator.dag.svg import plan_svg
from tests.integration.conftest import Agents, eventually
from tests.integration.gate import GatedAgent

QUESTION = "average revenue by region in 2024"
SVG = "{http://www.w3.org/2000/svg}"

DIAMOND = {
    "name": "diamond",
    "nodes": [
        {"id": "a", "kind": "agent", "agent": "nlp", "input": {"query": "{{ inputs.query }}"}},
        {"id": "b", "kind": "condition", "depends_on": ["a"], "expr": "1 > 0"},
        {"id": "c", "kind": "condition", "depends_on": ["a"], "expr": "1 < 0"},
        {"id": "d", "kind": "aggregate", "depends_on": ["b", "c"], "op": "merge"},
    ],
}


def nodes_of(svg: str) -> dict[str, str]:
    """{node id: its class} of every node group in the picture."""
    root = ET.fromstring(svg)
    return {
        g.attrib["data-node"]: g.attrib["class"]
        for g in root.iter(f"{SVG}g")
        if "data-node" in g.attrib
    }


async def test_the_ops_page_is_one_self_contained_document(api: Any) -> None:
    """HTML with its CSS and JS inline: no external script, style, font or image."""
    client = await api()
    response = await client.get("/ops")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/html")
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    html = await response.text()
    assert "<script>" in html and "<style>" in html
    assert not re.search(r"""(src|href)\s*=\s*["'](?!data:)""", html)
    assert "http://" not in html and "https://" not in html
    for endpoint in ("/api/circuit-breakers/status", "/api/ops/workflows", "/events"):
        assert endpoint in html


async def test_a_submitted_definition_comes_back_as_a_picture(api: Any) -> None:
    """POST /api/workflows/plan.svg: a box per node, an edge per dependency."""
    client = await api()
    response = await client.post("/api/workflows/plan.svg", json={"workflow": DIAMOND})
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"].startswith("image/svg+xml")
    svg = await response.text()
    assert nodes_of(svg) == dict.fromkeys("abcd", "node st-pending")
    assert len(ET.fromstring(svg).findall(f"{SVG}path")) == 4
    bad = await client.post("/api/workflows/plan.svg", json={"workflow": {"nodes": []}})
    assert bad.status == 422
    assert (await bad.json())["error"]["code"] == "invalid_workflow"


async def test_a_workflow_picture_is_coloured_by_its_steps(api: Any, agents: Agents) -> None:
    """GET /api/workflow/{id}/plan.svg: the chain's nodes as the document says they ended."""
    await agents["nlp"].control(fail_rate=1.0)
    await agents["viz"].control(fail_rate=1.0)
    client = await api()
    body = await (await client.post("/api/query", json={"query": QUESTION})).json()
    response = await client.get(f"/api/workflow/{body['workflow_id']}/plan.svg")
    assert response.status == 200
    assert nodes_of(await response.text()) == {
        "nlp": "node st-fell_back",
        "data": "node st-completed",
        "viz": "node st-failed",
    }
    missing = await client.get("/api/workflow/nope/plan.svg")
    assert missing.status == 404


async def test_ops_workflows_lists_running_then_recent(
    api: Any, agents: Agents, data_gate: GatedAgent
) -> None:
    """A running workflow is listed under running; once finished, under recent with its duration."""
    client = await api(agents={**agents, "data": data_gate})
    accepted = await (
        await client.post("/api/query", json={"query": QUESTION, "mode": "async"})
    ).json()
    await data_gate.arrived.wait()  # running, held at data
    held_from = time.monotonic()
    listing = await (await client.get("/api/ops/workflows")).json()
    assert [w["workflow_id"] for w in listing["running"]] == [accepted["workflow_id"]]
    assert listing["running"][0]["duration_ms"] is None
    held_ms = (time.monotonic() - held_from) * 1000
    data_gate.opened.set()

    async def finished() -> bool:
        now = await (await client.get("/api/ops/workflows")).json()
        return bool(now["recent"]) and not now["running"]

    await eventually(finished)
    listing = await (await client.get("/api/ops/workflows")).json()
    (recent,) = listing["recent"]
    assert recent["status"] == "completed"
    assert recent["duration_ms"] >= held_ms  # it ran at least as long as it was held


def test_node_ids_are_escaped_in_the_picture() -> None:
    """Ids with markup characters stay text: the document still parses, the id is intact."""
    nasty = 'x"<&>\'y'
    plan = Plan(
        levels=[["a"], [nasty]],
        dependencies={"a": [], nasty: ["a"]},
        critical_path=["a", nasty],
        max_parallelism=1,
        critical_path_length=2,
        critical_path_unit="nodes",
        triggers={nasty: "all_success"},
    )
    svg = plan_svg(plan, statuses={nasty: "running", "a": "<bogus>"}, title="<t>")
    assert nodes_of(svg) == {"a": "node st-pending", nasty: "node st-running"}
