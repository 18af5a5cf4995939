"""The engine runs an agent node on its own path (`_Execution._agent_node`: the kind's
run, `NodeContext.call_agent` and `_execute_node` written out in one frame). Every other
kind, and an agent kind the engine does not know as its own (a subclass here), takes the
general path. The same definitions, answered the same way, must end the same on both:
the documents, every change told to `on_node`, the errors, the retries, the breakers'
states and counters and the client's metrics."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections.abc import Mapping
from typing import Any

import msgspec
import orjson
import pytest

from agents.client import AgentClient
from agents.registry import AgentRegistry
from agents.transport import TransportResponse, TransportTimeout
from orchestrator.builtins import BUILTIN_FALLBACKS
from orchestrator.dag.budget import DEFAULT_LIMITS, Limits
from orchestrator.dag.compiler import compile_workflow
from orchestrator.dag.engine import DagEngine
from orchestrator.dag.kinds import default_kinds
from orchestrator.dag.kinds.agent import AgentKind
from state.models import NodeRun, WorkflowState
from tests.chain_fixtures import mock_agent_registry
from tests.orchestrator.dag.test_engine_answers import SilentCaller


class GeneralAgentKind(AgentKind):
    """AgentKind itself, which the engine does not take for its own: the general path."""


def success(data: Any) -> tuple[int, bytes]:
    return 200, orjson.dumps({"status": "success", "data": data})


HANG = (0, b"hang")
REFUSED = (0, b"timeout")


class ScriptedTransport:
    """Answers each node's attempts in turn from its script (the last answer repeats);
    `HANG` never answers, `REFUSED` is a connect timeout. Unscripted nodes succeed."""

    def __init__(self, scripts: Mapping[str, list[tuple[int, bytes]]]) -> None:
        self.scripts = scripts
        self.sent: dict[str, int] = {}

    async def request(self, method: str, url: str, **kwargs: Any) -> TransportResponse:
        body = orjson.loads(kwargs["body"])
        step = body["step_id"]
        attempt = self.sent[step] = self.sent.get(step, 0) + 1
        script = self.scripts.get(step) or [success({"echo": body["input"], "step": step})]
        status, answer = script[min(attempt, len(script)) - 1]
        if answer == b"hang":
            await asyncio.Event().wait()
        if answer == b"timeout":
            raise TransportTimeout(phase="connect", timeout_s=1.0)
        return TransportResponse(status, {"retry-after": "0"}, answer)

    async def aclose(self) -> None:
        return None


async def instant(_: float) -> None:
    return None


async def run_both_ways(
    definition: dict[str, Any],
    scripts: Mapping[str, list[tuple[int, bytes]]] | None = None,
    *,
    limits: Limits = DEFAULT_LIMITS,
    silent: bool = False,
    node_timeout_s: float | None = None,
    registry: AgentRegistry | None = None,
    deadline_bound: bool = False,
) -> dict[str, Any]:
    """Run `definition` on the agent node's own path and on the general path; assert
    they ended the same, and return what the own path ended with. `deadline_bound`: the
    client keeps the loop's clock and sleep (`AgentClient.deadline_bound`), so a chain
    node whose own deadline comes first runs under no cap for the workflow's."""
    registry = registry or mock_agent_registry()
    ends = []
    for general in (False, True):
        kinds = default_kinds()
        if general:
            kinds.register(GeneralAgentKind(), replace=True)
        workflow = compile_workflow(
            definition, agents=list(registry), kinds=kinds, builtins=list(BUILTIN_FALLBACKS)
        )
        transport = ScriptedTransport(scripts or {})
        client = (
            AgentClient(registry, transport, rng=random.Random(7))
            if deadline_bound
            else AgentClient(registry, transport, sleep=instant, rng=random.Random(7))
        )
        engine = DagEngine(
            agents=SilentCaller(client) if silent else client,
            registry=registry,
            builtins=BUILTIN_FALLBACKS,
            limits=limits,
            node_timeout_s=node_timeout_s,
        )
        state = WorkflowState(workflow_id="wf-1", definition_name=workflow.name, inputs={"q": "x"})
        told: list[Any] = []

        def on_node(run: NodeRun, told: list[Any] = told) -> None:
            told.append(moment(msgspec.to_builtins(run)))

        transitions = 0

        async def on_transition(_: WorkflowState) -> None:
            nonlocal transitions
            transitions += 1

        await engine.run(workflow, state, on_transition=on_transition, on_node=on_node)
        document = state.to_dict()
        for step in document["steps"].values():
            moment(step)
        ends.append(
            {
                "document": {k: document[k] for k in ("status", "steps", "result", "error")},
                "told": told,
                "transitions": transitions,
                "sent": transport.sent,
                "retries": dict(client.retries),
                "stats": {
                    name: dataclasses.replace(client.stats(name), bulkhead_wait_s=0.0)
                    for name in registry
                },
                "breakers": {name: breaker_counts(client, name) for name in registry},
            }
        )
    own, general_end = ends
    assert own == general_end
    return own


