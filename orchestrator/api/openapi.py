"""The OpenAPI 3.1 document, built from the route table (api/catalog.py), and the docs page."""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from importlib import resources
from typing import Any

import msgspec
import orjson

from orchestrator.api.bodies import Error
from orchestrator.api.catalog import ENDPOINTS, Endpoint, Model, QuerySpec, Reply
from orchestrator.api.schemas import components, ref
from orchestrator.dag.schema import definition_schema

_PARAM = re.compile(r"{(\w+)}")
_PARAM_TEXT = {
    "workflow_id": "the id `POST /api/query` answered with",
    "agent": "a registered agent's name",
}

# Errors every route of a kind can answer, beyond the codes its catalog entry lists.
_SECURED_ERRORS: dict[int, tuple[str, ...]] = {
    401: ("unauthorized", "invalid_key"),
    403: ("forbidden",),
    429: ("rate_limited",),
    503: ("state_store_unavailable",),
}
_POST_ERRORS: dict[int, tuple[str, ...]] = {
    403: ("origin_not_allowed",),
    413: ("payload_too_large",),
    415: ("unsupported_media_type", "unsupported_content_encoding"),
}
_BODY_ERRORS: dict[int, tuple[str, ...]] = {
    400: ("malformed_json", "empty_body", "invalid_body", "nesting_too_deep", "invalid_value"),
    408: ("request_timeout",),
}
_STATUS_TEXT = {
    400: "the request is malformed",
    401: "no valid API key (see WWW-Authenticate)",
    403: "the key lacks the role, or the origin is not allowed",
    404: "not found (another tenant's workflow is not found either)",
    408: "the body did not arrive in time",
    409: "conflict with the resource's state",
    413: "the body is over the size limit",
    415: "the body is not application/json, or is content-encoded",
    422: "the workflow definition is invalid",
    429: "over a rate limit or quota (see Retry-After)",
    500: "a bug in the service; the message says nothing more (the traceback is in its log)",
    503: "a dependency is unavailable (see Retry-After)",
}
_ERROR_HEADERS = {
    401: {"WWW-Authenticate": 'Bearer realm="orchestrator"'},
    429: {"Retry-After": "seconds to wait"},
    503: {"Retry-After": "seconds to wait"},
}


def openapi_document(definition: dict[str, Any] | None = None) -> dict[str, Any]:
    """The document; `definition`: the JSON Schema of the workflow definitions this service
    takes, as GET /api/workflows/schema serves it (None: the built-in kinds', any fallback name)."""
    key = None if definition is None else orjson.dumps(definition, option=orjson.OPT_SORT_KEYS)
    return _document(key)


# One document per definition schema (a service's kinds and fallbacks fix it): built once.
@functools.lru_cache(maxsize=8)
def _document(definition_json: bytes | None) -> dict[str, Any]:
    if definition_json is None:
        definition = definition_schema()
    else:
        definition = orjson.loads(definition_json)
    paths: dict[str, dict[str, Any]] = {}
    for entry in ENDPOINTS:
        paths.setdefault(entry.path, {})[entry.method.lower()] = _operation(entry)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Agent orchestrator",
            "version": "1",
            "description": "Runs NLP -> Data -> Viz and any DAG of agent tasks behind "
            "per-agent circuit breakers and retries. Roles: `user` (its tenant's "
            "workflows), `ops` (breakers, metrics), `admin` (everything, every tenant). "
            "Each operation's `x-required-role` says which it needs.",
        },
        "servers": [{"url": "/"}],
        "tags": [{"name": t} for t in ("workflows", "operations", "service")],
        "paths": paths,
        "components": {
            "schemas": components(_models(), definition=definition),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "an API key"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
    }


def _models() -> list[Model]:
    """Every body type the route table names."""
    models: list[Model] = [e.body for e in ENDPOINTS if e.body is not None]
    for entry in ENDPOINTS:
        models += [r.schema for r in entry.replies.values() if isinstance(r.schema, type)]
    return models


