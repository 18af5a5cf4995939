"""What the routes serve is what the OpenAPI document says: every JSON body, typed.

Each JSON route is called in-process and its body checked twice: against the served
document's schema for that route and status (JSON Schema 2020-12), and by decoding it
strictly into the body type the route table names (api/replies.py).
"""

from __future__ import annotations

from typing import Any

import msgspec
from jsonschema import Draft202012Validator

from circuit.board import MemoryBreakerBoard
from orchestrator.api import replies
from orchestrator.api.bodies import Error
from orchestrator.api.catalog import ENDPOINTS, endpoint
from orchestrator.api.openapi import openapi_document
from orchestrator.api.services import SERVICES
from orchestrator.app import create_app
from tests.integration.conftest import Agents, ClientFactory, settings_for
from tests.integration.test_extensions import WORKFLOW as EXTENDED
from tests.integration.test_extensions import Shout, canned_answer
from tests.integration.test_workflows_api import REGIONAL_REPORT

QUESTION = "What were the top 5 products by revenue last quarter?"


def _check(doc: dict[str, Any], method: str, path: str, status: int, raw: bytes) -> Any:
    entry = endpoint(method, path)
    assert entry is not None, (method, path)
    response = doc["paths"][path][method.lower()]["responses"][str(status)]
    schema = response["content"]["application/json"]["schema"]
    body = msgspec.json.decode(raw)
    # The document's $refs point into its own components.
    Draft202012Validator({**schema, "components": doc["components"]}).validate(body)
    model = entry.replies[status].schema if status in entry.replies else Error
    assert isinstance(model, type) and issubclass(model, msgspec.Struct), (path, status)
    return msgspec.json.decode(raw, type=model, strict=True)


async def test_every_json_route_serves_its_documented_body(api: Any) -> None:
    client = await api()
    doc = (await (await client.get("/api/openapi.json")).json())

    async def call(method: str, path: str, route: str | None = None, **kw: Any) -> Any:
        response = await client.request(method, path, **kw)
        return _check(doc, method, route or path, response.status, await response.read())

    done = await call("POST", "/api/query", json={"query": QUESTION})
    assert isinstance(done, replies.Workflow) and done.status == "completed"
    assert done.intent is not msgspec.UNSET and done.chart is not msgspec.UNSET  # the chain's
    wid = done.workflow_id
    status_route = "/api/workflow/{workflow_id}/status"
    status = await call("GET", f"/api/workflow/{wid}/status", status_route)
    assert isinstance(status, replies.Workflow)
    assert (status.workflow_id, status.status) == (wid, "completed")

    dag = await call("POST", "/api/query", json={"workflow": REGIONAL_REPORT, "mode": "async"})
    assert isinstance(dag, replies.Accepted)
    cancel_route = "/api/workflow/{workflow_id}/cancel"
    refused = await call("POST", f"/api/workflow/{wid}/cancel", cancel_route)
    assert isinstance(refused, Error) and refused.error.code == "workflow_finished"
    bad = await call("POST", "/api/query", json={"query": 3})
    assert isinstance(bad, Error) and bad.error.details["field"] == "query"

    page = await call("GET", "/api/workflows")
    assert isinstance(page, replies.History) and wid in {w.workflow_id for w in page.workflows}
    metrics = await call("GET", "/api/workflow/metrics")
    assert isinstance(metrics, replies.Metrics) and metrics.workflows.started >= 1
    board = await call("GET", "/api/circuit-breakers/status")
    assert isinstance(board, replies.Breakers) and set(board.breakers) == {"nlp", "data", "viz"}
    nlp = board.breakers["nlp"]
    assert nlp.url is not msgspec.UNSET and nlp.overall is not msgspec.UNSET
    action = "/api/circuit-breakers/{agent}/open"
    opened = await call("POST", "/api/circuit-breakers/viz/open", action)
    assert isinstance(opened, replies.Breaker) and opened.forced == "open"
    await call("POST", "/api/circuit-breakers/viz/reset", "/api/circuit-breakers/{agent}/reset")

    valid = await call("POST", "/api/workflows/validate", json={"workflow": REGIONAL_REPORT})
    assert isinstance(valid, replies.Validated) and valid.plan.levels[0] == ["nlp"]
    created = await call("POST", "/api/schedules", json={"cron": "@hourly", "query": QUESTION})
    assert isinstance(created, replies.Schedule) and created.runs == []
    listed = await call("GET", "/api/schedules")
    assert isinstance(listed, replies.Schedules)
    assert [s.runs for s in listed.schedules] == [msgspec.UNSET]  # the list leaves runs out
    ops = await call("GET", "/api/ops/workflows")
    assert isinstance(ops, replies.OpsWorkflows)
    assert isinstance(await call("GET", "/healthz"), replies.Health)
    assert isinstance(await call("GET", "/readyz"), replies.Ready)
    await client.app[SERVICES].orchestrator.wait(dag.workflow_id)


