"""The access checks: browsers first (CORS, origin), then who is calling and may they.

The service's one middleware (api/middleware.py) runs them in this order:

- browsers, outermost (`browser_refusal`, `preflight_answer`, and `add_cors_headers`
  on every answer, error answers too): a preflight (`OPTIONS` +
  `Access-Control-Request-Method`) is answered 204 for an origin on the allowlist and
  403 `origin_not_allowed` otherwise; an unsafe method (POST...) carrying an `Origin`
  that is neither the service's own nor allowed is refused 403 before anything runs: a
  page elsewhere cannot act, even with a body-less POST that needs no preflight;
  responses to an allowed origin get `Access-Control-Allow-Origin` (exact, never `*`).
- who (inside the error mapping): `required_role` finds the route's role in the
  catalog, `authenticate` the key (`Authorization: Bearer` or `X-API-Key`; never a
  query string or a cookie), answering 401; `check_role` answers 403; `spend_token`
  spends a token of the key's bucket (429 with Retry-After); the `Principal` goes on
  the request (`principal(request)`). With no keys configured, every request acts as
  the open principal (loopback only: see access/exposure.py).
- the body (`check_media_type`): a POST with a body must say `application/json` (415
  otherwise); a body-less one may send no Content-Type.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from urllib.parse import urlsplit

import structlog
from aiohttp import web

from orchestrator.access.config import AccessConfig
from orchestrator.access.keys import Authenticator, hash_key
from orchestrator.access.principal import Principal, Role
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


def browser_refusal(
    request: web.Request, origin: str | None, allowed: bool
) -> web.Response | None:
    """The 403 a browser's request gets before anything runs, else None: a preflight
    from an origin off the allowlist, an unsafe method from a foreign origin. It goes
    out as it is (no CORS headers for an origin refused)."""
    if is_preflight(request):
        return None if allowed else _origin_refused(origin)
    if (
        request.method not in _SAFE_METHODS
        and origin is not None
        and not allowed
        and not _same_origin(origin, request)
    ):
        return _origin_refused(origin)
    return None


def is_preflight(request: web.Request) -> bool:
    return request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers


def preflight_answer() -> web.Response:
    """The 204 to an allowed origin's preflight (the CORS headers of any answer follow)."""
    response = web.Response(status=204)
    response.headers.update(
        {
            "Access-Control-Allow-Methods": "GET, POST",
            "Access-Control-Allow-Headers": _ALLOWED_HEADERS,
            "Access-Control-Max-Age": "600",
        }
    )
    return response


def add_cors_headers(
    response: web.StreamResponse, origin: str | None, allowed: bool, *, cors: bool
) -> None:
    """Responses to an allowed origin say so (exact, never `*`); with CORS on (`cors`:
    an allowlist is configured) every answer varies by Origin."""
    if allowed and origin is not None:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = _EXPOSED_HEADERS
    if cors:
        response.headers.add("Vary", "Origin")


def required_role(request: web.Request) -> Role | None:
    """The role the matched route needs (None: public, or no such route: the router's
    404/405 answers). A route missing from the catalog needs ADMIN: it fails closed
    (tests/api keep that from shipping)."""
    resource = request.match_info.route.resource
    if resource is None:
        return None
    entry = endpoint(request.method, resource.canonical)
    if entry is None:
        log.error("route_not_in_catalog", method=request.method, path=resource.canonical)
        return Role.ADMIN
    return entry.role


def check_role(request: web.Request, who: Principal, role: Role) -> None:
    """403 unless `who` holds `role`."""
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


def set_principal(request: web.Request, who: Principal) -> None:
    request[_PRINCIPAL] = who


def check_media_type(request: web.Request) -> None:
    """A body must be JSON (415 otherwise). With no body, only what HTTP clients send by
    default passes (no type, or octet-stream): an HTML form's empty submission is
    refused too."""
    if request.method not in _SAFE_METHODS:
        accepted = _JSON if request.body_exists else _JSON | _NO_BODY_TYPES
        if request.content_type not in accepted:
            raise UnsupportedMediaType(
                f"expected Content-Type application/json, got {request.content_type!r}",
                details={"content_type": request.content_type},
            )


async def authenticate(request: web.Request, access: Access) -> Principal:
    """Who presents the request's key (401 without a valid one)."""
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


async def spend_token(access: Access, who: Principal) -> None:
    """A token of the key's bucket (429 with Retry-After when it is empty); callers skip
    this for a key without a rate (`who.limits.requests_per_s <= 0`)."""
    limits = who.limits
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
