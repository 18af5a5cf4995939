"""Browsers: no cross-site request can act; CORS only for configured origins; JSON bodies only."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.api.catalog import ENDPOINTS
from tests.integration.principals import access_config, auth

APP = "https://app.example.com"
EVIL = "https://evil.example.net"
_POSTS = [e for e in ENDPOINTS if e.method == "POST"]


async def test_preflight_from_an_allowed_origin_is_answered(api: Any) -> None:
    client = await api(access=access_config(cors_origins=(APP,)))
    response = await client.options(
        "/api/query",
        headers={
            "Origin": APP,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert response.status == 204
    assert response.headers["Access-Control-Allow-Origin"] == APP
    assert "POST" in response.headers["Access-Control-Allow-Methods"]
    allowed = response.headers["Access-Control-Allow-Headers"].lower()
    assert "authorization" in allowed and "content-type" in allowed
    assert "Origin" in response.headers.getall("Vary")


async def test_allowed_origin_can_read_responses(api: Any) -> None:
    client = await api(access=access_config(cors_origins=(APP,)))
    response = await client.post(
        "/api/query",
        json={"query": "revenue by region"},
        headers={"Origin": APP, **auth("user_a")},
    )
    assert response.status == 200
    assert response.headers["Access-Control-Allow-Origin"] == APP
    # Errors carry the header too, so the frontend can show them.
    response = await client.get("/api/workflow/metrics", headers={"Origin": APP})
    assert response.status == 401
    assert response.headers["Access-Control-Allow-Origin"] == APP


@pytest.mark.parametrize("origins", [(), (APP,)])
async def test_other_origins_get_no_cors(api: Any, origins: tuple[str, ...]) -> None:
    """CORS is off unless configured, and then an exact match: no wildcard, no suffix match."""
    client = await api(access=access_config(cors_origins=origins))
    for origin in (EVIL, APP + ".evil.net", "null"):
        if origin == APP:
            continue
        preflight = await client.options(
            "/api/query", headers={"Origin": origin, "Access-Control-Request-Method": "POST"}
        )
        assert preflight.status == 403
        assert (await preflight.json())["error"]["code"] == "origin_not_allowed"
        assert "Access-Control-Allow-Origin" not in preflight.headers
        get = await client.get("/healthz", headers={"Origin": origin})
        assert get.status == 200
        assert "Access-Control-Allow-Origin" not in get.headers


@pytest.mark.parametrize("entry", _POSTS, ids=lambda e: e.path)
async def test_cross_site_posts_cannot_act(api: Any, entry: Any) -> None:
    """A page elsewhere cannot cancel, query or force a breaker open, even without keys
    (the open loopback mode) and even with a body-less POST that needs no preflight."""
    client = await api()
    url = entry.path.format(workflow_id="0" * 32, agent="nlp", schedule_id="0" * 32)
    response = await client.post(url, headers={"Origin": EVIL})
    assert response.status == 403
    assert (await response.json())["error"]["code"] == "origin_not_allowed"
    breakers = await (await client.get("/api/circuit-breakers/status")).json()
    assert breakers["breakers"]["nlp"]["state"] == "closed"


async def test_same_origin_posts_are_fine(api: Any) -> None:
    client = await api()
    host = f"http://{client.host}:{client.port}"
    response = await client.post("/api/circuit-breakers/nlp/reset", headers={"Origin": host})
    assert response.status == 200


@pytest.mark.parametrize("entry", _POSTS, ids=lambda e: e.path)
@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"],
)
async def test_every_post_with_a_non_json_body_is_415(
    api: Any, entry: Any, content_type: str
) -> None:
    """The three content types a cross-site form may send without a preflight are refused."""
    client = await api(access=access_config())
    url = entry.path.format(workflow_id="0" * 32, agent="nlp", schedule_id="0" * 32)
    response = await client.post(
        url, data=b'{"query": "x"}', headers={"Content-Type": content_type, **auth("admin")}
    )
    assert response.status == 415
    assert (await response.json())["error"]["code"] == "unsupported_media_type"


async def test_a_json_body_without_its_content_type_is_415(api: Any) -> None:
    client = await api()
    response = await client.post("/api/query", data=b'{"query": "x"}', headers={"Content-Type": ""})
    assert response.status == 415


async def test_cancel_takes_an_optional_json_body(api: Any) -> None:
    client = await api()
    response = await client.post("/api/query", json={"query": "revenue", "mode": "async"})
    workflow_id = (await response.json())["workflow_id"]
    cancel = await client.post(f"/api/workflow/{workflow_id}/cancel", json={})
    assert cancel.status in (200, 202, 409)
