"""The boundary: the typed model, its generated schema, unknown fields refused
everywhere, every problem named by node and field, the edges form."""

from __future__ import annotations

import copy
from typing import Any, cast

import jsonschema
import pytest

from orchestrator.dag.compiler import check_definition
from orchestrator.dag.errors import DefinitionError, Problem
from orchestrator.dag.kinds import BaseKind, Compiled, NodeContext, default_kinds
from orchestrator.dag.kinds.agent import AgentNode
from orchestrator.dag.model import FallbackKind, NodeDef, OnFailure, UnreadNode
from orchestrator.dag.parse import parse_definition, parse_lenient
from orchestrator.dag.schema import definition_schema

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
    assert isinstance(data, AgentNode) and data.kind == "agent"
    assert data.depends_on == ("nlp",) and data.timeout_s == 30
    assert data.agent == "data" and data.input == {"intent": "{{ nlp.intent }}"}
    assert data.retry is not None and data.retry.overrides() == {"max_attempts": 5}
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
        ("viz", "nodes/3/fallback"),
        (None, "edges/0"),
        ("size", "nodes/4/cases/0"),
    }
    messages = " ".join(p.message for p in found)
    for name in ("extra", "parallelism", "colour", "expr", "jitter", "note", "animated", "weight"):
        assert repr(name) in messages


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
            ("invalid_value", "big", "nodes/2/cases"),
        ),
        (
            lambda r: r["nodes"][2].update(cases=[{"when": "x", "value": "y"}], default="x"),
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


def test_an_unknown_kind_is_reported_without_its_fields() -> None:
    """Fields of a kind nobody knows are not judged: the kind is reported, with the known
    ones; the node stays in the graph (its dependents do not also report it missing)."""
    raw = {
        "nodes": [
            {"id": "x", "kind": "mystery", "level": 3},
            {"id": "y", "kind": "agent", "agent": "a", "depends_on": ["x"]},
        ]
    }
    found = problems_of(raw)
    assert codes(found) == {("unknown_kind", "x", "nodes/0/kind")}
    assert "unknown kind 'mystery' (known: agent, aggregate, condition" in found[0].message
    result = parse_lenient(raw)
    assert result.definition is not None and result.malformed == {"x"}
    unread = result.definition.nodes[0]
    assert isinstance(unread, UnreadNode) and unread.kind == "mystery"


class EchoNode(NodeDef, tag="echo", frozen=True):
    """Says `text` back."""

    text: str


class Echo(BaseKind):
    name = "echo"
    node_type = EchoNode

    def compile(self, node: NodeDef) -> Compiled:
        return Compiled()

    async def run(self, node: NodeDef, ctx: NodeContext) -> Any:
        return {"text": cast(EchoNode, node).text}


def test_a_registered_kind_extends_the_model_and_the_schema() -> None:
    """A kind registered outside the engine brings its node model; others stay refused."""
    kinds = default_kinds([Echo()])
    schema = definition_schema(kinds)
    assert schema["$defs"]["EchoNode"]["properties"]["text"] == {"type": "string"}
    assert schema["$defs"]["EchoNode"]["description"] == "Says `text` back."
    assert {"$ref": "#/$defs/EchoNode"} in schema["properties"]["nodes"]["items"]["anyOf"]
    jsonschema.Draft202012Validator.check_schema(schema)
    defn = parse_definition({"nodes": [{"id": "e", "kind": "echo", "text": "hi"}]}, kinds=kinds)
    assert defn.nodes[0] == EchoNode(id="e", text="hi")
    assert "EchoNode" not in definition_schema()["$defs"]
    found = problems_of(
        {"nodes": [{"id": "e", "kind": "echo", "text": 1, "tone": "x"}]}, kinds=kinds
    )
    assert codes(found) == {
        ("invalid_value", "e", "nodes/0/text"),
        ("unknown_field", "e", "nodes/0"),
    }


def test_a_kind_whose_model_is_not_tagged_with_its_name_is_refused() -> None:
    class Misnamed(Echo):
        name = "shout"

    with pytest.raises(ValueError, match="tagged 'echo'"):
        default_kinds([Misnamed()])


BAD_DEFINITIONS: list[Any] = [
    {"nodes": [{"id": "a", "kind": "agent"}], "extra": 1},
    {"nodes": [{"id": "a", "kind": "agent", "agent": "x", "retry": {"max_attempts": "3", "z": 1}}]},
    {"nodes": [{"id": "a", "kind": "condition", "expr": "True", "cases": []}]},
    {"nodes": [{"id": "a", "kind": "transform"}]},
    {"nodes": [{"id": "a", "kind": "aggregate", "op": "median", "depends_on": [1]}]},
    {"options": {"max_parallel": True}, "nodes": [{"id": "1a", "kind": "validate", "schema": 3}]},
    {"nodes": [{"id": "a", "kind": "agent", "agent": "x", "fallback": {}}], "edges": [{}]},
    {"nodes": [{"id": "a", "kind": "agent", "agent": "x", "fallback": {"value": 1, "agent": "y"}}]},
    {"nodes": [{"id": "a", "kind": "agent", "agent": "x", "retry": {}}]},
    {"nodes": [{"id": "a", "kind": "transform", "map": {}}]},
    {"nodes": [{"id": "a", "kind": "transform", "map": {"bad key": "x"}}]},
    {"nodes": [{"id": "a", "kind": "condition", "cases": [{"when": "x", "value": "y"}]}]},
    {"nodes": [{"id": "a", "kind": "agent", "agent": "x", "when": ""}]},
]
GOOD_DEFINITIONS: list[Any] = [
    {"nodes": [{"id": "a", "kind": "agent", "agent": "x", "fallback": {"value": None}}]},
    {"nodes": [{"id": "a", "kind": "agent", "agent": "x", "fallback": {"builtin": "b"}}]},
    {"nodes": [{"id": "a", "kind": "agent", "agent": "x", "fallback": {"agent": "y", "input": 1}}]},
    {"nodes": [{"id": "a", "kind": "transform", "source": None}]},
    {"nodes": [{"id": "a", "kind": "validate", "schema": True, "depends_on": ["b"]}]},
    {
        "nodes": [
            {"id": "a", "kind": "condition", "cases": [{"when": "x", "value": "y"}], "default": "z"}
        ]
    },
]


@pytest.mark.parametrize("raw", BAD_DEFINITIONS)
def test_the_published_schema_refuses_what_the_model_refuses(raw: Any) -> None:
    """The schema is generated from the model, rules of `__post_init__` included: a
    definition the model refuses, the schema refuses too."""
    assert problems_of(raw)
    assert list(jsonschema.Draft202012Validator(definition_schema()).iter_errors(raw))


@pytest.mark.parametrize("raw", GOOD_DEFINITIONS)
def test_the_published_schema_accepts_what_the_model_accepts(raw: Any) -> None:
    parse_definition(raw)
    jsonschema.Draft202012Validator(definition_schema()).validate(raw)


def test_a_transform_with_nothing_to_do_says_what_is_missing() -> None:
    (problem,) = problems_of({"nodes": [{"id": "t", "kind": "transform"}]})
    assert (problem.code, problem.node_id, problem.path) == ("invalid_value", "t", "nodes/0")
    assert problem.message == (
        "node 't': a transform needs at least one of 'source', 'select', 'filter', 'map'; "
        "it has none"
    )


@pytest.mark.parametrize(
    ("node", "message"),
    [
        ({"agent": "x", "retry": {"max_attempts": 0}}, "node 'a' field 'retry/max_attempts': "),
        ({"agent": 3}, "node 'a' field 'agent': Expected `str`, got `int`"),
        ({"agent": "x", "fallback": {}}, "node 'a' field 'fallback': a fallback needs exactly"),
        ({"agent": "x", "timeout_s": 0}, "node 'a' field 'timeout_s': Expected `float` > 0.0"),
        ({}, "node 'a': missing required field 'agent'"),
    ],
)
def test_messages_name_the_node_and_the_field(node: dict[str, Any], message: str) -> None:
    (problem,) = problems_of({"nodes": [{"id": "a", "kind": "agent", **node}]})
    assert problem.message.startswith(message), problem.message


def test_a_builtins_list_narrows_the_published_fallback() -> None:
    schema = definition_schema(builtins=["keyword_intent"])
    assert schema["$defs"]["Fallback"]["properties"]["builtin"]["enum"] == ["keyword_intent"]
    raw = {"nodes": [{"id": "a", "kind": "agent", "agent": "x", "fallback": {"builtin": "zz"}}]}
    assert list(jsonschema.Draft202012Validator(schema).iter_errors(raw))


def test_problems_of_nodes_with_errors_leave_the_others_typed() -> None:
    """A refused definition is rebuilt as far as it decodes, for the graph checks."""
    raw = {
        "nodes": [agent("a"), {"id": "b", "kind": "agent", "agent": 1, "depends_on": ["a", "a"]}],
        "edges": [{"source": "zz"}, {"source": "a", "target": "b"}],
    }
    result = parse_lenient(raw)
    assert result.definition is not None
    good, bad = result.definition.nodes
    assert isinstance(good, AgentNode) and isinstance(bad, UnreadNode)
    assert bad.depends_on == ("a",) and result.malformed == {"b"}
    assert codes(result.problems) == {
        ("invalid_value", "b", "nodes/1/agent"),
        ("missing_field", None, "edges/0"),
    }
    # The graph checks take the unread node as a node and leave its fields alone.
    assert check_definition(result.definition, agents={"a"}) == []
