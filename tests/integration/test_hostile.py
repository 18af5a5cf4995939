"""Hostile input, one class at a time: each ends in a 4xx or a terminal step error, and a
concurrent /healthz keeps answering while it runs: the event loop never spends more than a
second of its own CPU time between two answers.

The service runs in-process with a hostile agent on 127.0.0.1 (a real aiohttp server
answering whatever the test scripts: huge, deep, or numerically absurd JSON). The
`HealthProbe` pings /healthz back to back for as long as the hostile work runs and
records the most CPU time the event loop's thread spent between two answers: a loop
stalled by one request's work shows up there. CPU time rather than wall time, so that a
machine busy with other processes (CI, parallel suites) cannot fail it: a descheduled
loop spends no CPU, a stalled one does.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import random
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from agents.registry import AgentRegistry, AgentSpec
from circuit.config import BreakerConfig, RetryConfig
from orchestrator.app import create_app
from orchestrator.cli import _announcement
from orchestrator.dag.values import MAX_JSON_DEPTH
from orchestrator.settings import Settings, default_registry
from tests.ports import free_port

Client = TestClient[web.Request, web.Application]
HEALTHZ_LIMIT_S = 1.0
# These tests time the event loop (/healthz answers within HEALTHZ_LIMIT_S while hostile
# work runs): coverage's tracer, on for the whole suite, slows that work 2-3x and would
# change what they measure, so it pauses while they run.
pytestmark = pytest.mark.no_cover


@dataclasses.dataclass
class HostileAgent:
    """An agent whose next answers are scripted: raw bytes, sent as JSON."""

    body: bytes = b'{"status": "success", "data": {}}'

    async def process(self, request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=self.body, content_type="application/json")


@pytest.fixture
async def evil(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> AsyncIterator[Any]:
    agent = HostileAgent()
    app = web.Application()
    app.router.add_post("/process", agent.process)
    server = await aiohttp_server(app, host="127.0.0.1")
    agent.url = f"http://127.0.0.1:{server.port}"  # type: ignore[attr-defined]
    yield agent


@pytest.fixture
async def service(
    evil: Any, aiohttp_client: Callable[..., Awaitable[Client]]
) -> Callable[..., Awaitable[Client]]:
    async def make(**overrides: Any) -> Client:
        spec = AgentSpec(
            name="evil",
            url=evil.url,
            retry=RetryConfig(max_attempts=1),
            breaker=BreakerConfig(policy="consecutive", fail_max=1000),
            max_response_bytes=overrides.pop("max_response_bytes", 1024 * 1024),
        )
        registry = AgentRegistry([*default_registry().values(), spec])
        return await aiohttp_client(create_app(Settings(agents=registry, **overrides)))

    return make


class HealthProbe:
    """Pings /healthz back to back while the hostile work runs.

    `slowest` is the most CPU time the loop's thread spent between two answers (or from
    the last answer to the end): the probe runs on the service's own event loop, so any
    stall of the loop, even one that falls between two pings, shows up in it. Work sent
    to worker threads is not counted: it does not hold the loop.
    """

    def __init__(self, client: Client) -> None:
        self.client = client
        self.slowest = 0.0
        self.answers = 0
        self._last = time.thread_time()
        self._stop = asyncio.Event()

    def _tick(self) -> None:
        now = time.thread_time()
        self.slowest = max(self.slowest, now - self._last)
        self._last = now

    async def run(self) -> None:
        while not self._stop.is_set():
            response = await self.client.get("/healthz")
            assert response.status == 200
            await response.read()
            self.answers += 1
            self._tick()
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self._tick()
        self._stop.set()


@asynccontextmanager
async def healthz_keeps_answering(client: Client) -> AsyncIterator[HealthProbe]:
    # The test process's heap (every earlier test's leftovers) frozen out of the cyclic
    # collector's sight, as the service freezes its start-up heap (orchestrator/
    # collector.py): a full pass over a pytest worker's heap once held the loop for
    # 1.3 s of CPU in a suite run, which is the test runner's, not the hostile work's.
    gc.collect()
    gc.freeze()
    probe = HealthProbe(client)
    task = asyncio.create_task(probe.run())
    try:
        yield probe
    finally:
        await probe.stop()
        await task
        gc.unfreeze()
    assert probe.answers >= 1
    assert probe.slowest < HEALTHZ_LIMIT_S, (
        f"the event loop ran {probe.slowest:.2f} s of CPU between two /healthz answers"
    )


async def run_workflow(client: Client, workflow: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    response = await client.post("/api/query", json={"workflow": workflow})
    return response.status, await response.json()


def step_error(body: dict[str, Any], step: str) -> str:
    error = body["steps"][step]["error"]
    assert error is not None, body["steps"][step]
    return str(error["type"])


ROWS = [{"id": i, "name": f"row {i}", "tags": ["a", "b", "c"]} for i in range(3_000)]


# -- expressions and templates: budgets ------------------------------------------------


async def test_an_expensive_filter_expression_per_item_stops_at_the_budget(service: Any) -> None:
    """Each item's filter re-serialises the whole list: stopped by the node's byte budget."""
    client = await service()
    workflow = {
        "name": "filter-bomb",
        "inputs": {"rows": ROWS},
        "nodes": [
            {
                "id": "f",
                "kind": "transform",
                "source": "{{ inputs.rows }}",
                "filter": "len(str(inputs.rows)) > item.id",
            }
        ],
    }
    async with healthz_keeps_answering(client):
        status, body = await run_workflow(client, workflow)
    assert status == 502
    assert body["status"] == "failed"
    assert step_error(body, "f") == "expression_budget_exceeded"


async def test_a_cpu_heavy_condition_stops_at_the_operation_budget(service: Any) -> None:
    """`x in list` over and over: operations, not bytes, run out."""
    client = await service(limits=dataclasses.replace(Settings().limits, node_ops=200_000))
    workflow = {
        "name": "ops-bomb",
        "inputs": {"rows": list(range(50_000))},
        "nodes": [
            {
                "id": "c",
                "kind": "condition",
                "expr": "(-1 in inputs.rows) or (-2 in inputs.rows) or (-3 in inputs.rows) "
                "or (-4 in inputs.rows) or (-5 in inputs.rows)",
            }
        ],
    }
    async with healthz_keeps_answering(client):
        status, body = await run_workflow(client, workflow)
    assert status == 502
    assert step_error(body, "c") == "expression_budget_exceeded"


async def test_a_template_repeating_a_big_value_stops_at_the_budget(service: Any) -> None:
    """200 copies of a 100 kB string would be 20 MB: refused while it is being built."""
    client = await service()
    workflow = {
        "name": "template-bomb",
        "inputs": {"big": "x" * 100_000},
        "nodes": [
            {
                "id": "a",
                "kind": "agent",
                "agent": "evil",
                "input": {"text": "{{ inputs.big }}" * 200},
            }
        ],
    }
    async with healthz_keeps_answering(client):
        status, body = await run_workflow(client, workflow)
    assert status == 502
    assert step_error(body, "a") == "template_budget_exceeded"


async def test_the_workflow_budget_bounds_many_nodes_that_each_fit(service: Any) -> None:
    """Each node alone fits its budget; together they exceed the workflow's."""
    limits = dataclasses.replace(Settings().limits, workflow_bytes=3 * 1024 * 1024)
    client = await service(limits=limits)
    nodes = [
        {"id": f"t{i}", "kind": "transform", "source": "{{ inputs.big }}"} for i in range(10)
    ]
    workflow = {"name": "many", "inputs": {"big": "y" * 500_000}, "nodes": nodes}
    async with healthz_keeps_answering(client):
        status, body = await run_workflow(client, workflow)
    assert status == 502
    errors = {s["error"]["type"] for s in body["steps"].values() if s["error"]}
    assert "template_budget_exceeded" in errors
    assert "per workflow" in body["error"]["message"]


