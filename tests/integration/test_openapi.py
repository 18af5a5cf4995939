"""The published contract: every route described, security declared, the docs page renders."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from orchestrator.api.catalog import ENDPOINTS
from orchestrator.api.openapi import openapi_document
from tests.integration.live import live_service
from tests.integration.principals import access_config

CHROMIUM = "/usr/bin/chromium"


def _served_routes(app: Any) -> set[tuple[str, str]]:
    return {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }


async def test_every_route_is_in_the_catalog_and_the_document(api: Any) -> None:
    """A route added without its catalog entry (role + description) fails here."""
    client = await api()
    served = _served_routes(client.app)
    catalog = {(e.method, e.path) for e in ENDPOINTS}
    assert served == catalog
    paths = openapi_document()["paths"]
    documented = {(m.upper(), p) for p, item in paths.items() for m in item}
    assert served == documented


async def test_the_served_document(api: Any) -> None:
    client = await api(access=access_config())
    response = await client.get("/api/openapi.json")  # public: no key
    assert response.status == 200
    doc = await response.json()
    assert doc["openapi"].startswith("3.1")
    schemes = doc["components"]["securitySchemes"]
    assert schemes["bearer"] == {"type": "http", "scheme": "bearer", "description": "an API key"}
    assert schemes["apiKey"]["in"] == "header" and schemes["apiKey"]["name"] == "X-API-Key"
    for entry in ENDPOINTS:
        op = doc["paths"][entry.path][entry.method.lower()]
        assert op["x-required-role"] == (entry.role.value if entry.role else None)
        if entry.role is None:
            assert op["security"] == []
            continue
        assert op["security"] == [{"bearer": []}, {"apiKey": []}]
        for status in ("401", "403", "429"):
            assert status in op["responses"], (entry.path, status)
        codes = op["responses"]["401"]["content"]["application/json"]["schema"]["allOf"][1]
        assert codes["properties"]["error"]["properties"]["code"]["enum"] == [
            "unauthorized",
            "invalid_key",
        ]
        if entry.method == "POST":
            assert {"413", "415"} <= set(op["responses"])


async def test_the_docs_page_loads_nothing_from_outside(api: Any) -> None:
    client = await api()
    response = await client.get("/api/docs")
    assert response.status == 200
    assert response.content_type == "text/html"
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp
    assert "unsafe-inline" not in csp and "script-src 'sha256-" in csp
    page = await response.text()
    for needle in ("src=", "http://", "https://", "<link", "@import", "url("):
        assert needle not in page, needle


@pytest.fixture
def docs_url() -> Iterator[str]:
    with live_service(access=access_config()) as url:
        yield url + "/api/docs"


def test_chromium_renders_every_operation(docs_url: str) -> None:
    """Headless Chromium loads the page (with its CSP) and lists every route from the document."""
    if shutil.which(CHROMIUM) is None and shutil.which("chromium") is None:
        pytest.fail("chromium is not installed: scripts/test.sh installs it")
    binary = CHROMIUM if shutil.which(CHROMIUM) else str(shutil.which("chromium"))
    result = subprocess.run(
        [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--virtual-time-budget=10000",
            "--dump-dom",
            docs_url,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    dom = result.stdout
    assert f'data-rendered="{len(ENDPOINTS)}"' in dom, result.stderr[-2000:]
    for entry in ENDPOINTS:
        assert f">{entry.path}<" in dom
    assert '<p id="error"></p>' in dom  # no load error shown


def _walk(node: Any) -> Iterator[Any]:
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def test_every_schema_is_valid_and_every_ref_resolves() -> None:
    """OpenAPI 3.1 schemas are JSON Schema 2020-12: each one checks, and no $ref dangles."""
    doc = openapi_document()
    components = doc["components"]["schemas"]
    for schema in components.values():
        Draft202012Validator.check_schema(schema)
    refs = {n["$ref"] for n in _walk(doc) if isinstance(n, dict) and "$ref" in n}
    assert refs, "the document uses components"
    for ref in refs:
        prefix = "#/components/schemas/"
        assert ref.startswith(prefix) and ref[len(prefix) :] in components, ref
    for item in doc["paths"].values():
        for op in item.values():
            for response in op["responses"].values():
                for media in response.get("content", {}).values():
                    Draft202012Validator.check_schema(media["schema"])
