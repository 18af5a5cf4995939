"""The plan: levels for display, dependencies, critical path and parallelism."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given, settings

from orchestrator.dag.errors import DefinitionError
from orchestrator.dag.model import DEFAULT_MAX_PARALLEL
from orchestrator.dag.parse import parse_definition
from orchestrator.dag.plan import plan_workflow

from .conftest import agent, compile_def
from .strategies import dags
from .test_engine import EXAMPLE


def definition(deps: dict[str, tuple[str, ...]], **options: Any) -> dict[str, Any]:
    return {
        "options": options,
        "nodes": [agent(n, "a", depends_on=list(ds)) for n, ds in deps.items()],
    }


def test_example_plan() -> None:
    """The example chain: four levels, the whole chain is critical, one at a time."""
    plan = plan_workflow(compile_def(EXAMPLE))
    assert plan.levels == [["nlp"], ["data"], ["big"], ["viz"]]
    assert plan.dependencies == {
        "nlp": [],
        "data": ["nlp"],
        "big": ["data"],
        "viz": ["data", "big"],
    }
    assert plan.critical_path == ["nlp", "data", "big", "viz"]
    assert (plan.critical_path_length, plan.critical_path_unit) == (4, "nodes")
    assert plan.max_parallelism == 1
    json.dumps(plan.to_dict())


def test_estimates_weigh_the_critical_path() -> None:
    """With estimate_ms the heavier branch is critical, even if it has fewer nodes."""
    raw = {
        "nodes": [
            agent("a", estimate_ms=10),
            agent("b", depends_on=["a"], estimate_ms=500),
            agent("c1", depends_on=["a"], estimate_ms=20),
            agent("c2", depends_on=["c1"], estimate_ms=20),
            agent("d", depends_on=["b", "c2"], estimate_ms=5),
        ]
    }
    plan = plan_workflow(compile_def(raw))
    assert plan.critical_path == ["a", "b", "d"]
    assert (plan.critical_path_length, plan.critical_path_unit) == (515, "ms")
    unweighted = copy.deepcopy(raw)
    for node in unweighted["nodes"]:
        del node["estimate_ms"]
    assert plan_workflow(compile_def(unweighted)).critical_path == ["a", "c1", "c2", "d"]


def test_max_parallelism_is_the_widest_level_capped_by_max_parallel() -> None:
    deps = {f"n{i}": () for i in range(8)} | {"z": tuple(f"n{i}" for i in range(8))}
    assert plan_workflow(compile_def(definition(deps))).max_parallelism == 8
    assert plan_workflow(compile_def(definition(deps, max_parallel=3))).max_parallelism == 3


def test_plan_of_a_bare_definition_with_a_cycle_raises() -> None:
    defn = parse_definition(definition({"a": ("b",), "b": ("a",)}))
    with pytest.raises(DefinitionError) as info:
        plan_workflow(defn)
    assert info.value.problems[0].nodes == ("a", "b")


@given(dags(max_nodes=25))
@settings(deadline=None)  # timing belongs in bench/, not in a flaky test
def test_plan_levels_are_a_valid_layering(deps: dict[str, tuple[str, ...]]) -> None:
    """Parsed, compiled and planned: each node once, every dependency on an earlier level."""
    plan = plan_workflow(compile_def(definition(deps)))
    level_of = {n: i for i, level in enumerate(plan.levels) for n in level}
    assert sorted(level_of) == sorted(deps)
    for node, ds in deps.items():
        assert all(level_of[d] < level_of[node] for d in ds)
        assert sorted(plan.dependencies[node]) == sorted(ds)
    for earlier, later in zip(plan.critical_path, plan.critical_path[1:], strict=False):
        assert earlier in deps[later]
    assert plan.critical_path_length == len(plan.levels)
    assert plan.max_parallelism == min(
        DEFAULT_MAX_PARALLEL, max(len(level) for level in plan.levels)
    )
    assert plan_workflow(parse_definition(definition(deps))) == plan