async def test_shared_references_doubling_node_after_node_stop_at_the_output_cap(
    service: Any,
) -> None:
    """`[prev, prev]` costs two references to build but doubles once written out: each
    step output is measured before it is copied, so the chain fails instead of growing
    the process by gigabytes."""
    # A small cap keeps the last outputs that fit small too: the test is about the
    # doubling being stopped, not about how long copying a cap-sized value takes.
    limits = dataclasses.replace(Settings().limits, node_bytes=256 * 1024)
    client = await service(limits=limits)
    nodes: list[dict[str, Any]] = [{"id": "n0", "kind": "condition", "expr": "[1, 2, 'abc']"}]
    nodes += [
        {
            "id": f"n{k}",
            "kind": "condition",
            "depends_on": [f"n{k - 1}"],
            "expr": f"[n{k - 1}.value, n{k - 1}.value]",
        }
        for k in range(1, 40)
    ]
    async with healthz_keeps_answering(client):
        status, body = await run_workflow(client, {"name": "doubling", "nodes": nodes})
    assert status == 502
    errors = {s["error"]["type"] for s in body["steps"].values() if s["error"]}
    assert errors == {"value_too_large"}


# -- regular expressions ---------------------------------------------------------------


async def test_a_catastrophic_pattern_is_answered_in_linear_time(service: Any) -> None:
    client = await service()
    workflow = {
        "name": "redos",
        "inputs": {"s": "a" * 200_000 + "!"},
        "nodes": [
            {
                "id": "v",
                "kind": "validate",
                "source": "{{ inputs }}",
                "schema": {"properties": {"s": {"pattern": "^(a+)+$"}}},
            }
        ],
    }
    async with healthz_keeps_answering(client):
        status, body = await run_workflow(client, workflow)
    assert status == 502
    assert step_error(body, "v") == "validation_failed"


