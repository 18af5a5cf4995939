"""What a service that does not use them never loads: httpx (the second transport), the
A2A SDK (~18 MB of memory between them), jsonschema-rs (~6 MB, only `validate` nodes
need it) and, on the memory store, redis-py (~9 MB with the OpenTelemetry metrics SDK
it loads), README "Benchmarks": peak RSS."""

from __future__ import annotations

import subprocess
import sys

from agents.client import AgentClient
from agents.transport import create_transport
from orchestrator.settings import default_registry

_CHECK = """
import asyncio, sys
from orchestrator.app import create_app
from orchestrator.cli import build_parser
from orchestrator.settings import Settings

async def build_and_start():
    # The whole app on the memory store, started and stopped as `orchestrator serve` does.
    app = create_app(Settings.from_env({}))
    from aiohttp import web
    runner = web.AppRunner(app)
    await runner.setup()
    await runner.cleanup()

asyncio.run(build_and_start())
build_parser()
optional = ("httpx", "a2a", "pydantic", "jsonschema_rs", "redis")
print(",".join(sorted(m for m in optional if m in sys.modules)))
"""


def test_the_service_loads_no_optional_library_until_asked() -> None:
    # A fresh interpreter: this test process has loaded both already for other tests.
    out = subprocess.run(
        [sys.executable, "-c", _CHECK], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == ""


async def test_a_client_without_a2a_agents_reports_no_peers_and_closes() -> None:
    client = AgentClient(default_registry(), create_transport())
    assert dict(client.a2a_peers) == {}
    assert await client.discover() == {}
    await client.aclose()


async def test_the_httpx_transport_is_loaded_when_chosen() -> None:
    transport = create_transport("httpx")
    try:
        assert type(transport).__module__ == "agents.transport_httpx"
    finally:
        await transport.aclose()


def test_jsonschema_is_loaded_by_the_first_validate_node() -> None:
    check = """
import sys
from orchestrator.dag.compiler import compile_workflow
before = "jsonschema_rs" in sys.modules
compile_workflow({"name": "v", "nodes": [{"id": "v", "kind": "validate",
    "source": "{{ inputs.x }}", "schema": {"type": "object"}}]}, agents=())
print(before, "jsonschema_rs" in sys.modules)
"""
    out = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.split() == ["False", "True"]


def test_redis_still_imports_after_pybreaker_was_loaded_without_it() -> None:
    """circuit/statemachine.py marks redis absent only while pybreaker imports."""
    check = """
import sys
import circuit
from circuit.statemachine import pybreaker
assert "redis" not in sys.modules and not pybreaker.HAS_REDIS_SUPPORT
import redis.asyncio
from circuit import RedisBreakerBoard
print(RedisBreakerBoard.__module__)
"""
    out = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.split() == ["circuit.board_redis"]


def test_pybreaker_keeps_its_redis_support_when_redis_was_loaded_first() -> None:
    """A process that loaded redis-py already (a service on Redis) imports pybreaker as is."""
    check = """
import sys
import redis
from circuit.statemachine import pybreaker
print(pybreaker.HAS_REDIS_SUPPORT, sys.modules["redis"] is redis)
"""
    out = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.split() == ["True", "True"]