def test_every_json_body_is_a_typed_model() -> None:
    """No body is described by hand: each JSON body in the route table is a Struct, except
    the two documents that are schemas themselves (OpenAPI, the definition schema)."""
    self_describing = {("GET", "/api/openapi.json"), ("GET", "/api/workflows/schema")}
    for entry in ENDPOINTS:
        if entry.body is not None:
            assert issubclass(entry.body, msgspec.Struct), entry.path
        for reply in entry.replies.values():
            if reply.media_type == "application/json" and reply.schema is not None:
                typed = isinstance(reply.schema, type) and issubclass(reply.schema, msgspec.Struct)
                assert typed or (entry.method, entry.path) in self_describing, entry.path
    components = openapi_document()["components"]["schemas"]
    _, generated = msgspec.json.schema_components(
        [replies.Workflow, Error], ref_template="#/components/schemas/{name}"
    )
    for name, schema in generated.items():
        assert components[name] == schema, name


async def test_a_replica_publishing_fewer_breaker_fields_still_shows(api: Any) -> None:
    """Another version's replica (a rolling upgrade) reports only some fields: the status
    answer shows it, with defaults for the rest, instead of failing."""
    board = MemoryBreakerBoard()
    client = await api(breaker_board=board)
    await board.publish("older", {"nlp": {"state": "open", "calls": 7}})
    response = await client.get("/api/circuit-breakers/status")
    doc = openapi_document()
    raw = await response.read()
    view = _check(doc, "GET", "/api/circuit-breakers/status", response.status, raw)
    older = view.breakers["nlp"].replicas["older"]
    assert (older.state, older.calls, older.trips, older.window) == ("open", 7, 0, None)


async def test_the_document_describes_the_service_s_own_node_kinds(
    agents: Agents, aiohttp_client: ClientFactory
) -> None:
    """A kind and a fallback given to create_app are in the document's definition component,
    and a body using them is valid against the document's QueryRequest."""
    app = create_app(settings_for(agents), kinds=[Shout()], builtins={"canned": canned_answer})
    client = await aiohttp_client(app)
    doc = await (await client.get("/api/openapi.json")).json()
    components = doc["components"]["schemas"]
    nodes = components["WorkflowDefinition"]["properties"]["nodes"]["items"]
    shout = "#/components/schemas/WorkflowDefinition.ShoutNode"
    assert nodes["discriminator"]["mapping"]["shout"] == shout
    assert shout.rsplit("/", 1)[1] in components
    fallback = components["WorkflowDefinition.Fallback"]["properties"]["builtin"]
    assert fallback["enum"] == ["canned", "keyword_intent"]
    body = {"workflow": EXTENDED, "query": "hi"}
    validator = Draft202012Validator(
        {"$ref": "#/components/schemas/QueryRequest", "components": doc["components"]}
    )
    validator.validate(body)
    bad = {"workflow": {**EXTENDED, "nodes": [{"id": "x", "kind": "whisper"}]}}
    assert not validator.is_valid(bad)
    plain = await (await (await aiohttp_client(create_app(settings_for(agents)))).get(
        "/api/openapi.json"
    )).json()
    assert "WorkflowDefinition.ShoutNode" not in plain["components"]["schemas"]
