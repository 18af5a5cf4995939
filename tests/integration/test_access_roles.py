"""Who may do what: every route x every kind of caller -> the expected status.

The table below must name every route of the catalog (orchestrator/api/catalog.py);
`test_the_table_covers_every_route` fails when a route is added without a row.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
import structlog
from aiohttp import web

from agents.registry import AgentRegistry, AgentSpec
from orchestrator.access.keys_redis import RedisKeyStore
from orchestrator.access.principal import UNLIMITED, Role
from orchestrator.api.catalog import ENDPOINTS, Endpoint
from orchestrator.api.redact import AddressRedactor
from tests.integration.conftest import Agents, RunningAgent, eventually
from tests.integration.principals import KEYS, access_config, auth

Caller = str | None
CALLER_NAMES: tuple[Caller, ...] = (None, "user_a", "user_b", "ops", "admin")

_USER = {None: 401, "user_a": 200, "user_b": 200, "ops": 403, "admin": 200}
_OPS = {None: 401, "user_a": 403, "user_b": 403, "ops": 200, "admin": 200}
_PUBLIC = dict.fromkeys(CALLER_NAMES, 200)
# A route about the (finished) workflow of user_a's tenant.
_OWN_WORKFLOW = {None: 401, "user_a": 200, "user_b": 404, "ops": 403, "admin": 200}
_MISSING = {None: 401, "user_a": 404, "user_b": 404, "ops": 403, "admin": 404}

# The workflow in the path belongs to user_a's tenant and has finished.
EXPECTED: dict[tuple[str, str], dict[Caller, int]] = {
    ("POST", "/api/query"): _USER,
    ("GET", "/api/workflow/{workflow_id}/status"): {
        None: 401,
        "user_a": 200,
        "user_b": 404,
        "ops": 403,
        "admin": 200,
    },
    ("POST", "/api/workflow/{workflow_id}/cancel"): {
        None: 401,
        "user_a": 409,
        "user_b": 404,
        "ops": 403,
        "admin": 409,
    },
    ("POST", "/api/workflow/{workflow_id}/pause"): {
        None: 401,
        "user_a": 409,
        "user_b": 404,
        "ops": 403,
        "admin": 409,
    },
    ("POST", "/api/workflow/{workflow_id}/resume"): {
        None: 401,
        "user_a": 409,
        "user_b": 404,
        "ops": 403,
        "admin": 409,
    },
    ("POST", "/api/schedules"): {**_USER, "user_a": 201, "user_b": 201, "admin": 201},
    ("GET", "/api/schedules"): _USER,
    # The schedule in the path does not exist (tenant isolation: test_schedules_api.py).
    ("GET", "/api/schedules/{schedule_id}"): _MISSING,
    ("DELETE", "/api/schedules/{schedule_id}"): _MISSING,
    ("POST", "/api/schedules/{schedule_id}/pause"): _MISSING,
    ("POST", "/api/schedules/{schedule_id}/resume"): _MISSING,
    ("GET", "/api/workflow/metrics"): _OPS,
    ("GET", "/api/circuit-breakers/status"): _OPS,
    ("POST", "/api/circuit-breakers/{agent}/open"): _OPS,
    ("POST", "/api/circuit-breakers/{agent}/reset"): _OPS,
    ("POST", "/api/circuit-breakers/{agent}/disable"): _OPS,
    ("POST", "/api/circuit-breakers/{agent}/enable"): _OPS,
    ("POST", "/api/workflows/validate"): _USER,
    ("GET", "/api/workflows/schema"): _USER,
    ("GET", "/api/workflows"): _USER,
    ("POST", "/api/workflows/plan.svg"): _USER,
    ("GET", "/api/workflow/{workflow_id}/plan.svg"): _OWN_WORKFLOW,
    ("GET", "/api/workflow/{workflow_id}/events"): _OWN_WORKFLOW,
    ("GET", "/metrics"): _OPS,
    ("GET", "/api/ops/workflows"): _OPS,
    ("GET", "/ops"): _PUBLIC,
    ("GET", "/healthz"): _PUBLIC,
    ("GET", "/readyz"): _PUBLIC,
    ("GET", "/api/openapi.json"): _PUBLIC,
    ("GET", "/api/docs"): _PUBLIC,
}

_BODIES: dict[str, Any] = {
    "/api/query": {"query": "revenue by region"},
    "/api/workflows/plan.svg": {
        "workflow": {
            "name": "w",
            "nodes": [{"id": "a", "kind": "agent", "agent": "nlp", "input": {"query": "x"}}],
        }
    },
    "/api/schedules": {"cron": "0 9 * * *", "query": "revenue by region"},
    "/api/workflows/validate": {
        "workflow": {
            "name": "w",
            "nodes": [{"id": "a", "kind": "agent", "agent": "nlp", "input": {"query": "x"}}],
        }
    },
}


def test_the_table_covers_every_route() -> None:
    catalog = {(e.method, e.path) for e in ENDPOINTS}
    missing = sorted(catalog - set(EXPECTED))
    assert not missing, f"add a row to EXPECTED (caller -> status) for: {missing}"
    assert set(EXPECTED) <= catalog, sorted(set(EXPECTED) - catalog)


async def _finished_workflow_of_user_a(client: Any) -> str:
    response = await client.post(
        "/api/query", json={"query": "revenue by region"}, headers=auth("user_a")
    )
    assert response.status == 200, await response.text()
    return str((await response.json())["workflow_id"])


def _url(entry: Endpoint, workflow_id: str) -> str:
    return entry.path.format(workflow_id=workflow_id, agent="nlp", schedule_id="0" * 32)


@pytest.mark.parametrize("entry", ENDPOINTS, ids=lambda e: f"{e.method} {e.path}")
async def test_route_by_role(api: Any, entry: Endpoint) -> None:
    """Each caller gets the table's status: 401 without a key, 403 without the role,
    404 for another tenant's workflow."""
    client = await api(access=access_config())
    workflow_id = await _finished_workflow_of_user_a(client)
    for caller in CALLER_NAMES:
        kwargs: dict[str, Any] = {"headers": auth(caller)}
        if entry.path in _BODIES:
            kwargs["json"] = _BODIES[entry.path]
        response = await client.request(entry.method, _url(entry, workflow_id), **kwargs)
        expected = EXPECTED[(entry.method, entry.path)][caller]
        assert response.status == expected, (caller, await response.text())
        if expected == 401:
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
            assert (await response.json())["error"]["code"] == "unauthorized"
        if expected == 403:
            error = (await response.json())["error"]
            assert error["code"] == "forbidden"
            assert error["details"]["required_role"] == (entry.role.value if entry.role else None)


