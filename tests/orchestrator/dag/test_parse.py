"""The boundary: the published schema, unknown fields refused everywhere, the edges form."""

from __future__ import annotations

import copy
from typing import Any

import jsonschema
import pytest

from orchestrator.dag.errors import DefinitionError, Problem
from orchestrator.dag.kinds import BaseKind, Compiled, NodeContext, default_kinds
from orchestrator.dag.model import FallbackKind, NodeDef, OnFailure
from orchestrator.dag.parse import definition_schema, parse_definition
from orchestrator.dag.schema import DefinitionValidator, compose_schema

from .conftest import agent
from .test_engine import EXAMPLE


def problems_of(raw: Any, **kwargs: Any) -> list[Problem]:
    with pytest.raises(DefinitionError) as info:
        parse_definition(raw, **kwargs)
    return info.value.problems


def codes(problems: list[Problem]) -> set[tuple[str, str | None, str | None]]:
    return {(p.code, p.node_id, p.path) for p in problems}


def test_example_parses_into_the_typed_model() -> None:
    defn = parse_definition(EXAMPLE)
    assert defn.name == "regional-report"
    assert defn.options.max_parallel == 10 and defn.options.on_failure is OnFailure.STOP
    data = defn.nodes[1]
    assert data.depends_on == ("nlp",) and data.timeout_s == 30
    assert dict(data.params) == {
        "agent": "data",
        "input": {"intent": "{{ nlp.intent }}"},
        "retry": {"max_attempts": 5},
    }
    viz = defn.nodes[3]
    assert viz.on_failure is OnFailure.CONTINUE and viz.when == "big.value"
    assert viz.fallback is not None and viz.fallback.kind is FallbackKind.VALUE
    assert viz.fallback.value == {"spec": None}


def test_the_published_schema_is_draft_2020_12_and_accepts_the_example() -> None:
    schema = definition_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(EXAMPLE)


def test_unknown_fields_are_refused_at_every_level_all_at_once() -> None:
    """Top level, options, node, another kind's field, fallback, retry, edge, case item."""
    raw = copy.deepcopy(EXAMPLE)
    raw["extra"] = 1
    raw["options"]["parallelism"] = 3
    raw["nodes"][0]["colour"] = "red"
    raw["nodes"][1]["expr"] = "True"  # a condition's field on an agent node
    raw["nodes"][1]["retry"]["jitter"] = True
    raw["nodes"][3]["fallback"] = {"value": 1, "note": "x"}
    raw["edges"] = [{"source": "nlp", "target": "data", "animated": True}]
    raw["nodes"].append(
        {
            "id": "size",
            "kind": "condition",
            "depends_on": ["data"],
            "cases": [{"when": "True", "value": "big", "weight": 2}],
            "default": "small",
        }
    )
    found = problems_of(raw)
    unknown = {(p.node_id, p.path) for p in found if p.code == "unknown_field"}
    assert unknown == {
        (None, ""),
        (None, "options"),
        ("nlp", "nodes/0"),
        ("data", "nodes/1"),
        ("data", "nodes/1/retry"),
        (None, "edges/0"),
        ("size", "nodes/4/cases/0"),
    }
    messages = " ".join(p.message for p in found)
    for name in ("extra", "parallelism", "colour", "expr", "jitter", "animated", "weight"):
        assert repr(name) in messages
    # The fallback with an extra field matches none of the three forms.
    assert ("invalid_value", "viz", "nodes/3/fallback") in codes(found)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda r: r["options"].update(max_parallel="ten"),
            ("invalid_value", None, "options/max_parallel"),
        ),
        (
            lambda r: r["options"].update(max_parallel=0),
            ("invalid_value", None, "options/max_parallel"),
        ),
        (lambda r: r["options"].update(timeout_s=-1), ("invalid_value", None, "options/timeout_s")),
        (
            lambda r: r["options"].update(on_failure="explode"),
            ("invalid_value", None, "options/on_failure"),
        ),
        (lambda r: r["nodes"][0].update(id="bad id"), ("invalid_value", "bad id", "nodes/0/id")),
        (
            lambda r: r["nodes"][1].update(depends_on="nlp"),
            ("invalid_value", "data", "nodes/1/depends_on"),
        ),
        (lambda r: r["nodes"][0].pop("agent"), ("missing_field", "nlp", "nodes/0")),
        (lambda r: r["nodes"][0].pop("kind"), ("missing_field", "nlp", "nodes/0")),
        (
            lambda r: r["nodes"][1]["retry"].update(max_attempts=0),
            ("invalid_value", "data", "nodes/1/retry/max_attempts"),
        ),
        (
            lambda r: r["nodes"][2].update(cases=[], default="x"),
            ("invalid_value", "big", "nodes/2"),
        ),
        (
            lambda r: r["nodes"][3].update(fallback={"agent": "a", "value": 1}),
            ("invalid_value", "viz", "nodes/3/fallback"),
        ),
        (lambda r: r.pop("nodes"), ("missing_field", None, "")),
        (lambda r: r.update(nodes=[]), ("invalid_value", None, "nodes")),
    ],
)
def test_structural_problems_are_located(mutate: Any, expected: tuple[str, Any, str]) -> None:
    raw = copy.deepcopy(EXAMPLE)
    mutate(raw)
    assert expected in codes(problems_of(raw))