def moment(step: dict[str, Any]) -> dict[str, Any]:
    for key in ("started_at", "finished_at", "duration_ms"):
        step.pop(key, None)
    return step


def breaker_counts(client: AgentClient, name: str) -> tuple[Any, ...]:
    snap = client.breaker(name).snapshot()
    return (
        snap.state,
        snap.failure_count,
        snap.calls,
        snap.successes,
        snap.failures,
        snap.rejections,
        snap.trips,
        snap.window,
    )


def agent(node_id: str, name: str, after: list[str] | None = None, **fields: Any) -> Any:
    return {"id": node_id, "kind": "agent", "agent": name, "depends_on": after or [], **fields}


CHAIN = {
    "name": "chain",
    "nodes": [
        agent("a", "nlp", input={"q": "{{ inputs.q }}"}),
        agent("b", "data", ["a"], input={"echo": "{{ a.echo }}", "n": 1}),
        agent("c", "viz", ["b"]),
    ],
}

FANOUT = {
    "name": "fanout",
    "options": {"on_failure": "continue"},
    "nodes": [
        agent("root", "nlp", input={"q": "{{ inputs.q }}"}),
        *(agent(f"p{i}", "data", ["root"], input={"i": i}) for i in range(4)),
        agent("join", "viz", [f"p{i}" for i in range(4)], input={"r": "{{ p0.step }}"}),
    ],
}


async def test_a_chain_and_a_fanout_end_the_same_on_both_paths() -> None:
    end = await run_both_ways(CHAIN)
    assert end["document"]["status"] == "completed"
    assert end["document"]["steps"]["c"]["output"] == {"echo": {}, "step": "c"}
    end = await run_both_ways(FANOUT)
    assert end["document"]["status"] == "completed"
    assert end["sent"] == dict.fromkeys(["root", "p0", "p1", "p2", "p3", "join"], 1)


@pytest.mark.parametrize(
    ("scripts", "status", "code"),
    [
        # Retried (a 5xx, a 429, a connect timeout), then answered.
        ({"b": [(503, b"busy"), success({"ok": 1})]}, "completed", None),
        ({"b": [(429, b"slow down"), success({"ok": 1})]}, "completed", None),
        ({"b": [REFUSED, success({"ok": 1})]}, "completed", None),
        # Retried until the attempts run out.
        ({"b": [(500, b"boom")]}, "failed", "agent_http_error"),
        # Never retried: a 4xx.
        ({"b": [(422, b"bad")]}, "failed", "agent_rejected"),
        # The contract broken: not JSON, no data.
        ({"b": [(200, b"not json")]}, "failed", "agent_bad_response"),
        ({"b": [(200, b'{"status": "success"}')]}, "failed", "agent_bad_response"),
    ],
)
async def test_failures_and_retries_end_the_same_on_both_paths(
    scripts: dict[str, list[tuple[int, bytes]]], status: str, code: str | None
) -> None:
    end = await run_both_ways(CHAIN, scripts)
    assert end["document"]["status"] == status
    if code is not None:
        assert end["document"]["error"]["code"] == code
        assert end["document"]["steps"]["c"]["status"] == "cancelled"
    retried = code in (None, "agent_http_error")
    assert end["retries"]["data"] == end["sent"]["b"] - 1 >= (1 if retried else 0)