async def test_a_pattern_needing_backtracking_is_refused_up_front(service: Any) -> None:
    client = await service()
    workflow = {
        "name": "backref",
        "nodes": [{"id": "v", "kind": "validate", "source": "{{ inputs }}",
                   "schema": {"pattern": "(a*)\\1"}}],
    }
    response = await client.post("/api/query", json={"workflow": workflow})
    assert response.status == 422
    problems = (await response.json())["error"]["details"]["problems"]
    assert [(p["code"], p["node_id"]) for p in problems] == [("invalid_schema", "v")]


# -- nesting ---------------------------------------------------------------------------


def _nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = {"a": value}
    return value


async def test_a_deeply_nested_request_is_a_400(service: Any) -> None:
    client = await service()
    async with healthz_keeps_answering(client):
        response = await client.post(
            "/api/query", json={"query": "q", "workflow": {"name": "w", "inputs": _nested(100)}}
        )
    assert response.status == 400
    assert (await response.json())["error"]["code"] == "nesting_too_deep"


@pytest.mark.parametrize(
    ("depth", "refused"), [(MAX_JSON_DEPTH, False), (MAX_JSON_DEPTH + 1, True)]
)
@pytest.mark.parametrize("braces_in_strings", [0, 2 * MAX_JSON_DEPTH])
async def test_a_request_nested_to_the_limit_passes_and_one_level_more_is_a_400(
    service: Any, depth: int, refused: bool, braces_in_strings: int
) -> None:
    """The depth limit holds to the level, whether or not braces inside strings make the
    body look deeper than it is (its `{`/`[` count only spares the walk when within it)."""
    client = await service()
    inputs: Any = {"noise": "{[" * braces_in_strings, "deep": _nested(depth - 3)}
    body = {"query": "q", "workflow": {"name": "w", "inputs": inputs}}
    response = await client.post("/api/query", json=body)
    code = (await response.json())["error"]["code"]
    assert (code == "nesting_too_deep") is refused


async def test_a_deeply_nested_agent_answer_is_a_step_error(service: Any, evil: Any) -> None:
    evil.body = b'{"status": "success", "data": ' + b'{"a": ' * 200 + b"0" + b"}" * 201
    client = await service()
    workflow = {"name": "deep", "nodes": [{"id": "a", "kind": "agent", "agent": "evil"}]}
    async with healthz_keeps_answering(client):
        status, body = await run_workflow(client, workflow)
    assert status == 502
    assert step_error(body, "a") == "nesting_too_deep"


# -- numbers ---------------------------------------------------------------------------


async def test_numbers_beyond_64_bits_become_floats_or_are_refused_the_same_everywhere(
    service: Any, evil: Any
) -> None:
    """An agent's 2**70 becomes a float, as orjson reads one in a request; an expression's
    2**4000 (no float holds it) is refused at the step boundary."""
    evil.body = b'{"status": "success", "data": {"n": ' + str(2**70).encode() + b"}}"
    client = await service()
    workflow = {
        "name": "numbers",
        "inputs": {"big": 2**70},
        "nodes": [
            {"id": "a", "kind": "agent", "agent": "evil"},
            {"id": "c", "kind": "condition", "expr": "2 ** 4000", "on_failure": "continue"},
        ],
    }
    async with healthz_keeps_answering(client):
        status, body = await run_workflow(client, workflow)
    assert status == 200, body
    assert body["status"] == "degraded"
    assert body["steps"]["a"]["output"] == {"n": float(2**70)}
    assert body["inputs"]["big"] == float(2**70)
    assert step_error(body, "c") == "value_out_of_range"


