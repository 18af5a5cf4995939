"""Trigger rules: every rule over every combination of dependency outcomes, and the
if/else join they make possible, end to end through the runner."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from agents.errors import AgentHTTPError
from orchestrator.dag.errors import DefinitionError
from orchestrator.dag.plan import plan_workflow
from orchestrator.dag.triggers import Outcome, TriggerRule, default_trigger, unmet_reason
from state.models import NodeStatus, WorkflowStatus

from .conftest import FakeAgents, Harness, agent, compile_def

S, F, K = Outcome.SUCCESS, Outcome.FAILED, Outcome.SKIPPED

# rule -> does it run, as a function of (successes, failures, skips) among the deps
RUNS: dict[TriggerRule, Any] = {
    TriggerRule.ALL_SUCCESS: lambda s, f, k: f == 0 and k == 0,
    TriggerRule.ALL_DONE: lambda s, f, k: True,
    TriggerRule.ONE_SUCCESS: lambda s, f, k: s >= 1,
    TriggerRule.NONE_FAILED: lambda s, f, k: f == 0,
    TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS: lambda s, f, k: f == 0 and s >= 1,
}

CASES = [
    (rule, combo)
    for rule in TriggerRule
    for n in (1, 2, 3)
    for combo in itertools.product((S, F, K), repeat=n)
]


@pytest.mark.parametrize(("rule", "combo"), CASES, ids=lambda v: str(v))
def test_rule_table(rule: TriggerRule, combo: tuple[Outcome, ...]) -> None:
    """Each rule runs exactly on the outcome combinations Airflow's rule of that name does."""
    deps = [f"d{i}" for i in range(len(combo))]
    outcomes = dict(zip(deps, combo, strict=True))
    expected = RUNS[rule](combo.count(S), combo.count(F), combo.count(K))
    reason = unmet_reason(rule, deps, outcomes)
    assert (reason is None) is expected
    if reason is not None:
        assert reason.startswith(f"trigger rule {rule.value!r} not met: ")


def test_defaults_by_dependency_count() -> None:
    assert default_trigger(0) is TriggerRule.ALL_SUCCESS
    assert default_trigger(1) is TriggerRule.ALL_SUCCESS
    assert default_trigger(2) is TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS


OUTCOME_NODE = {
    S: lambda i: agent(f"d{i}"),
    F: lambda i: agent(f"d{i}", on_failure="continue"),
    K: lambda i: agent(f"d{i}", when="False"),
}


@pytest.mark.parametrize(
    ("rule", "combo"),
    [(rule, combo) for rule in TriggerRule for combo in itertools.product((S, F, K), repeat=2)],
    ids=lambda v: str(v),
)
async def test_runner_applies_the_rule(
    harness: Harness, fake: FakeAgents, rule: TriggerRule, combo: tuple[Outcome, ...]
) -> None:
    """Through the runner: real successes, continue-failures and skips decide the join."""
    for i, outcome in enumerate(combo):
        if outcome is F:
            fake.behaviours[f"d{i}"] = AgentHTTPError(agent="a", status=503, attempts=1)
    nodes = [OUTCOME_NODE[o](i) for i, o in enumerate(combo)]
    inputs = {f"d{i}": f"{{{{ d{i} }}}}" for i in range(len(combo))}
    nodes.append(
        agent("join", depends_on=[n["id"] for n in nodes], trigger=rule.value, input=inputs)
    )
    run = await harness.run({"nodes": nodes})
    expected = RUNS[rule](combo.count(S), combo.count(F), combo.count(K))
    join = run.node("join")
    assert join.status is (NodeStatus.COMPLETED if expected else NodeStatus.SKIPPED)
    if expected:
        # Dependencies that did not succeed read as null.
        seen = join.output["echo"]
        for i, outcome in enumerate(combo):
            assert (seen[f"d{i}"] is None) is (outcome is not S)
    else:
        assert join.skip_reason.startswith(f"trigger rule {rule.value!r} not met")


async def test_if_else_join_runs_on_the_branch_that_ran(harness: Harness, fake: FakeAgents) -> None:
    """condition -> yes or no branch -> continue: the join needs no aggregate."""
    fake.behaviours["yes"] = {"answer": "big"}
    fake.behaviours["no"] = {"answer": "small"}
    definition = {
        "nodes": [
            {"id": "check", "kind": "condition", "expr": "inputs.n > 10"},
            agent("yes", depends_on=["check"], when="check.value"),
            agent("no", depends_on=["check"], when="not check.value"),
            {
                "id": "after",
                "kind": "transform",
                "depends_on": ["yes", "no"],
                "source": {"yes": "{{ yes.answer }}", "no": "{{ no.answer }}"},
            },
        ],
        "output": {"after": "{{ after.value }}"},
    }
    run = await harness.run(definition, inputs={"n": 50})
    assert run.statuses()["no"] == "skipped"
    assert run.state.result == {"after": {"yes": "big", "no": None}}
    assert run.state.status is WorkflowStatus.COMPLETED
    run = await harness.run(definition, inputs={"n": 1})
    assert run.state.result == {"after": {"yes": None, "no": "small"}}


async def test_failed_branch_skips_default_join_but_not_all_done(
    harness: Harness, fake: FakeAgents
) -> None:
    """A join with the default rule is skipped after a failed branch; all_done still runs."""
    fake.behaviours["b"] = AgentHTTPError(agent="a", status=503, attempts=1)
    run = await harness.run(
        {
            "options": {"on_failure": "continue"},
            "nodes": [
                agent("a"),
                agent("b"),
                agent("join", depends_on=["a", "b"]),
                agent("cleanup", depends_on=["a", "b"], trigger="all_done"),
            ],
        }
    )
    assert run.node("join").status is NodeStatus.SKIPPED
    assert "dependency 'b' failed" in run.node("join").skip_reason
    assert run.node("cleanup").status is NodeStatus.COMPLETED
    assert run.state.status is WorkflowStatus.DEGRADED


def test_schema_refuses_an_unknown_rule() -> None:
    with pytest.raises(DefinitionError) as info:
        compile_def({"nodes": [agent("a"), agent("b", depends_on=["a"], trigger="sometimes")]})
    assert any("nodes/1/trigger" in (p.path or "") for p in info.value.problems)


def test_validation_refuses_a_rule_without_dependencies() -> None:
    with pytest.raises(DefinitionError) as info:
        compile_def({"nodes": [agent("a", trigger="all_done")]})
    codes = [(p.code, p.node_id, p.path) for p in info.value.problems]
    assert codes == [("trigger_without_dependencies", "a", "nodes/0/trigger")]


def test_plan_shows_every_rule_with_defaults_resolved() -> None:
    compiled = compile_def(
        {
            "nodes": [
                agent("a"),
                agent("b", depends_on=["a"]),
                agent("c", depends_on=["a", "b"]),
                agent("d", depends_on=["c"], trigger="all_done"),
            ]
        }
    )
    assert plan_workflow(compiled).to_dict()["triggers"] == {
        "b": "all_success",
        "c": "none_failed_min_one_success",
        "d": "all_done",
    }