async def test_another_tenants_running_workflow_cannot_be_cancelled(
    api: Any, agents: Agents
) -> None:
    """Tenant B's cancel of tenant A's running workflow is a 404 and changes nothing."""
    client = await api(access=access_config())
    await agents["data"].control(delay_ms=300)
    response = await client.post(
        "/api/query", json={"query": "revenue by region", "mode": "async"}, headers=auth("user_a")
    )
    workflow_id = (await response.json())["workflow_id"]
    cancel = await client.post(f"/api/workflow/{workflow_id}/cancel", headers=auth("user_b"))
    assert cancel.status == 404
    assert (await cancel.json())["error"]["code"] == "workflow_not_found"

    async def finished() -> bool:
        r = await client.get(f"/api/workflow/{workflow_id}/status", headers=auth("user_a"))
        return (await r.json())["status"] in ("completed", "degraded", "failed", "cancelled")

    await eventually(finished)
    r = await client.get(f"/api/workflow/{workflow_id}/status", headers=auth("admin"))
    body = await r.json()
    assert body["status"] == "completed"
    assert body["tenant"] == "acme"


async def test_unknown_and_foreign_workflow_ids_answer_the_same(api: Any) -> None:
    """No oracle: another tenant's id and an id that never existed give the same 404 body."""
    client = await api(access=access_config())
    workflow_id = await _finished_workflow_of_user_a(client)
    foreign = await client.get(f"/api/workflow/{workflow_id}/status", headers=auth("user_b"))
    unknown = await client.get("/api/workflow/" + "0" * 32 + "/status", headers=auth("user_b"))
    assert foreign.status == unknown.status == 404
    a, b = (await foreign.json())["error"], (await unknown.json())["error"]
    assert a["code"] == b["code"] == "workflow_not_found"
    assert a["message"].replace(workflow_id, "ID") == b["message"].replace("0" * 32, "ID")


@pytest.mark.parametrize("header", ["Authorization", "X-API-Key"])
async def test_both_key_headers_work(api: Any, header: str) -> None:
    client = await api(access=access_config())
    value = f"Bearer {KEYS['ops']}" if header == "Authorization" else KEYS["ops"]
    response = await client.get("/api/circuit-breakers/status", headers={header: value})
    assert response.status == 200
    assert "url" in (await response.json())["breakers"]["nlp"]


@pytest.mark.parametrize(
    ("how", "kwargs"),
    [
        ("query string", {"params": {"api_key": KEYS["admin"]}}),
        ("query string (key)", {"params": {"key": KEYS["admin"]}}),
        ("cookie", {"cookies": {"api_key": KEYS["admin"]}}),
        ("wrong scheme", {"headers": {"Authorization": f"Basic {KEYS['admin']}"}}),
        ("bad key", {"headers": {"Authorization": "Bearer orch_nope"}}),
    ],
)
async def test_keys_are_taken_from_headers_only(api: Any, how: str, kwargs: Any) -> None:
    client = await api(access=access_config())
    response = await client.get("/api/circuit-breakers/status", **kwargs)
    assert response.status == 401, how
    assert "WWW-Authenticate" in response.headers