# -- JSON Schema $ref: no outbound request ------------------------------------------------


async def test_a_schema_ref_to_a_listening_socket_is_never_fetched(service: Any) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    client = await service()
    try:
        for ref in (f"http://127.0.0.1:{port}/schema.json", "file:///etc/passwd"):
            workflow = {
                "name": "ref",
                "nodes": [{"id": "v", "kind": "validate", "source": "{{ inputs }}",
                           "schema": {"properties": {"x": {"$ref": ref}}}}],
            }
            async with healthz_keeps_answering(client):
                response = await client.post("/api/query", json={"workflow": workflow})
            assert response.status == 422
            (problem,) = (await response.json())["error"]["details"]["problems"]
            assert (problem["code"], problem["node_id"]) == ("invalid_schema", "v")
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody ever connected
    finally:
        listener.close()


# -- agent answers: size ---------------------------------------------------------------------


async def test_an_agent_answer_over_its_cap_is_a_step_error(service: Any, evil: Any) -> None:
    evil.body = b'{"status": "success", "data": {"x": "' + b"z" * 5_000_000 + b'"}}'
    client = await service(max_response_bytes=1024 * 1024)
    workflow = {"name": "big", "nodes": [{"id": "a", "kind": "agent", "agent": "evil"}]}
    async with healthz_keeps_answering(client):
        status, body = await run_workflow(client, workflow)
    assert status == 502
    assert step_error(body, "a") == "agent_response_too_large"


# -- metrics: bounded series ------------------------------------------------------------------


async def test_step_names_cannot_grow_the_metrics_without_bound(service: Any) -> None:
    client = await service(max_metric_series=10)
    async with healthz_keeps_answering(client):
        for batch in range(5):
            nodes = [
                {"id": f"s{batch}_{i}", "kind": "transform", "source": "{{ inputs }}"}
                for i in range(10)
            ]
            status, _ = await run_workflow(client, {"name": f"w{batch}", "nodes": nodes})
            assert status == 200
    steps = (await (await client.get("/api/workflow/metrics")).json())["steps"]
    assert len(steps) <= 11
    assert "(other)" in steps


# -- the embedded store: bounded ----------------------------------------------------------------


async def test_the_memory_store_keeps_a_bounded_number_of_finished_workflows(
    service: Any,
) -> None:
    client = await service(memory_max_workflows=5)
    ids = []
    for i in range(12):
        workflow = {"name": f"w{i}", "nodes": [{"id": "t", "kind": "transform",
                                               "source": "{{ inputs }}"}]}
        response = await client.post("/api/query", json={"workflow": workflow})
        ids.append((await response.json())["workflow_id"])
    statuses = [(await client.get(f"/api/workflow/{i}/status")).status for i in ids]
    assert statuses[-5:] == [200] * 5
    assert statuses[:7] == [404] * 7  # the oldest finished ones went first


# -- HTTP abuse -----------------------------------------------------------------------------------


async def test_a_stalled_request_body_times_out_with_a_json_408(service: Any) -> None:
    client = await service(body_timeout_s=0.3)
    assert client.server.port is not None
    async with healthz_keeps_answering(client):
        reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
        writer.write(
            b"POST /api/query HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n{\"query\""
        )
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        writer.close()
    assert head.startswith(b"HTTP/1.1 408")
    assert b"Server: orchestrator\r\n" in head


@pytest.mark.parametrize("encoding", ["gzip", "br", "zstd", "x-bogus"])
async def test_unsupported_content_encoding_is_a_415(service: Any, encoding: str) -> None:
    client = await service()
    response = await client.post(
        "/api/query",
        data=b'{"query": "x"}',
        headers={"Content-Type": "application/json", "Content-Encoding": encoding},
    )
    assert response.status == 415
    assert (await response.json())["error"]["code"] == "unsupported_content_encoding"


async def test_responses_carry_no_server_version(service: Any) -> None:
    client = await service()
    response = await client.get("/healthz")
    assert response.headers["Server"] == "orchestrator"