def test_a_definition_must_be_an_object() -> None:
    assert [p.code for p in problems_of([1, 2])] == ["invalid_type"]


def test_size_limits_refuse_before_anything_else() -> None:
    """Over max_nodes (or 10 dependencies per allowed node) is refused up front."""
    raw = {"nodes": [agent(f"n{i}") for i in range(6)]}
    assert [p.code for p in problems_of(raw, max_nodes=5)] == ["too_many_nodes"]
    raw = {"nodes": [agent("a", depends_on=[f"x{i}" for i in range(51)])]}
    assert [p.code for p in problems_of(raw, max_nodes=5)] == ["too_many_edges"]


def test_edges_fold_into_depends_on() -> None:
    """The nodes-and-edges form becomes depends_on, merged with any given, without repeats."""
    raw = {
        "nodes": [agent("a"), agent("b"), agent("c", depends_on=["a"])],
        "edges": [
            {"id": "e1", "source": "a", "target": "b"},
            {"source": "a", "target": "c"},
            {"source": "b", "target": "c"},
        ],
    }
    defn = parse_definition(raw)
    assert [n.depends_on for n in defn.nodes] == [(), ("a",), ("a", "b")]


def test_edges_naming_unknown_nodes_are_reported() -> None:
    raw = {
        "nodes": [agent("a"), agent("b")],
        "edges": [{"source": "ghost", "target": "b"}, {"source": "a", "target": "nowhere"}],
    }
    assert codes(problems_of(raw)) == {
        ("unknown_dependency", "b", "edges/0/source"),
        ("unknown_node", None, "edges/1/target"),
    }


def test_an_unknown_kind_does_not_also_report_its_fields() -> None:
    """Fields of a kind nobody knows are not judged; validation reports the kind instead."""
    defn = parse_definition({"nodes": [{"id": "x", "kind": "mystery", "level": 3}]})
    assert defn.nodes[0].params == {"level": 3}


def test_a_registered_kind_extends_the_schema() -> None:
    """A kind registered outside the engine brings its params schema; others stay refused."""

    class Echo(BaseKind):
        name = "echo"
        params_schema = {
            "required": ["text"],
            "properties": {"text": {"type": "string"}},
        }

        def compile(self, node: NodeDef) -> Compiled:
            return Compiled()

        async def run(self, node: NodeDef, ctx: NodeContext) -> Any:
            return {"text": node.params["text"]}

    kinds = default_kinds()
    kinds.register(Echo())
    schema = definition_schema(kinds)
    assert any(
        entry["if"]["properties"]["kind"]["const"] == "echo"
        for entry in schema["$defs"]["node"]["allOf"]
    )
    parse_definition({"nodes": [{"id": "e", "kind": "echo", "text": "hi"}]}, kinds=kinds)
    found = problems_of(
        {"nodes": [{"id": "e", "kind": "echo", "text": 1, "tone": "x"}]}, kinds=kinds
    )
    assert codes(found) == {
        ("invalid_value", "e", "nodes/0/text"),
        ("unknown_field", "e", "nodes/0"),
    }


BAD_DEFINITIONS: list[Any] = [
    {"nodes": [{"id": "a", "kind": "agent"}], "extra": 1},
    {"nodes": [{"id": "a", "kind": "agent", "agent": "x", "retry": {"max_attempts": "3", "z": 1}}]},
    {"nodes": [{"id": "a", "kind": "condition", "expr": "True", "cases": []}]},
    {"nodes": [{"id": "a", "kind": "transform"}]},
    {"nodes": [{"id": "a", "kind": "aggregate", "op": "median", "depends_on": [1]}]},
    {"options": {"max_parallel": True}, "nodes": [{"id": "1a", "kind": "validate", "schema": 3}]},
    {"nodes": [{"id": "a", "kind": "agent", "agent": "x", "fallback": {}}], "edges": [{}]},
]


@pytest.mark.parametrize("raw", BAD_DEFINITIONS)
def test_rust_and_python_validators_agree(raw: Any) -> None:
    """jsonschema-rs (fast path) and python-jsonschema report the same places and keywords."""
    schema = compose_schema(default_kinds().params_schemas())
    rust = DefinitionValidator(schema, backend="rust").issues(raw)
    python = DefinitionValidator(schema, backend="python").issues(raw)
    assert rust and python

    def where(issues: list[Any]) -> set[Any]:
        return {(i.path, i.keyword.replace("NotValid", "")) for i in issues}

    assert where(rust) == where(python)