async def test_without_keys_every_request_acts_as_admin(api: Any) -> None:
    """The open (loopback) mode: no key needed, and workflows belong to the default tenant."""
    client = await api()
    response = await client.post("/api/query", json={"query": "revenue by region"})
    assert response.status == 200
    assert (await response.json())["tenant"] == "default"
    assert (await client.get("/api/circuit-breakers/status")).status == 200


async def test_ops_actions_and_auth_failures_are_audited(api: Any) -> None:
    """Force-open, reset and refused keys are logged with key id and tenant, never the key."""
    client = await api(access=access_config())
    with structlog.testing.capture_logs() as logs:
        await client.post("/api/circuit-breakers/nlp/open", headers=auth("ops"))
        await client.post("/api/circuit-breakers/nlp/reset", headers=auth("admin"))
        await client.get("/api/workflow/metrics", headers=auth("user_a"))
        await client.get("/api/workflow/metrics", headers={"X-API-Key": "orch_guess"})
        await client.get("/api/workflow/metrics")
    events = [(e["event"], e.get("key_id"), e.get("tenant"), e.get("reason")) for e in logs]
    assert ("breaker_forced_open", "ops", "acme", None) in events
    assert ("breaker_reset", "admin", "root", None) in events
    assert ("auth_failed", "user_a", "acme", "missing_role") in events
    assert ("auth_failed", None, None, "invalid_key") in events
    assert ("auth_failed", None, None, "missing_key") in events
    text = repr(logs)
    assert all(key not in text for key in KEYS.values())
    assert "orch_guess" not in text


@pytest.mark.redis
async def test_keys_kept_in_redis_work_on_every_replica(api: Any, redis_url: str) -> None:
    """A key created in Redis (`orchestrator keys create --redis`) opens both replicas."""
    prefix = f"test-rk-{uuid.uuid4().hex[:8]}:"
    client = aioredis.Redis.from_url(redis_url)
    try:
        store = RedisKeyStore(client, prefix=prefix, default_limits=UNLIMITED)
        key = await store.create(key_id="shared", tenant="initech", roles=frozenset({Role.OPS}))
        config = access_config(redis_keys=True)
        for _ in range(2):
            replica = await api(access=config, redis_url=redis_url, key_prefix=prefix)
            ok = await replica.get("/api/workflow/metrics", headers={"X-API-Key": key})
            assert ok.status == 200
            denied = await replica.get("/api/workflows/schema", headers={"X-API-Key": key})
            assert denied.status == 403
        # The file's keys still work alongside.
        assert (await replica.get("/api/workflows/schema", headers=auth("user_a"))).status == 200
    finally:
        async for k in client.scan_iter(match=prefix + "*"):
            await client.delete(k)
        await client.aclose()


async def test_agent_addresses_are_only_for_ops(api: Any, agents: Agents) -> None:
    """A user reading why its workflow failed never learns where the agents live, even
    when an agent's own error page names its address (it lands in the step's error)."""

    async def process(request: web.Request) -> web.Response:
        return web.Response(status=400, text=f"no route on {request.host} ({request.url})")

    app = web.Application()
    app.router.add_post("/process", process)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    await agents["data"].runner.cleanup()
    agents["data"] = RunningAgent("data", port, runner)  # the fixture cleans it up
    address = f"127.0.0.1:{port}"

    client = await api(access=access_config())
    response = await client.post(
        "/api/query", json={"query": "revenue by region"}, headers=auth("user_a")
    )
    assert response.status == 502
    text = await response.text()
    assert "no route on <agent data>" in text
    assert address not in text
    workflow_id = (await response.json())["workflow_id"]
    url = f"/api/workflow/{workflow_id}/status"
    assert address not in await (await client.get(url, headers=auth("user_a"))).text()
    # admin holds ops, which sees the agents' URLs in the breaker status anyway.
    assert address in await (await client.get(url, headers=auth("admin"))).text()


def test_the_redactor_replaces_every_form_of_an_address() -> None:
    registry = AgentRegistry(
        [
            AgentSpec(name="data", url="http://10.0.0.5:8002/"),
            AgentSpec(name="viz", url="https://viz.internal"),
        ]
    )
    redact = AddressRedactor(registry)
    raw = (
        b'{"e": "Cannot connect to host 10.0.0.5:8002 ssl:default '
        b"[Connect call failed ('10.0.0.5', 8002)] at http://10.0.0.5:8002/process; "
        b'https://viz.internal/process, viz.internal:443"}'
    )
    out = redact(raw)
    assert b"10.0.0.5" not in out and b"viz.internal" not in out
    assert out.count(b"<agent data>") == 3 and out.count(b"<agent viz>") == 2
    orjson.loads(out)
