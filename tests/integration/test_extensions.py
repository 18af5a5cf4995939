"""Extension at the service level: node kinds and built-in fallbacks given to create_app
are in the published schema, checked like the built-in ones, and run in workflows."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, cast

import jsonschema
import pytest
from aiohttp.test_utils import TestClient

from orchestrator.app import create_app
from orchestrator.dag.kinds import BaseKind, Compiled, NodeContext, ProblemCollector
from orchestrator.dag.model import NodeDef
from orchestrator.dag.templates import Template
from tests.integration.conftest import Agents, ClientFactory, settings_for


class ShoutNode(NodeDef, tag="shout", frozen=True):
    """Says `text` (a template) back in capitals."""

    text: Any


@dataclass(frozen=True, slots=True)
class ShoutParams(Compiled):
    text: Template | None = None


class Shout(BaseKind):
    name = "shout"
    node_type = ShoutNode

    def compile(self, node: NodeDef) -> ShoutParams:
        collect = ProblemCollector(node)
        template = collect.template(cast(ShoutNode, node).text, "text")
        collect.raise_if_any()
        assert template is not None
        return ShoutParams(references=template.references, text=template)

    async def run(self, node: NodeDef, ctx: NodeContext) -> Any:
        params = cast(ShoutParams, ctx.compiled)
        assert params.text is not None
        return {"value": str(ctx.render(params.text)).upper()}


async def canned_answer(node_input: Mapping[str, Any]) -> Any:
    """A built-in fallback: a fixed answer that says what the failed node was given."""
    return {"rows": [], "canned": True, "for": dict(node_input)}


WORKFLOW: dict[str, Any] = {
    "name": "extended",
    "nodes": [
        {"id": "loud", "kind": "shout", "text": "{{ inputs.query }}"},
        {
            "id": "rows",
            "kind": "agent",
            "agent": "data",
            "depends_on": ["loud"],
            # Not an intent the Data agent can use: it answers 4xx, never retried.
            "input": {"intent": {"metric": "{{ loud.value }}"}},
            "fallback": {"builtin": "canned"},
        },
    ],
    "output": {"loud": "{{ loud.value }}", "rows": "{{ rows }}"},
}


@pytest.fixture
async def extended(agents: Agents, aiohttp_client: ClientFactory) -> TestClient[Any, Any]:
    app = create_app(settings_for(agents), kinds=[Shout()], builtins={"canned": canned_answer})
    return await aiohttp_client(app)


async def test_the_schema_endpoint_lists_the_extra_kind_and_built_in(
    extended: TestClient[Any, Any],
) -> None:
    schema = await (await extended.get("/api/workflows/schema")).json()
    jsonschema.Draft202012Validator.check_schema(schema)
    items = schema["properties"]["nodes"]["items"]
    assert items["discriminator"]["mapping"]["shout"] == "#/$defs/ShoutNode"
    shout = schema["$defs"]["ShoutNode"]
    assert shout["required"] == ["kind", "text", "id"]
    assert shout["description"] == "Says `text` (a template) back in capitals."
    builtin = schema["$defs"]["Fallback"]["properties"]["builtin"]
    assert builtin["enum"] == ["canned", "keyword_intent"]
    jsonschema.Draft202012Validator(schema).validate(WORKFLOW)


async def test_the_extra_kind_runs_and_the_extra_built_in_stands_in_for_a_failed_node(
    extended: TestClient[Any, Any],
) -> None:
    response = await extended.post("/api/query", json={"workflow": WORKFLOW, "query": "hi"})
    assert response.status == 200, await response.text()
    body = await response.json()
    assert body["status"] == "degraded"
    assert body["steps"]["loud"]["output"] == {"value": "HI"}
    assert body["steps"]["rows"]["fallback"]
    assert body["result"] == {
        "loud": "HI",
        "rows": {"rows": [], "canned": True, "for": {"intent": {"metric": "HI"}}},
    }


async def test_the_extra_kind_is_checked_like_the_built_in_ones(
    extended: TestClient[Any, Any],
) -> None:
    bad = {"nodes": [{"id": "loud", "kind": "shout", "txt": "x"}]}
    response = await extended.post("/api/workflows/validate", json={"workflow": bad})
    assert response.status == 422
    problems = (await response.json())["error"]["details"]["problems"]
    found = {(p["code"], p["node_id"], p["path"]) for p in problems}
    assert found == {
        ("unknown_field", "loud", "nodes/0"),
        ("missing_field", "loud", "nodes/0"),
    }


async def test_without_them_the_kind_and_the_built_in_are_unknown(
    agents: Agents, aiohttp_client: ClientFactory
) -> None:
    client = await aiohttp_client(create_app(settings_for(agents)))
    schema = await (await client.get("/api/workflows/schema")).json()
    assert "ShoutNode" not in schema["$defs"]
    assert schema["$defs"]["Fallback"]["properties"]["builtin"]["enum"] == ["keyword_intent"]
    response = await client.post("/api/workflows/validate", json={"workflow": WORKFLOW})
    assert response.status == 422
    problems = (await response.json())["error"]["details"]["problems"]
    assert {(p["code"], p["node_id"]) for p in problems} == {
        ("unknown_kind", "loud"),
        ("unknown_builtin", "rows"),
    }


def test_a_kind_whose_name_is_taken_is_refused_when_the_app_is_built(agents: Agents) -> None:
    class Agent(Shout):
        name = "agent"

    with pytest.raises(ValueError, match="already registered"):
        create_app(settings_for(agents), kinds=[Agent()])


async def test_the_served_openapi_document_embeds_this_services_definition(
    extended: TestClient[Any, Any],
) -> None:
    """The request bodies' WorkflowDefinition component is the generated schema, the
    extra kind included, and every reference in the document resolves."""
    doc = await (await extended.get("/api/openapi.json")).json()
    components = doc["components"]["schemas"]
    root = components["WorkflowDefinition"]
    assert root["required"] == ["nodes"] and root["additionalProperties"] is False
    mapping = root["properties"]["nodes"]["items"]["discriminator"]["mapping"]
    assert mapping["shout"] == "#/components/schemas/WorkflowDefinition.ShoutNode"
    refs = set(_refs(doc)) | set(mapping.values())
    for target in refs:
        assert target.removeprefix("#/components/schemas/") in components, target
    for schema in components.values():
        jsonschema.Draft202012Validator.check_schema(schema)


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)
