"""An agent's answer that nothing reads through a template is kept without the walk
(its decoding by our client bounds it), and the run ends exactly as with the walk."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from agents.client import AgentClient
from agents.registry import AgentRegistry
from agents.transport import TransportResponse
from orchestrator.dag.budget import DEFAULT_LIMITS, Limits
from orchestrator.dag.compiler import CompiledWorkflow, compile_workflow
from orchestrator.dag.engine import DagEngine
from state.models import WorkflowState
from tests.chain_fixtures import compiled_chain, mock_agent_registry


class AnsweringTransport:
    """An AgentTransport answering each agent with a fixed `data` object, at once."""

    def __init__(self, answers: Mapping[str, bytes]) -> None:
        self.answers = answers

    async def request(self, method: str, url: str, **_: Any) -> TransportResponse:
        name = url.split("//")[1].split(".")[0]
        return TransportResponse(200, {}, self.answers[name])

    async def aclose(self) -> None:
        return None


@dataclass
class Plain:
    data: dict[str, Any]
    attempts: int


class SilentCaller:
    """The same client, its answers handed over without saying how they were decoded:
    the engine then takes the walk for every one (the reference)."""

    def __init__(self, client: AgentClient) -> None:
        self.client = client

    async def call(self, agent: str, payload: Mapping[str, Any], **kwargs: Any) -> Plain:
        result = await self.client.call(agent, payload, **kwargs)
        return Plain(result.data, result.attempts)


def body(data: Any) -> bytes:
    return orjson.dumps({"status": "success", "data": data}, option=orjson.OPT_INDENT_2)


def nested(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = {"x": value}
    return value


FANOUT = {
    "name": "fanout",
    "options": {"on_failure": "continue"},
    "nodes": [
        {"id": "root", "kind": "agent", "agent": "nlp", "input": {"q": "{{ inputs.q }}"}},
        *(
            {
                "id": f"part{i}",
                "kind": "agent",
                "agent": "data",
                "depends_on": ["root"],
                "input": {"intent": "{{ root.intent }}", "part": i},
            }
            for i in range(3)
        ),
        {
            "id": "join",
            "kind": "agent",
            "agent": "viz",
            "depends_on": ["part0", "part1", "part2"],
            "input": {"intent": "{{ root.intent }}"},
        },
    ],
}


async def run(
    registry: AgentRegistry,
    workflow: CompiledWorkflow,
    answers: Mapping[str, bytes],
    *,
    silent: bool,
    limits: Limits = DEFAULT_LIMITS,
) -> WorkflowState:
    client = AgentClient(registry, AnsweringTransport(answers))
    engine = DagEngine(
        agents=SilentCaller(client) if silent else client, registry=registry, limits=limits
    )
    state = WorkflowState(workflow_id="wf-1", definition_name=workflow.name, inputs={"q": "x"})

    async def on_transition(_: WorkflowState) -> None:
        return None

    await engine.run(workflow, state, on_transition=on_transition)
    return state


def outcome(state: WorkflowState) -> Any:
    document = state.to_dict()
    for step in document["steps"].values():
        for moment in ("started_at", "finished_at", "duration_ms"):
            step.pop(moment)
    return {k: document[k] for k in ("status", "steps", "result", "error")}


ROWS = [{"region": r, "avg": 1000.5 + i, "n": i, "ok": i % 2 == 0} for i, r in enumerate("ABCD")]


@pytest.mark.parametrize(
    ("data_answer", "node_bytes", "expected"),
    [
        # Within the bounds: kept without the walk.
        ({"columns": ["region"], "rows": ROWS}, DEFAULT_LIMITS.node_bytes, "completed"),
        # Over the bounds (deeper than 64 brackets, a body over a third of node_bytes): walked,
        # and kept or refused as the walk says.
        ({"deep": nested(63)}, DEFAULT_LIMITS.node_bytes, "completed"),
        ({"deep": nested(70)}, DEFAULT_LIMITS.node_bytes, "nesting_too_deep"),
        ({"rows": ROWS}, 450, "completed"),
        ({"rows": ROWS * 3}, 450, "value_too_large"),
    ],
)
async def test_an_unread_answer_ends_its_node_as_the_walk_would(
    data_answer: Any, node_bytes: int, expected: str
) -> None:
    registry = mock_agent_registry()
    workflow = compile_workflow(FANOUT, agents=list(registry))
    # Templates read the root's output (its sizes are remembered); nothing reads the parts'.
    assert "root" in workflow.read
    assert {"part0", "part1", "part2", "join"}.isdisjoint(workflow.read)
    answers = {
        "nlp": body({"intent": {"metric": "revenue"}}),
        "data": body(data_answer),
        "viz": body({"spec": {"mark": "bar"}}),
    }
    limits = dataclasses.replace(DEFAULT_LIMITS, node_bytes=node_bytes)
    fast = await run(registry, workflow, answers, silent=False, limits=limits)
    slow = await run(registry, workflow, answers, silent=True, limits=limits)
    assert outcome(fast) == outcome(slow)
    part = fast.steps["part0"]
    if expected == "completed":
        assert part.status.value == "completed"
        assert part.output == data_answer
    else:
        assert part.status.value == "failed"
        assert part.error is not None and part.error.type == expected


def test_the_outputs_templates_read_are_known_at_compile_time() -> None:
    """Node params, fallback inputs and the output template all count as readers."""
    registry = mock_agent_registry()
    chain = compiled_chain(registry)
    assert {"nlp", "data", "viz"} <= chain.read  # viz only through the output template
    definition = {
        "nodes": [
            {"id": "a", "kind": "agent", "agent": "nlp"},
            {
                "id": "b",
                "kind": "agent",
                "agent": "data",
                "depends_on": ["a"],
                "fallback": {"agent": "viz", "input": {"x": "{{ a.x }}"}},
            },
        ]
    }
    workflow = compile_workflow(definition, agents=list(registry))
    assert "a" in workflow.read and "b" not in workflow.read
