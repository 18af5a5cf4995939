"""What a service that does not use them never loads: httpx (the second transport), the
A2A SDK (~18 MB of memory between them) and jsonschema-rs (~6 MB, only `validate` nodes
need it), README "Benchmarks": peak RSS."""

from __future__ import annotations

import subprocess
import sys

from agents.client import AgentClient
from agents.transport import create_transport
from orchestrator.settings import default_registry

_CHECK = """
import sys
import orchestrator.app
loaded = sorted(m for m in ("httpx", "a2a", "pydantic", "jsonschema_rs") if m in sys.modules)
print(",".join(loaded))
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