async def test_an_unreachable_agent_is_reported_without_its_address(
    aiohttp_client: Callable[..., Awaitable[Client]],
) -> None:
    port = free_port()  # free, and no other suite's (tests/ports.py)
    spec = AgentSpec(name="gone", url=f"http://127.0.0.1:{port}", retry=RetryConfig(max_attempts=1))
    registry = AgentRegistry([*default_registry().values(), spec])
    client = await aiohttp_client(create_app(Settings(agents=registry)))
    status, body = await run_workflow(
        client, {"name": "w", "nodes": [{"id": "a", "kind": "agent", "agent": "gone"}]}
    )
    assert status == 502
    text = str(body)
    # (The bare port number could turn up inside a timestamp or an id: look for addresses.)
    assert "127.0.0.1" not in text and f":{port}" not in text and f", {port})" not in text
    assert "Connect call failed" not in text and "Errno" not in text
    assert body["steps"]["a"]["error"]["type"] == "agent_unreachable"


def test_the_redis_password_is_never_printed() -> None:
    settings = Settings(redis_url="redis://:s3cret@127.0.0.1:6379/0")
    assert "s3cret" not in _announcement(settings)
    assert "s3cret" not in repr(settings)


# -- big definitions: linear, off the loop -------------------------------------------------------


async def test_a_10000_node_chain_compiles_and_runs_while_healthz_answers(service: Any) -> None:
    client = await service(max_body_bytes=8 * 1024 * 1024)
    nodes: list[dict[str, Any]] = [
        {"id": "n0", "kind": "transform", "source": "{{ inputs }}", "select": "x"}
    ]
    nodes += [
        {"id": f"n{i}", "kind": "transform", "depends_on": [f"n{i - 1}"], "select": "value"}
        for i in range(1, 10_000)
    ]
    workflow = {"name": "long", "inputs": {"x": 1}, "nodes": nodes, "options": {"timeout_s": 120}}
    async with healthz_keeps_answering(client):
        status, body = await run_workflow(client, workflow)
    assert status == 200, body["error"]
    assert body["status"] == "completed"
    assert len(body["steps"]) == 10_000


async def test_a_workflow_timeout_holds_when_its_time_goes_to_evaluation(service: Any) -> None:
    """Budgets set sky-high: the workflow's timeout_s still ends it (504), off-loop work
    is abandoned and its thread stopped at its next charge."""
    huge = dataclasses.replace(
        Settings().limits,
        node_ops=10**12,
        workflow_ops=10**12,
        node_bytes=10**12,
        workflow_bytes=10**12,
        offload_timeout_s=60,
    )
    client = await service(limits=huge)
    ids = list(range(20_000))
    workflow = {
        "name": "slow-filter",
        "inputs": {"rows": [{"id": -i} for i in range(20_000)], "ids": ids},
        "options": {"timeout_s": 0.5},
        "nodes": [
            {
                "id": "f",
                "kind": "transform",
                "source": "{{ inputs.rows }}",
                "filter": "item.id in inputs.ids",  # 20,000 x 20,000 comparisons
            }
        ],
    }
    async with healthz_keeps_answering(client):
        status, body = await run_workflow(client, workflow)
    assert status == 504
    assert body["error"]["code"] == "workflow_timeout"


async def test_a_workflow_timeout_holds_when_a_when_takes_long(service: Any) -> None:
    """A `when` is evaluated by the scheduler itself: the deadline binds it too."""
    huge = dataclasses.replace(
        Settings().limits,
        node_ops=10**12,
        workflow_ops=10**12,
        node_bytes=10**12,
        workflow_bytes=10**12,
        offload_timeout_s=60,
    )
    client = await service(limits=huge)
    ids = list(range(100_000))
    random.Random(7).shuffle(ids)
    workflow = {
        "name": "slow-when",
        "inputs": {"ids": ids},
        "options": {"timeout_s": 0.3},
        "nodes": [
            {
                "id": "t",
                "kind": "transform",
                "source": "{{ inputs }}",
                "select": "ids",
                "when": " and ".join(["sorted(inputs.ids)[0] == 0"] * 30),
            }
        ],
    }
    async with healthz_keeps_answering(client):
        status, body = await run_workflow(client, workflow)
    assert status == 504, body["error"]
    assert body["error"]["code"] == "workflow_timeout"
