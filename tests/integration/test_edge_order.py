"""The service's one middleware keeps the order of the layers it stands for, at every exit.

Outermost first: the request id, browser checks, errors to JSON, who is calling, the
body's media type, then the route. Each test pins what an exit of one layer carries
from the layers around it (the request id on every answer, CORS headers on every
answer but an origin's refusal, which check answers first when several fail).
"""

from __future__ import annotations

from typing import Any

from tests.integration.principals import access_config, auth

APP = "https://app.example.com"
EVIL = "https://evil.example.net"
RID = "edge-order-1"


async def test_refusals_carry_the_request_id_and_no_cors(api: Any) -> None:
    client = await api(access=access_config(cors_origins=(APP,)))
    preflight = await client.options(
        "/api/query",
        headers={"Origin": EVIL, "Access-Control-Request-Method": "POST", "X-Request-ID": RID},
    )
    cross_site = await client.post("/api/query", headers={"Origin": EVIL, "X-Request-ID": RID})
    for response in (preflight, cross_site):
        assert response.status == 403
        assert (await response.json())["error"]["code"] == "origin_not_allowed"
        assert response.headers["X-Request-ID"] == RID
        assert "Access-Control-Allow-Origin" not in response.headers
        assert "Vary" not in response.headers
        assert response.headers["Server"] == "orchestrator"


async def test_a_preflight_gets_cors_headers_and_the_request_id(api: Any) -> None:
    client = await api(access=access_config(cors_origins=(APP,)))
    response = await client.options(
        "/api/query",
        headers={"Origin": APP, "Access-Control-Request-Method": "POST", "X-Request-ID": RID},
    )
    assert response.status == 204
    assert response.headers["X-Request-ID"] == RID
    assert response.headers["Access-Control-Allow-Origin"] == APP
    assert response.headers["Access-Control-Expose-Headers"]
    assert response.headers.getall("Vary") == ["Origin"]


async def test_error_answers_of_every_layer_carry_cors_and_the_request_id(api: Any) -> None:
    client = await api(access=access_config(cors_origins=(APP,)))
    headers = {"Origin": APP, "X-Request-ID": RID}
    answers = {
        # the router's own (unknown route, wrong method)
        "not_found": await client.get("/api/nowhere", headers={**headers, **auth("admin")}),
        "method_not_allowed": await client.put("/api/query", headers={**headers, **auth("admin")}),
        # who is calling
        "unauthorized": await client.get("/api/workflow/metrics", headers=headers),
        "forbidden": await client.get("/api/ops/workflows", headers={**headers, **auth("user_a")}),
        # the body's media type
        "unsupported_media_type": await client.post(
            "/api/query",
            data=b"{}",
            headers={**headers, **auth("user_a"), "Content-Type": "text/plain"},
        ),
        # the route's own
        "empty_body": await client.post(
            "/api/query",
            data=b" ",
            headers={**headers, **auth("user_a"), "Content-Type": "application/json"},
        ),
    }
    for code, response in answers.items():
        assert (await response.json())["error"]["code"] == code, code
        assert response.headers["X-Request-ID"] == RID, code
        assert response.headers["Access-Control-Allow-Origin"] == APP, code
        assert response.headers.getall("Vary") == ["Origin"], code
        assert response.content_type == "application/json", code


async def test_who_is_asked_before_the_media_type(api: Any) -> None:
    client = await api(access=access_config())
    plain = {"Content-Type": "text/plain"}
    anonymous = await client.post("/api/query", data=b"x", headers=plain)
    assert anonymous.status == 401
    assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")
    lacking = await client.post(
        "/api/circuit-breakers/nlp/reset", data=b"x", headers={**plain, **auth("user_a")}
    )
    assert lacking.status == 403
    allowed = await client.post("/api/query", data=b"x", headers={**plain, **auth("user_a")})
    assert allowed.status == 415


async def test_the_media_type_is_checked_before_the_router_answers(api: Any) -> None:
    """An unknown route's POST with a form body is a 415, as it was with the media type
    check as a middleware of its own inside the router's 404."""
    client = await api()
    form = await client.post(
        "/api/nowhere", data=b"a=b", headers={"Content-Type": "text/plain"}
    )
    assert form.status == 415
    json_post = await client.post("/api/nowhere", json={})
    assert json_post.status == 404
    assert (await json_post.json())["error"]["code"] == "not_found"


async def test_public_routes_ask_for_no_key(api: Any) -> None:
    client = await api(access=access_config())
    response = await client.get("/healthz", headers={"X-Request-ID": RID})
    assert response.status == 200
    assert response.headers["X-Request-ID"] == RID