@pytest.mark.parametrize(
    "fallback",
    [
        {"value": {"fixed": True}},
        {"builtin": next(iter(BUILTIN_FALLBACKS))},
        {"agent": "viz", "input": {"was": "{{ a.echo }}"}},
        {"agent": "viz"},
    ],
)
async def test_fallbacks_end_the_same_on_both_paths(fallback: dict[str, Any]) -> None:
    definition = {
        "name": "fallback",
        "nodes": [
            agent("a", "nlp"),
            agent("b", "data", ["a"], input={"x": 1}, fallback=fallback),
            agent("c", "viz", ["b"], input={"from": "{{ b }}"}),
        ],
    }
    # `data` tries twice; a fallback agent's call answers the third request.
    end = await run_both_ways(
        definition, {"b": [(500, b"down"), (500, b"down"), success({"fell": "back"})]}
    )
    assert end["document"]["status"] == "degraded"
    assert end["document"]["steps"]["b"]["fallback"]


async def test_a_failed_fallback_ends_the_same_on_both_paths() -> None:
    definition = {
        "name": "fallback",
        "nodes": [
            agent("a", "nlp"),
            agent("b", "data", ["a"], fallback={"agent": "viz"}),
        ],
    }
    end = await run_both_ways(definition, {"b": [(422, b"no")]})
    assert end["document"]["status"] == "failed"
    assert "fallback failed" in end["document"]["steps"]["b"]["error"]["message"]


@pytest.mark.parametrize(
    ("node_input", "limits", "code"),
    [
        # Not an object: invalid_input, on the kind's own check.
        (["{{ inputs.q }}"], DEFAULT_LIMITS, "invalid_input"),
        ("{{ inputs.q }}", DEFAULT_LIMITS, "invalid_input"),
        # A reference that is not there.
        ({"x": "{{ a.nope.deeper }}"}, DEFAULT_LIMITS, "template_error"),
        # Too big for the inline slice: rendered off the loop, then sent.
        (
            {"x": "{{ a }}", "q": "{{ inputs.q }}"},
            dataclasses.replace(DEFAULT_LIMITS, inline_ops=1, inline_bytes=1),
            None,
        ),
        (
            ["{{ a }}"],
            dataclasses.replace(DEFAULT_LIMITS, inline_ops=1, inline_bytes=1),
            "invalid_input",
        ),
        # Over the node's budget.
        (
            {"many": ["{{ a }}"] * 50},
            dataclasses.replace(DEFAULT_LIMITS, node_ops=20),
            "template_budget_exceeded",
        ),
    ],
)
async def test_inputs_end_the_same_on_both_paths(
    node_input: Any, limits: Limits, code: str | None
) -> None:
    definition = {
        "name": "inputs",
        "options": {"on_failure": "continue"},
        "nodes": [agent("a", "nlp"), agent("b", "data", ["a"], input=node_input)],
    }
    end = await run_both_ways(definition, limits=limits)
    step = end["document"]["steps"]["b"]
    if code is None:
        assert step["status"] == "completed"
    else:
        assert step["error"]["type"] == code


@pytest.mark.parametrize(
    ("node_input", "limits"),
    [
        ({"q": "{{ inputs.q }}"}, DEFAULT_LIMITS),
        (["{{ inputs.q }}"], DEFAULT_LIMITS),
        ({"x": "{{ a.nope.deeper }}"}, DEFAULT_LIMITS),
        ({"x": "{{ a }}"}, dataclasses.replace(DEFAULT_LIMITS, inline_ops=1, inline_bytes=1)),
    ],
)
async def test_nodes_due_before_the_workflow_end_the_same_on_both_paths(
    node_input: Any, limits: Limits
) -> None:
    """Chain nodes whose own deadline (10 s) comes well before the workflow's (120 s),
    calling agents the client ends by it: an answer, an input that is no object, a
    missing reference, an input rendered off the loop, a hanging agent."""
    definition = {
        "name": "due",
        "options": {"on_failure": "continue"},
        "nodes": [
            agent("a", "nlp"),
            agent("b", "data", ["a"], input=node_input),
            agent("c", "viz", ["b"], trigger="all_done", timeout_s=0.05),
        ],
    }
    end = await run_both_ways(
        definition, {"c": [HANG]}, limits=limits, node_timeout_s=10.0, deadline_bound=True
    )
    assert end["document"]["steps"]["a"]["status"] == "completed"
    assert end["document"]["steps"]["c"]["error"]["type"] == "agent_timeout"
    assert end["document"]["status"] == "degraded"


