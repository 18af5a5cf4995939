"""Every kind of bad input gets a JSON error with a 4xx status, never a 500 or a traceback."""

from __future__ import annotations

from typing import Any

import pytest


async def _error(response: Any, status: int) -> dict[str, Any]:
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    body = await response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert "Traceback" not in body["error"]["message"]
    return dict(body["error"])


@pytest.mark.parametrize(
    ("payload", "status", "code"),
    [
        (b"{not json", 400, "malformed_json"),
        (b"", 400, "empty_body"),
        (b"[1, 2]", 400, "invalid_body"),
        (b'"a string"', 400, "invalid_body"),
        (b"{}", 400, "missing_field"),
        (b'{"query": null}', 400, "missing_field"),
        (b'{"query": 42}', 400, "invalid_type"),
        (b'{"query": ["a"]}', 400, "invalid_type"),
        (b'{"query": ""}', 400, "empty_query"),
        (b'{"query": "   "}', 400, "empty_query"),
        (b'{"query": "x", "mode": "later"}', 400, "invalid_mode"),
        (b'{"query": "x", "mode": 1}', 400, "invalid_type"),
        (b'{"query": "x", "mdoe": "async"}', 400, "unknown_field"),
        (b'{"query": "x", "workflow": 3}', 400, "invalid_type"),
        (b'{"workflow": {"name": "w", "nodes": [], "extra": 1}}', 422, "invalid_workflow"),
    ],
)
async def test_bad_query_bodies(api: Any, payload: bytes, status: int, code: str) -> None:
    client = await api()
    response = await client.post(
        "/api/query", data=payload, headers={"Content-Type": "application/json"}
    )
    error = await _error(response, status)
    assert error["code"] == code
    assert error["message"]


async def test_query_over_the_size_limit(api: Any) -> None:
    """A query longer than the limit is refused with the limit in the details."""
    client = await api(max_query_chars=100)
    error = await _error(await client.post("/api/query", json={"query": "x" * 101}), 400)
    assert error["code"] == "query_too_long"
    assert error["details"]["limit"] == 100


async def test_body_over_the_size_limit_is_413(api: Any) -> None:
    """A body over the configured limit is refused with 413 before it is parsed."""
    client = await api(max_body_bytes=2_048)
    response = await client.post(
        "/api/query",
        data=b'{"query": "' + b"x" * 4_096 + b'"}',
        headers={"Content-Type": "application/json"},
    )
    error = await _error(response, 413)
    assert error["code"] == "payload_too_large"


async def test_a_body_at_the_size_limit_is_read_and_one_byte_more_is_413(api: Any) -> None:
    """The limit is inclusive whichever way the body is read (the whole body already
    here with its Content-Length, or read as it comes)."""
    client = await api(max_body_bytes=2_048)
    padding = 2_048 - len(b'{"query": ""}')
    at_limit = b'{"query": "' + b"x" * padding + b'"}'
    response = await client.post(
        "/api/query", data=at_limit, headers={"Content-Type": "application/json"}
    )
    assert (await _error(response, 400))["code"] == "query_too_long"  # read and parsed
    response = await client.post(
        "/api/query", data=at_limit + b" ", headers={"Content-Type": "application/json"}
    )
    assert (await _error(response, 413))["code"] == "payload_too_large"


async def test_wrong_content_type_is_415(api: Any) -> None:
    client = await api()
    response = await client.post(
        "/api/query", data="query=x", headers={"Content-Type": "text/plain"}
    )
    assert (await _error(response, 415))["code"] == "unsupported_media_type"


async def test_unknown_workflow_id_is_404(api: Any) -> None:
    client = await api()
    for path in ("/api/workflow/nope/status", "/api/workflow/0123abcd/status"):
        error = await _error(await client.get(path), 404)
        assert error["code"] == "workflow_not_found"
    error = await _error(await client.post("/api/workflow/nope/cancel"), 404)
    assert error["code"] == "workflow_not_found"


async def test_unknown_route_and_method_are_json(api: Any) -> None:
    client = await api()
    assert (await _error(await client.get("/api/nothing-here"), 404))["code"] == "not_found"
    assert (await _error(await client.get("/api/query"), 405))["code"] == "method_not_allowed"


async def test_workflow_naming_an_unregistered_agent_or_url_is_refused(api: Any) -> None:
    """A definition cannot make the service call anything but a registered agent."""
    client = await api()
    workflow = {
        "name": "sneaky",
        "nodes": [{"id": "a", "kind": "agent", "agent": "http://169.254.169.254/", "input": {}}],
    }
    error = await _error(await client.post("/api/query", json={"workflow": workflow}), 422)
    assert error["code"] == "invalid_workflow"
    assert any(p["node_id"] == "a" for p in error["details"]["problems"])


async def test_health_and_readiness(api: Any) -> None:
    client = await api()
    assert (await client.get("/healthz")).status == 200
    ready = await client.get("/readyz")
    assert ready.status == 200
    assert (await ready.json())["state_store"] == "memory"
