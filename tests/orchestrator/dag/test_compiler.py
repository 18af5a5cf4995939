"""Validation against registries and as a graph: every kind of problem, all at once."""

from __future__ import annotations

from typing import Any, cast

import pytest
from hypothesis import given, settings

from orchestrator.dag.compiler import check_definition, compile_workflow
from orchestrator.dag.errors import DefinitionError, Problem
from orchestrator.dag.kinds import BaseKind, Compiled, NodeContext, ProblemCollector, default_kinds
from orchestrator.dag.model import NodeDef
from orchestrator.dag.parse import parse_definition

from .conftest import AGENTS, FakeAgents, agent, new_state
from .strategies import digraphs


def problems_of(raw: Any, **kwargs: Any) -> list[Problem]:
    kwargs.setdefault("agents", set(AGENTS))
    with pytest.raises(DefinitionError) as info:
        compile_workflow(raw, **kwargs)
    return info.value.problems


def found(problems: list[Problem]) -> set[tuple[str, str | None]]:
    return {(p.code, p.node_id) for p in problems}


def test_every_kind_of_problem_is_reported_at_once_with_node_ids() -> None:
    """One definition, many mistakes: all of them in one DefinitionError."""
    raw = {
        "nodes": [
            agent("a"),
            agent("a"),  # duplicate
            agent("inputs"),  # reserved
            agent("b", depends_on=["ghost"]),  # unknown dependency
            {"id": "k", "kind": "teleport"},  # unknown kind
            agent("u", "nobody"),  # unknown agent
            agent("f", fallback={"agent": "nobody2"}),  # unknown fallback agent
            agent("g", fallback={"builtin": "magic"}),  # unknown built-in
            agent("w", when="a >"),  # malformed expression
            {"id": "cond", "kind": "condition", "depends_on": ["a"], "expr": "a.__class__"},
            agent("t", input={"x": "{{ a.value"}),  # malformed template
            agent("na", input={"x": "{{ b.value }}"}),  # b is not an ancestor
            agent("ur", input={"x": "{{ nowhere.value }}"}),  # no such node
            agent("me", input={"x": "{{ me.value }}"}),  # reads itself
            {"id": "tr", "kind": "transform", "depends_on": ["a", "b"], "select": "x"},
            {"id": "vs", "kind": "validate", "depends_on": ["a"], "schema": {"type": "nope"}},
            {"id": "flt", "kind": "transform", "depends_on": ["a"], "filter": "item.x ==="},
        ],
        "output": {"r": "{{ zzz.value }}"},
    }
    problems = problems_of(raw)
    assert found(problems) >= {
        ("duplicate_id", "a"),
        ("reserved_id", "inputs"),
        ("unknown_dependency", "b"),
        ("unknown_kind", "k"),
        ("unknown_agent", "u"),
        ("unknown_agent", "f"),
        ("unknown_builtin", "g"),
        ("invalid_expression", "w"),
        ("invalid_expression", "cond"),
        ("invalid_template", "t"),
        ("not_an_ancestor", "na"),
        ("unknown_reference", "ur"),
        ("invalid_reference", "me"),
        ("missing_source", "tr"),
        ("invalid_schema", "vs"),
        ("invalid_expression", "flt"),
        ("unknown_reference", None),
    }
    by_node = {p.node_id: p for p in problems if p.code == "not_an_ancestor"}
    assert "'b'" in by_node["na"].message and by_node["na"].path == "nodes/11"
    assert all(p.message for p in problems)


def test_cycles_list_their_nodes_and_every_cycle_is_reported() -> None:
    """Two separate cycles and a self-loop: three problems, each naming its nodes."""
    raw = {
        "nodes": [
            agent("a", depends_on=["c"]),
            agent("b", depends_on=["a"]),
            agent("c", depends_on=["b"]),
            agent("x", depends_on=["y"]),
            agent("y", depends_on=["x"]),
            agent("s", depends_on=["s"]),
            agent("ok"),
            agent("after", depends_on=["a", "ok"]),
        ]
    }
    cycles = [p for p in problems_of(raw) if p.code == "cycle"]
    assert [p.nodes for p in cycles] == [("a", "c", "b"), ("x", "y"), ("s",)]
    assert "a -> c -> b -> a" in cycles[0].message
    assert {p.node_id for p in cycles} == {"a", "x", "s"}


@given(digraphs())
@settings(deadline=None)  # timing belongs in bench/, not in a flaky test
def test_reported_cycles_are_real(deps: dict[str, tuple[str, ...]]) -> None:
    """Through the whole validator: every reported cycle follows depends_on edges."""
    raw = {"nodes": [agent(n, "a", depends_on=list(ds)) for n, ds in deps.items()]}
    try:
        compile_workflow(raw, agents={"a"})
    except DefinitionError as exc:
        cycles = [p.nodes for p in exc.problems if p.code == "cycle"]
        assert cycles
        for cycle in cycles:
            for here, there in zip(cycle, cycle[1:] + cycle[:1], strict=True):
                assert there in deps[here]
    else:
        import graphlib

        graphlib.TopologicalSorter(deps).prepare()


def test_reading_an_indirect_ancestor_is_allowed() -> None:
    """A template may read any ancestor, not only a direct dependency."""
    compile_workflow(
        {
            "nodes": [
                agent("a"),
                agent("b", depends_on=["a"]),
                agent("c", depends_on=["b"], input={"x": "{{ a.agent }}"}, when="a.agent == 'a'"),
            ]
        },
        agents=set(AGENTS),
    )