@pytest.mark.parametrize("fallback", [None, {"value": {"fell": "back"}}])
async def test_the_workflow_deadline_before_a_nodes_own_is_the_workflows_timeout(
    fallback: dict[str, Any] | None,
) -> None:
    """A chain node calling an agent the client ends by the node's deadline, with the
    workflow's deadline nearer: the workflow times out there, the node is cancelled and
    no fallback is taken, on both paths. (0.3 s, not less: node `a` must end before it
    on a loaded machine too.)"""
    extra = {} if fallback is None else {"fallback": fallback}
    definition = {
        "name": "late",
        "options": {"timeout_s": 0.3},
        "nodes": [agent("a", "nlp"), agent("b", "data", ["a"], **extra), agent("c", "viz", ["b"])],
    }
    end = await run_both_ways(
        definition, {"b": [HANG]}, node_timeout_s=10.0, deadline_bound=True
    )
    assert end["document"]["error"]["code"] == "workflow_timeout"
    assert [s["status"] for s in end["document"]["steps"].values()] == [
        "completed",
        "cancelled",
        "cancelled",
    ]
    assert end["stats"]["data"].outcomes == {}


async def test_timeouts_and_a_retry_override_end_the_same_on_both_paths() -> None:
    """A node's own timeout (a), the engine's default (c) and retry overrides (b, d).

    The nodes that retry have a timeout of their own far above the 50 ms ones, and the
    two that hang start only once they ended: a loaded machine that stalls the loop
    for 50 ms (CI, under coverage) can then neither time out a retrying node nor
    fire a hanging node's timer between its steps on one path and not on the other."""
    definition = {
        "name": "timeouts",
        "options": {"on_failure": "continue"},
        "nodes": [
            agent("b", "data", retry={"max_attempts": 2, "base_delay_s": 0}, timeout_s=30),
            agent(
                "d",
                "nlp",
                retry={"max_attempts": 4, "base_delay_s": 0, "max_delay_s": 0},
                timeout_s=30,
            ),
            agent("a", "nlp", ["b", "d"], trigger="all_done", timeout_s=0.05),
            agent("c", "viz", ["a", "b"], trigger="all_done"),
        ],
    }
    end = await run_both_ways(
        definition,
        {
            "a": [HANG],
            "b": [(500, b"down")],
            "c": [HANG],
            "d": [(429, b"slow"), REFUSED, (502, b"gateway"), success({"ok": 1})],
        },
        node_timeout_s=0.05,
    )
    steps = end["document"]["steps"]
    assert steps["a"]["error"]["type"] == "agent_timeout"
    assert end["sent"]["b"] == 2 and steps["b"]["attempts"] == 2
    assert steps["d"]["status"] == "completed" and steps["d"]["attempts"] == 4
    assert steps["c"]["error"]["type"] == "agent_timeout"


@pytest.mark.parametrize("stalled", ["b", "d"])
async def test_a_stalled_loop_leaves_the_timeouts_and_retries_as_they_end(
    monkeypatch: pytest.MonkeyPatch, stalled: str
) -> None:
    """The loop stalled 60 ms (what a loaded CI machine does now and then) during a
    retrying node's second attempt, on both paths: the run above ends as it does
    without the stall (it failed every time when those nodes had 50 ms in all)."""
    request = ScriptedTransport.request

    async def stalling(
        transport: ScriptedTransport, method: str, url: str, **kwargs: Any
    ) -> TransportResponse:
        if orjson.loads(kwargs["body"])["step_id"] == stalled and transport.sent.get(stalled) == 1:
            time.sleep(0.06)  # noqa: ASYNC251 (blocking on purpose: the whole loop stalls)
        return await request(transport, method, url, **kwargs)

    monkeypatch.setattr(ScriptedTransport, "request", stalling)
    await test_timeouts_and_a_retry_override_end_the_same_on_both_paths()


