"""The access middlewares: browsers first (CORS, origin), then who is calling and may they.

`browser_middleware` (outermost, so its headers reach error responses too):
- a preflight (`OPTIONS` + `Access-Control-Request-Method`) is answered 204 for an
  origin on the allowlist and 403 `origin_not_allowed` otherwise;
- an unsafe method (POST...) carrying an `Origin` that is neither the service's own
  nor allowed is refused 403 before anything runs: a page elsewhere cannot act, even
  with a body-less POST that needs no preflight;
- responses to an allowed origin get `Access-Control-Allow-Origin` (exact, never `*`).

`auth_middleware` (inside the error middleware): finds the route's role in the
catalog, authenticates the key (`Authorization: Bearer` or `X-API-Key`; never a
query string or a cookie), answers 401 / 403, spends a token of the key's bucket
(429 with Retry-After), and puts the `Principal` on the request (`principal(request)`).
With no keys configured, every request acts as the open principal (loopback only:
see access/exposure.py).

`json_body_middleware`: a POST with a body must say `application/json` (415
otherwise); a body-less one may send no Content-Type.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import structlog
from aiohttp import web

from orchestrator.access.config import AccessConfig
from orchestrator.access.keys import Authenticator, hash_key
from orchestrator.access.principal import OPEN_PRINCIPAL, Principal, Role
from orchestrator.api.catalog import endpoint
from orchestrator.api.errors import (
    Forbidden,
    TooManyRequests,
    Unauthorized,
    UnsupportedMediaType,
    error_response,
)
from orchestrator.errors import StateStoreUnavailable
from state.ratelimit import Quotas
from state.store import StateStoreError

log = structlog.get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_ALLOWED_HEADERS = "Authorization, Content-Type, X-API-Key, Idempotency-Key"
_EXPOSED_HEADERS = "Location, Retry-After, WWW-Authenticate"
_REALM = 'Bearer realm="orchestrator"'
_JSON = frozenset({"application/json"})
# aiohttp reports a missing Content-Type as application/octet-stream.
_NO_BODY_TYPES = frozenset({"application/octet-stream"})


@dataclass(slots=True)
class Access:
    config: AccessConfig
    authenticator: Authenticator
    quotas: Quotas


ACCESS: web.AppKey[Access] = web.AppKey("access", Access)
_PRINCIPAL: web.RequestKey[Principal] = web.RequestKey("principal", Principal)


def principal(request: web.Request) -> Principal:
    """Who the request acts as (set by auth_middleware on every non-public route)."""
    return request[_PRINCIPAL]


@web.middleware
async def browser_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    origins = request.app[ACCESS].config.cors_origins
    origin = request.headers.get("Origin")
    allowed = origin is not None and origin in origins
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        if not allowed:
            return _origin_refused(origin)
        response: web.StreamResponse = web.Response(status=204)
        response.headers.update(
            {
                "Access-Control-Allow-Methods": "GET, POST",
                "Access-Control-Allow-Headers": _ALLOWED_HEADERS,
                "Access-Control-Max-Age": "600",
            }
        )
    else:
        if (
            request.method not in _SAFE_METHODS
            and origin is not None
            and not allowed
            and not _same_origin(origin, request)
        ):
            return _origin_refused(origin)
        response = await handler(request)
    if allowed and origin is not None:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = _EXPOSED_HEADERS
    if origins:
        response.headers.add("Vary", "Origin")
    return response


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    resource = request.match_info.route.resource
    if resource is None:  # no such route: the router's 404/405
        return await handler(request)
    entry = endpoint(request.method, resource.canonical)
    if entry is None:
        # A route missing from the catalog fails closed (tests/api keep this from shipping).
        log.error("route_not_in_catalog", method=request.method, path=resource.canonical)
        role: Role | None = Role.ADMIN
    else:
        role = entry.role
    if role is None:
        return await handler(request)
    access = request.app[ACCESS]
    who = OPEN_PRINCIPAL if not access.config.enabled else await _authenticate(request, access)
    if not who.has(role):
        log.warning(
            "auth_failed",
            reason="missing_role",
            key_id=who.key_id,
            tenant=who.tenant,
            required_role=role.value,
            method=request.method,
            path=request.path,
        )
        raise Forbidden(
            f"this key lacks the {role.value!r} role",
            details={"required_role": role.value, "roles": sorted(r.value for r in who.roles)},
        )
    await _spend_token(access, who)
    request[_PRINCIPAL] = who
    return await handler(request)


@web.middleware
async def json_body_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method not in _SAFE_METHODS:
        # A body must be JSON. With no body, only what HTTP clients send by default passes
        # (no type, or octet-stream): an HTML form's empty submission is refused too.
        accepted = _JSON if request.body_exists else _JSON | _NO_BODY_TYPES
        if request.content_type not in accepted:
            raise UnsupportedMediaType(
                f"expected Content-Type application/json, got {request.content_type!r}",
                details={"content_type": request.content_type},
            )
    return await handler(request)


async def _authenticate(request: web.Request, access: Access) -> Principal:
    key = _presented_key(request)
    if key is None:
        _audit_failure(request, reason="missing_key")
        raise Unauthorized(
            "an API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
            headers={"WWW-Authenticate": _REALM},
        )
    try:
        who = await access.authenticator.authenticate(key)
    except StateStoreError as exc:
        raise _unavailable(exc) from exc
    if who is None:
        _audit_failure(request, reason="invalid_key", key_fingerprint=hash_key(key)[7:19])
        raise Unauthorized(
            "the API key is not valid",
            code="invalid_key",
            headers={"WWW-Authenticate": f'{_REALM}, error="invalid_token"'},
        )
    return who


def _presented_key(request: web.Request) -> str | None:
    # Only headers: a key in a query string ends up in logs and browser history, and one
    # in a cookie would be sent by the browser on a cross-site request.
    authorization = request.headers.get("Authorization", "")
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    key = request.headers.get("X-API-Key", "").strip()
    return key or None


async def _spend_token(access: Access, who: Principal) -> None:
    limits = who.limits
    if limits.requests_per_s <= 0:
        return
    try:
        wait = await access.quotas.take(
            f"key:{who.key_id}", rate=limits.requests_per_s, burst=limits.burst
        )
    except StateStoreError as exc:
        raise _unavailable(exc) from exc
    if wait > 0:
        raise TooManyRequests(
            f"over {limits.requests_per_s:g} requests/s for this key; retry in {wait:.2f} s",
            details={"limit_per_s": limits.requests_per_s, "burst": limits.burst},
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )


def _audit_failure(request: web.Request, *, reason: str, **fields: str) -> None:
    log.warning(
        "auth_failed",
        reason=reason,
        method=request.method,
        path=request.path,
        remote=request.remote,
        **fields,
    )


def _unavailable(exc: StateStoreError) -> StateStoreUnavailable:
    return StateStoreUnavailable(backend=exc.backend, operation=exc.operation)


def _same_origin(origin: str, request: web.Request) -> bool:
    return urlsplit(origin).netloc.lower() == request.host.lower()


def _origin_refused(origin: str | None) -> web.Response:
    return error_response(
        403,
        "origin_not_allowed",
        f"requests from origin {origin!r} are not allowed",
        {"origin": origin},
    )