def test_when_and_fallback_input_are_checked_for_ancestry() -> None:
    raw = {
        "nodes": [
            agent("a"),
            agent("b"),
            agent("c", depends_on=["a"], when="b.x", fallback={"agent": "a", "input": "{{ b }}"}),
        ]
    }
    paths = {p.path for p in problems_of(raw) if p.code == "not_an_ancestor"}
    assert paths == {"nodes/2/when", "nodes/2/fallback/input"}


def test_validate_definition_lists_problems_without_raising() -> None:
    defn = parse_definition({"nodes": [agent("a", "zzz")]})
    problems = check_definition(defn, agents={"a"}, kinds=default_kinds())
    assert [(p.code, p.node_id, p.path) for p in problems] == [
        ("unknown_agent", "a", "nodes/0/agent")
    ]
    assert check_definition(parse_definition({"nodes": [agent("a")]}), agents={"a"}) == []


def test_structural_and_semantic_problems_come_together() -> None:
    """An unknown field does not hide a cycle elsewhere."""
    raw = {
        "nodes": [
            agent("a", colour="red"),
            agent("x", depends_on=["y"]),
            agent("y", depends_on=["x"]),
        ]
    }
    assert found(problems_of(raw)) == {("unknown_field", "a"), ("cycle", "x")}


def test_graph_size_limit() -> None:
    raw = {"nodes": [agent(f"n{i}") for i in range(11)]}
    assert [p.code for p in problems_of(raw, max_nodes=10)] == ["too_many_nodes"]


def test_compile_accepts_a_parsed_definition() -> None:
    defn = parse_definition({"nodes": [agent("a"), agent("b", depends_on=["a"])]})
    compiled = compile_workflow(defn, agents={"a", "b"})
    assert compiled.sinks == ("b",)
    assert compiled.nodes["a"].agent == "a"


def test_compiled_workflow_knows_each_nodes_dependents() -> None:
    """dependents reverses depends_on; sinks are the nodes nothing depends on."""
    compiled = compile_workflow(
        {
            "nodes": [
                agent("a"),
                agent("b", depends_on=["a"]),
                agent("c", depends_on=["a", "b"]),
                agent("d"),
            ]
        },
        agents=set(AGENTS),
    )
    assert {n: list(ds) for n, ds in compiled.dependents.items()} == {
        "a": ["b", "c"],
        "b": ["c"],
        "c": [],
        "d": [],
    }
    assert compiled.sinks == ("c", "d")


def test_agent_nodes_without_input_get_the_empty_input_and_their_own_agent() -> None:
    """Plain agent nodes share compiled params per agent; each still calls its own agent."""
    compiled = compile_workflow(
        {"nodes": [agent("x", "a"), agent("y", "b"), agent("z", "a")]}, agents=set(AGENTS)
    )
    nodes = compiled.nodes
    assert [nodes[n].agent for n in "xyz"] == ["a", "b", "a"]
    for n in "xyz":
        params = nodes[n].compiled
        assert params.references == frozenset()
        assert params.input.render({}) == {}  # type: ignore[attr-defined]
        assert params.retry is None  # type: ignore[attr-defined]
    assert nodes["x"].compiled is nodes["z"].compiled


async def test_a_kind_registered_outside_the_engine_validates_and_runs() -> None:
    """The kind registry is open: a custom kind checks its params and runs in a DAG."""
    from agents.registry import AgentRegistry
    from orchestrator.dag.engine import DagEngine
    from orchestrator.dag.templates import Template

    class ShoutNode(NodeDef, tag="shout", frozen=True):
        text: Any

    class Shout(BaseKind):
        name = "shout"
        node_type = ShoutNode

        def compile(self, node: NodeDef) -> Compiled:
            collect = ProblemCollector(node)
            template = collect.template(cast(ShoutNode, node).text, "text")
            collect.raise_if_any()
            assert template is not None
            return ShoutParams(references=template.references, text=template)

        async def run(self, node: NodeDef, ctx: NodeContext) -> Any:
            assert isinstance(ctx.compiled, ShoutParams) and ctx.compiled.text is not None
            return {"value": str(ctx.render(ctx.compiled.text)).upper()}

    from dataclasses import dataclass

    @dataclass(frozen=True, slots=True)
    class ShoutParams(Compiled):
        text: Template | None = None

    kinds = default_kinds()
    kinds.register(Shout())
    with pytest.raises(ValueError, match="already registered"):
        kinds.register(Shout())
    bad = problems_of(
        {"nodes": [{"id": "s", "kind": "shout", "text": "{{ nope.x }}"}]}, kinds=kinds
    )
    assert found(bad) == {("unknown_reference", "s")}
    compiled = compile_workflow(
        {
            "inputs": {"who": "world"},
            "nodes": [{"id": "s", "kind": "shout", "text": "hi {{ inputs.who }}"}],
        },
        agents=set(),
        kinds=kinds,
    )
    state = new_state()

    async def noop(_: Any) -> None:
        return None

    await DagEngine(agents=FakeAgents(), registry=AgentRegistry([]), kinds=kinds).run(
        compiled, state, on_transition=noop
    )
    assert state.result == {"s": {"value": "HI WORLD"}}