async def test_an_open_breaker_a_when_and_a_plain_caller_end_the_same_on_both_paths() -> None:
    registry = mock_agent_registry()
    data = registry["data"]
    registry = AgentRegistry(
        [
            *(s for s in registry.values() if s.name != "data"),
            dataclasses.replace(
                data,
                breaker=dataclasses.replace(data.breaker, policy="consecutive", fail_max=1),
                retry=dataclasses.replace(data.retry, max_attempts=1),
            ),
        ]
    )
    definition = {
        "name": "breaker",
        "options": {"on_failure": "continue"},
        "nodes": [
            agent("a", "data"),
            agent("b", "data", ["a"], trigger="all_done"),
            agent("c", "nlp", ["a"], when="inputs.q == 'x'", trigger="all_done"),
            agent("d", "nlp", ["a"], when="inputs.nope.deeper", trigger="all_done"),
            agent("e", "nlp", ["a"], when="inputs.q == 'y'", trigger="all_done"),
        ],
    }
    end = await run_both_ways(definition, {"a": [(500, b"down")]}, registry=registry)
    steps = end["document"]["steps"]
    assert steps["b"]["error"]["type"] == "agent_unavailable"
    assert end["breakers"]["data"][0].value == "open"
    assert steps["d"]["error"]["type"] == "expression_error"
    assert steps["e"]["status"] == "skipped"
    assert steps["c"]["status"] == "completed"
    # A caller that is not our client: its answers are walked on both paths.
    end = await run_both_ways(CHAIN, silent=True)
    assert end["document"]["status"] == "completed"


async def _hanging_node(client: AgentClient, registry: AgentRegistry) -> dict[str, Any]:
    """Runs one agent node whose agent never answers, under a 0.05 s node timeout, on
    the engine's own path: the step it ended with."""
    workflow = compile_workflow(
        {"name": "hang", "nodes": [agent("a", "nlp")]},
        agents=list(registry),
        kinds=default_kinds(),
        builtins=list(BUILTIN_FALLBACKS),
    )
    engine = DagEngine(
        agents=client, registry=registry, builtins=BUILTIN_FALLBACKS, node_timeout_s=0.05
    )
    state = WorkflowState(workflow_id="wf-1", definition_name=workflow.name, inputs={})

    async def on_transition(_: WorkflowState) -> None:
        return None

    await asyncio.wait_for(engine.run(workflow, state, on_transition=on_transition), timeout=10)
    step: dict[str, Any] = state.to_dict()["steps"]["a"]
    return step


async def test_a_client_that_keeps_the_deadline_ends_a_hanging_node_itself() -> None:
    """With the real clock and sleep, the client's own deadline timeout ends the node
    (the node's backstop, a moment later, is not armed for it)."""
    registry = mock_agent_registry()
    client = AgentClient(registry, ScriptedTransport({"a": [HANG]}))
    assert client.deadline_bound() == frozenset(registry)
    step = await _hanging_node(client, registry)
    assert step["error"]["type"] == "agent_timeout"
    assert "deadline" in step["error"]["message"]
    assert step["attempts"] == 1


async def test_a_client_on_a_clock_of_its_own_still_gets_the_nodes_backstop() -> None:
    """A client whose clock is not the loop's cannot see the deadline come: the node's
    backstop ends the node (node_timeout)."""
    registry = mock_agent_registry()
    client = AgentClient(registry, ScriptedTransport({"a": [HANG]}), clock=lambda: 0.0)
    assert client.deadline_bound() == frozenset()
    step = await _hanging_node(client, registry)
    assert step["error"]["type"] == "node_timeout"


def test_an_a2a_agent_or_an_injected_sleep_is_not_deadline_bound() -> None:
    """An A2A agent's card is read outside its attempt's cap; an injected sleep may
    outlast the backoff it is asked for."""
    registry = mock_agent_registry()
    a2a = AgentRegistry(
        [
            dataclasses.replace(spec, protocol="a2a") if spec.name == "viz" else spec
            for spec in registry.values()
        ]
    )
    transport = ScriptedTransport({})
    assert AgentClient(a2a, transport).deadline_bound() == frozenset(registry) - {"viz"}
    assert AgentClient(registry, transport, sleep=instant).deadline_bound() == frozenset()
