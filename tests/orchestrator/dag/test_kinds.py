"""Built-in node kinds: condition, transform, aggregate, validate and agent input."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.dag.errors import DefinitionError
from state.models import NodeStatus, WorkflowStatus

from .conftest import FakeAgents, Harness, agent, compile_def

ROWS = [
    {"region": "eu", "revenue": 120, "meta": {"code": "EU"}},
    {"region": "us", "revenue": 80, "meta": {"code": "US"}},
    {"region": "apac", "revenue": 30, "meta": {"code": "AP"}},
]


async def run_one(harness: Harness, fake: FakeAgents, node: dict[str, Any], **data: Any) -> Any:
    """Run `src` (an agent answering `data`) then `node` depending on it; node's step."""
    fake.behaviours["src"] = data or {"rows": ROWS}
    run = await harness.run(
        {
            "options": {"on_failure": "continue"},
            "nodes": [agent("src"), {"depends_on": ["src"], **node}],
        }
    )
    return run.node(node["id"])


async def test_condition_outputs_the_expression_value(harness: Harness, fake: FakeAgents) -> None:
    run = await run_one(
        harness, fake, {"id": "c", "kind": "condition", "expr": "sum([1, 2]) + len(src.rows)"}
    )
    assert run.output == {"value": 6}


async def test_transform_select_filter_map(harness: Harness, fake: FakeAgents) -> None:
    """select the rows, keep revenue > 50, then project two fields (one nested)."""
    run = await run_one(
        harness,
        fake,
        {
            "id": "t",
            "kind": "transform",
            "select": "rows",
            "filter": "item.revenue > 50",
            "map": {"name": "region", "code": "meta.code"},
        },
    )
    assert run.output == {"value": [{"name": "eu", "code": "EU"}, {"name": "us", "code": "US"}]}


async def test_transform_from_a_source_template_and_map_over_an_object(
    harness: Harness, fake: FakeAgents
) -> None:
    run = await run_one(
        harness,
        fake,
        {"id": "t", "kind": "transform", "source": "{{ src.rows.0 }}", "map": {"r": "region"}},
    )
    assert run.output == {"value": {"r": "eu"}}


async def test_transform_select_alone(harness: Harness, fake: FakeAgents) -> None:
    """The issue's example: select a dot path of the one dependency's output."""
    run = await run_one(
        harness,
        fake,
        {"id": "label", "kind": "transform", "select": "echo.label"},
        echo={"label": "hello"},
    )
    assert run.output == {"value": "hello"}


async def test_transform_filter_on_a_non_list_fails(harness: Harness, fake: FakeAgents) -> None:
    run = await run_one(
        harness, fake, {"id": "t", "kind": "transform", "filter": "item > 1"}, rows=ROWS
    )
    assert run.status is NodeStatus.FAILED
    assert run.error.type == "invalid_input"


@pytest.mark.parametrize(
    ("op", "path", "expected"),
    [
        ("sum", "value", 60),
        ("avg", "value", 20),
        ("min", "value", 10),
        ("max", "value", 30),
        ("count", "value", 3),
        ("concat", "items", [1, 2, 3, 4, 5, 6]),
        ("count", "items", 6),
        ("sum", "items", 21),
        ("merge", "obj", {"k": "c", "a": 1, "b": 2, "c": 3}),
    ],
)
async def test_aggregate_ops(
    harness: Harness, fake: FakeAgents, op: str, path: str, expected: Any
) -> None:
    """The issue's fan-in example and every op, reading `path` in each dependency."""
    for i, name in enumerate(("a", "b", "c"), start=1):
        fake.behaviours[name] = {
            "value": i * 10,
            "items": [2 * i - 1, 2 * i],
            "obj": {"k": name, name: i},
        }
    run = await harness.run(
        {
            "nodes": [
                agent("a"),
                agent("b"),
                agent("c"),
                {
                    "id": "total",
                    "kind": "aggregate",
                    "depends_on": ["a", "b", "c"],
                    "op": op,
                    "path": path,
                },
            ]
        }
    )
    assert run.node("total").output == {"value": expected}


async def test_aggregate_of_non_numbers_fails(harness: Harness, fake: FakeAgents) -> None:
    fake.behaviours["a"] = {"v": "x"}
    run = await harness.run(
        {
            "options": {"on_failure": "continue"},
            "nodes": [
                agent("a"),
                {"id": "s", "kind": "aggregate", "depends_on": ["a"], "op": "sum", "path": "v"},
            ],
        }
    )
    assert run.node("s").error.type == "invalid_input"