def _operation(entry: Endpoint) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": _operation_id(entry),
        "summary": entry.summary,
        "tags": [entry.tag],
        "x-required-role": entry.role.value if entry.role else None,
        "responses": _responses(entry),
    }
    if entry.description:
        op["description"] = entry.description
    params = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "description": _PARAM_TEXT.get(name, name),
            "schema": {"type": "string"},
        }
        for name in _PARAM.findall(entry.path)
    ]
    params += _query_parameters(entry.query)
    if params:
        op["parameters"] = params
    if entry.body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": ref(entry.body)}},
        }
    op["security"] = [{"bearer": []}, {"apiKey": []}] if entry.role else []
    return op


def _query_parameters(query: QuerySpec) -> list[dict[str, Any]]:
    if not isinstance(query, type):
        return [
            {"name": name, "in": "query", "required": False, "description": text, "schema": schema}
            for name, (schema, text) in query.items()
        ]
    # A typed query string: each field of its Struct is one parameter.
    _, generated = msgspec.json.schema_components([query])
    schema = generated[query.__name__]
    params = []
    for name, prop in schema["properties"].items():
        prop = dict(prop)
        text = prop.pop("description", name)
        params.append(
            {
                "name": name,
                "in": "query",
                "required": name in schema.get("required", ()),
                "description": text,
                "schema": prop,
            }
        )
    return params


def _responses(entry: Endpoint) -> dict[str, Any]:
    out: dict[str, Any] = {str(status): _reply(reply) for status, reply in entry.replies.items()}
    for status, codes in sorted(_error_codes(entry).items()):
        out[str(status)] = {
            "description": _STATUS_TEXT.get(status, "error") + ": " + ", ".join(codes),
            "content": {"application/json": {"schema": _error_schema(codes)}},
        }
        if status in _ERROR_HEADERS:
            out[str(status)]["headers"] = {
                name: {"description": text, "schema": {"type": "string"}}
                for name, text in _ERROR_HEADERS[status].items()
            }
    return out


def _error_codes(entry: Endpoint) -> dict[int, tuple[str, ...]]:
    merged: dict[int, list[str]] = {}
    sources = [entry.errors]
    if entry.role is not None:
        sources.append(_SECURED_ERRORS)
    if entry.method == "POST":
        sources.append(_POST_ERRORS)
    if entry.body is not None:
        sources.append(_BODY_ERRORS)
    if _PARAM.search(entry.path):
        sources.append({404: ("not_found",)})
    sources.append({500: ("internal_error",)})  # any route, on a bug
    for source in sources:
        for status, codes in source.items():
            merged.setdefault(status, [])
            merged[status] += [c for c in codes if c not in merged[status]]
    return {status: tuple(codes) for status, codes in merged.items()}


def _error_schema(codes: tuple[str, ...]) -> dict[str, Any]:
    return {
        "allOf": [
            ref(Error),
            {"properties": {"error": {"properties": {"code": {"enum": list(codes)}}}}},
        ]
    }


def _reply(reply: Reply) -> dict[str, Any]:
    out: dict[str, Any] = {"description": reply.description}
    if isinstance(reply.schema, type):
        out["content"] = {reply.media_type: {"schema": ref(reply.schema)}}
    elif reply.schema is not None:
        out["content"] = {reply.media_type: {"schema": dict(reply.schema)}}
    if reply.headers:
        out["headers"] = {
            name: {"description": text, "schema": {"type": "string"}}
            for name, text in reply.headers.items()
        }
    return out


def _operation_id(entry: Endpoint) -> str:
    words = re.sub(r"[{}]", "", entry.path).replace("-", "_").split("/")
    return entry.method.lower() + "_" + "_".join(w for w in words if w and w != "api")


@functools.cache
def docs_page() -> str:
    return resources.files("orchestrator.api").joinpath("docs.html").read_text("utf-8")


@functools.cache
def docs_csp() -> str:
    """The docs page's Content-Security-Policy: only its own inline script and style (by
    hash) run, and it may fetch only from this service: no CDN, no other origin."""
    page = docs_page()
    scripts = " ".join(_hashes(page, "script"))
    styles = " ".join(_hashes(page, "style"))
    return (
        f"default-src 'none'; script-src {scripts}; style-src {styles}; connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


def _hashes(page: str, tag: str) -> list[str]:
    bodies = re.findall(rf"<{tag}>(.*?)</{tag}>", page, flags=re.DOTALL)
    return [
        "'sha256-" + base64.b64encode(hashlib.sha256(b.encode()).digest()).decode() + "'"
        for b in bodies
    ]
