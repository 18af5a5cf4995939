"""An agent's answer is kept without the walk when its decoding by our client bounds it:
unread, it is never walked; read by templates, each part is measured when first read
(ValueSizes.adopt / learn). Either way the run ends exactly as with the walk."""

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


READER = {
    "name": "reader",
    "options": {"on_failure": "continue"},
    "nodes": [
        {"id": "data", "kind": "agent", "agent": "data", "input": {"q": "{{ inputs.q }}"}},
        {
            "id": "twice",
            "kind": "agent",
            "agent": "viz",
            "depends_on": ["data"],
            "input": {"rows": "{{ data.rows }}", "again": "{{ data.rows }}"},
        },
        {
            "id": "thrice",
            "kind": "agent",
            "agent": "viz",
            "depends_on": ["data"],
            "input": {
                "a": ["{{ data.rows }}"] * 6,
                "b": "rows: {{ data.rows }}",
                "c": "{{ data.rows.1 }}",
                "cols": "{{ data.columns }}",
            },
        },
    ],
    "output": {"rows": "{{ data.rows }}", "first": "{{ data.rows.0 }}", "all": "{{ data }}"},
}


@pytest.mark.parametrize("copies", [1, 4])
@pytest.mark.parametrize("spare", [10**6, 900, 300, 60, 0])
async def test_parts_read_by_templates_are_charged_as_the_walk_would(
    copies: int, spare: int
) -> None:
    """Templates read parts of an answer (again and again); the node budget, from ample
    to too small for the second or third read, fails or passes each node as with the
    walk, and the workflow's output is the same."""
    registry = mock_agent_registry()
    workflow = compile_workflow(READER, agents=list(registry))
    data_answer = {"columns": ["region", "avg"], "rows": ROWS * copies, "note": "x" * 50}
    answers = {"data": body(data_answer), "viz": body({"spec": {"mark": "bar"}})}
    # Just enough for the answer to be adopted (3 units per byte of its body), and `spare`.
    limits = dataclasses.replace(
        DEFAULT_LIMITS, node_bytes=3 * len(answers["data"]) + spare
    )
    fast = await run(registry, workflow, answers, silent=False, limits=limits)
    slow = await run(registry, workflow, answers, silent=True, limits=limits)
    assert outcome(fast) == outcome(slow)
    assert fast.steps["data"].output == data_answer
    statuses = {step: run.status.value for step, run in fast.steps.items()}
    # Two reads of the rows always fit (the answer's body bounds them); eight of the
    # longer rows do not once little is spare: that node fails, on both paths alike.
    assert statuses["twice"] == "completed"
    assert statuses["thrice"] == ("failed" if copies == 4 and spare <= 300 else "completed")
    if statuses["thrice"] == "failed":
        error = fast.steps["thrice"].error
        assert error is not None and error.type == "template_budget_exceeded"


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


@pytest.mark.parametrize(
    ("second_input", "expected"),
    [
        ({"rows": "{{ first.rows }}", "q": "{{ inputs.q }}"}, None),
        (["{{ first.rows }}"], "invalid_input"),
        ({"many": ["{{ first.rows }}"] * 200}, "template_budget_exceeded"),
        ({"missing": "{{ first.nope.deeper }}"}, "template_error"),
    ],
)
async def test_an_agent_input_too_big_to_render_inline_ends_as_an_inline_one(
    second_input: Any, expected: str | None
) -> None:
    """An agent node renders its input on the loop when it fits the inline slice, and in
    a worker thread when not (AgentKind.run's two paths): the same node outcome, the same
    recorded input, the same error."""
    registry = mock_agent_registry()
    definition = {
        "name": "offload",
        "options": {"on_failure": "continue"},
        "nodes": [
            {"id": "first", "kind": "agent", "agent": "data"},
            {
                "id": "second",
                "kind": "agent",
                "agent": "viz",
                "depends_on": ["first"],
                "input": second_input,
            },
        ],
    }
    workflow = compile_workflow(definition, agents=list(registry))
    answers = {"data": body({"rows": ROWS}), "viz": body({"spec": {"mark": "bar"}})}
    small = dataclasses.replace(DEFAULT_LIMITS, node_bytes=20_000)
    inline = await run(registry, workflow, answers, silent=False, limits=small)
    offloaded = await run(
        registry,
        workflow,
        answers,
        silent=False,
        limits=dataclasses.replace(small, inline_ops=1, inline_bytes=1),
    )
    assert outcome(inline) == outcome(offloaded)
    second = offloaded.steps["second"]
    if expected is None:
        assert second.status.value == "completed"
    else:
        assert second.error is not None and second.error.type == expected