async def test_validate_passes_a_matching_value_through(harness: Harness, fake: FakeAgents) -> None:
    schema = {"type": "object", "required": ["rows"], "properties": {"rows": {"type": "array"}}}
    run = await run_one(harness, fake, {"id": "v", "kind": "validate", "schema": schema})
    assert run.output == {"value": {"rows": ROWS}}


async def test_validate_fails_with_the_schema_errors(harness: Harness, fake: FakeAgents) -> None:
    """The failure lists each schema error with where it is."""
    schema = {
        "type": "array",
        "items": {"type": "object", "properties": {"revenue": {"type": "integer", "minimum": 100}}},
    }
    run = await run_one(
        harness, fake, {"id": "v", "kind": "validate", "source": "{{ src.rows }}", "schema": schema}
    )
    assert run.status is NodeStatus.FAILED
    assert run.error.type == "validation_failed"
    assert "2 schema error(s)" in run.error.message
    assert "1/revenue: 80 is less than the minimum of 100" in run.error.message
    assert run.error.input == ROWS


@pytest.mark.parametrize(
    "ref", ["http://127.0.0.1:9/schema.json", "file:///etc/passwd", "other.json#/x"]
)
def test_validate_refuses_refs_outside_the_schema(ref: str) -> None:
    """A $ref that does not point inside the document is a definition problem naming the node."""
    schema = {"type": "object", "properties": {"a": {"$ref": ref}}}
    with pytest.raises(DefinitionError) as caught:
        compile_def({"nodes": [agent("a"), validate_node(schema)]})
    (problem,) = caught.value.problems
    assert (problem.code, problem.node_id) == ("invalid_schema", "v")
    assert "outside the schema" in problem.message


async def test_validate_resolves_refs_inside_the_schema(
    harness: Harness, fake: FakeAgents
) -> None:
    schema = {
        "$id": "urn:example:rows",
        "$defs": {"rows": {"type": "array"}},
        "type": "object",
        "properties": {"rows": {"$ref": "#/$defs/rows"}, "again": {"$ref": "urn:example:rows"}},
    }
    run = await run_one(harness, fake, {"id": "v", "kind": "validate", "schema": schema})
    assert run.output == {"value": {"rows": ROWS}}


async def test_validate_patterns_run_in_linear_time(harness: Harness, fake: FakeAgents) -> None:
    """A pattern that backtracks catastrophically in Python's re is answered at once."""
    schema = {"properties": {"s": {"pattern": "^(a+)+$"}}}
    node = {"id": "v", "kind": "validate", "schema": schema}
    run = await run_one(harness, fake, node, s="a" * 100_000 + "!")
    assert run.error.type == "validation_failed"
    assert len(run.error.message) < 1_000  # the 100 kB instance is not quoted in full


def test_validate_refuses_patterns_it_cannot_run_in_linear_time() -> None:
    for pattern in ["(a)\\1", "(?<=a)b", "x" * 1_001]:
        with pytest.raises(DefinitionError) as caught:
            compile_def({"nodes": [agent("a"), validate_node({"pattern": pattern})]})
        assert caught.value.problems[0].code == "invalid_schema"


def validate_node(schema: Any) -> dict[str, Any]:
    return {"id": "v", "kind": "validate", "depends_on": ["a"], "schema": schema}


async def test_agent_input_must_render_to_an_object(harness: Harness, fake: FakeAgents) -> None:
    fake.behaviours["src"] = {"rows": ROWS}
    run = await harness.run(
        {"nodes": [agent("src"), agent("b", depends_on=["src"], input="{{ src.rows }}")]}
    )
    assert run.state.status is WorkflowStatus.FAILED
    assert run.node("b").error.type == "invalid_input"
    assert run.node("b").error.input == ROWS
    assert [c.node_id for c in fake.calls] == ["src"]


async def test_template_reading_a_skipped_ancestor_renders_null(
    harness: Harness, fake: FakeAgents
) -> None:
    """An aggregate ran past a skipped branch; a later node reading that branch gets null."""
    run = await harness.run(
        {
            "nodes": [
                agent("a"),
                agent("b", when="False"),
                {"id": "j", "kind": "aggregate", "depends_on": ["a", "b"], "op": "count"},
                agent("c", depends_on=["j"], input={"b": "{{ b.agent }}", "n": "{{ j.value }}"}),
            ]
        }
    )
    assert run.node("c").status is NodeStatus.COMPLETED
    assert fake.calls[-1].payload == {"b": None, "n": 1}
