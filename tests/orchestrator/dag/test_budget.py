"""Evaluation budgets: charged as evaluation goes, per node and per workflow; off-loop work."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.dag.budget import (
    Budget,
    BudgetExceeded,
    EvaluationStopped,
    Limits,
    NeedsOffload,
    measure,
)
from orchestrator.dag.errors import NodeError
from orchestrator.dag.expressions import compile_expression
from orchestrator.dag.kinds import NodeContext
from orchestrator.dag.kinds.transform import TransformNode
from orchestrator.dag.templates import compile_template
from orchestrator.dag.values import UnstorableValue, json_depth, json_value


def test_a_node_budget_draws_on_its_workflow_budget() -> None:
    workflow = Budget(ops=100, nbytes=1_000, scope="workflow")
    first, second = (Budget(ops=80, nbytes=800, parent=workflow) for _ in range(2))
    first.spend(60, 500)
    with pytest.raises(BudgetExceeded) as caught:
        second.spend(60, 100)  # fits the node, not what the workflow has left
    assert (caught.value.scope, caught.value.resource, caught.value.limit) == (
        "workflow",
        "operations",
        100,
    )
    with pytest.raises(BudgetExceeded) as caught:
        first.spend(0, 400)
    assert (caught.value.scope, caught.value.resource) == ("node", "bytes")


def test_the_inline_slice_asks_for_offloading_and_a_stop_ends_the_work() -> None:
    budget = Budget(ops=1_000, nbytes=1_000)
    budget.inline(10, 10)
    budget.spend(10)
    with pytest.raises(NeedsOffload):
        budget.spend(1)
    budget.offloaded()
    budget.spend(100)
    budget.stop()
    with pytest.raises(EvaluationStopped):
        budget.spend(1)


def _chain(
    ops: int, nbytes: int, stopped: str, inline: tuple[int, int] | None, on: str
) -> tuple[Budget, Budget]:
    """(a node's budget, the workflow's it draws on); `stopped` / `inline` on the
    budget `on` names ("node", "workflow" or neither)."""
    workflow = Budget(ops=ops + 5, nbytes=nbytes - 5, scope="workflow")
    node = Budget(ops=ops, nbytes=nbytes, parent=workflow)
    for name, budget in (("node", node), ("workflow", workflow)):
        if stopped == name:
            budget.stop()
        if inline is not None and on == name:
            budget.inline(*inline)
    return node, workflow


def _state(budget: Budget) -> tuple[int, int]:
    return budget.ops_left, budget.bytes_left


@settings(max_examples=300, deadline=None)
@given(
    ops=st.integers(0, 30),
    nbytes=st.integers(5, 300),
    spend=st.tuples(st.integers(0, 40), st.integers(0, 320)),
    stopped=st.sampled_from(["", "node", "workflow"]),
    inline=st.none() | st.tuples(st.integers(0, 30), st.integers(0, 300)),
    on=st.sampled_from(["node", "workflow"]),
)
def test_spend_if_affords_spends_what_spend_would_or_nothing(
    ops: int,
    nbytes: int,
    spend: tuple[int, int],
    stopped: str,
    inline: tuple[int, int] | None,
    on: str,
) -> None:
    """It spends exactly when `spend` raises nothing (node, workflow, inline slice,
    stop), and then leaves every budget as `spend` does; otherwise nothing changes."""
    node, workflow = _chain(ops, nbytes, stopped, inline, on)
    twin, twin_workflow = _chain(ops, nbytes, stopped, inline, on)
    try:
        twin.spend(*spend)
    except (BudgetExceeded, EvaluationStopped, NeedsOffload):
        fits = False
    else:
        fits = True
    before = _state(node), _state(workflow)
    assert node.spend_if_affords(*spend) is fits
    if fits:
        assert (_state(node), _state(workflow)) == (_state(twin), _state(twin_workflow))
        # The inline slice too: what is left of it is what `spend` left (it runs out
        # after as many more charges on both).
        for step in ((1, 0), (0, 1), (1, 7)):
            assert _charges_left(node, step) == _charges_left(twin, step)
    else:
        assert (_state(node), _state(workflow)) == before


def _charges_left(budget: Budget, step: tuple[int, int]) -> int:
    count = 0
    while count < 400 and budget.spend_if_affords(*step):
        count += 1
    return count


def test_measure_counts_shared_values_each_time_but_walks_them_once() -> None:
    row = {"k": "v" * 100}
    rows = [row] * 1_000
    assert measure(rows, 10**9) > 100_000
    assert measure(rows, 1_000) == 1_001  # stops as soon as it is over


@pytest.mark.parametrize(
    "source",
    [
        "len(str(rows)) > 0",  # str() of a big value: sized before it is built
        "rows == rows2",  # comparing two big lists walks them
        "sorted(nums)[0]",  # n log n
        "sum(nums) + sum(nums) + sum(nums)",
    ],
)
def test_expressions_are_charged_by_the_data_they_walk(source: str) -> None:
    scope: dict[str, Any] = {
        "rows": [{"a": "x" * 50}] * 2_000,
        "rows2": [{"a": "x" * 50}] * 2_000,
        "nums": list(range(20_000)),
    }
    with pytest.raises(BudgetExceeded):
        compile_expression(source).evaluate(scope, Budget(ops=20_000, nbytes=20_000))
    # The same expression with room to spare evaluates normally.
    compile_expression(source).evaluate(scope, Budget(ops=10**8, nbytes=10**8))


def test_a_template_is_charged_for_every_copy_of_a_value() -> None:
    template = compile_template({"a": ["{{ big }}"] * 50, "b": "{{ big }}-{{ big }}"})
    scope = {"big": "x" * 10_000}
    with pytest.raises(BudgetExceeded):
        template.render(scope, budget=Budget(ops=10**6, nbytes=400_000))
    rendered = template.render(scope, budget=Budget(ops=10**6, nbytes=10**6))
    assert len(rendered["a"]) == 50


def test_json_value_mirrors_what_orjson_reads_from_a_request() -> None:
    assert json_value({"n": 2**64 - 1, "m": -(2**63)}) == {"n": 2**64 - 1, "m": -(2**63)}
    assert json_value({"n": 2**64}) == {"n": float(2**64)}
    assert json_value((1, {2, 1})) == [1, [1, 2]]
    for bad, code in [
        (2**2000, "value_out_of_range"),
        (float("inf"), "value_out_of_range"),
        (object(), "not_json"),
        ({"a": [[[[0]]]]}, "nesting_too_deep"),
    ]:
        with pytest.raises(UnstorableValue) as caught:
            json_value(bad, max_depth=4)
        assert caught.value.code == code
    assert json_depth({"a": [{"b": 1}]}) == 3


def _context(**limits: Any) -> NodeContext:
    return NodeContext(
        workflow_id="w",
        node=TransformNode(id="n", select="x"),
        compiled=None,  # type: ignore[arg-type]
        scope={},
        unavailable=set(),
        caller=None,  # type: ignore[arg-type]
        registry=None,  # type: ignore[arg-type]
        limits=Limits(**limits),
        budget=Budget(ops=10**15, nbytes=10**15),
    )


async def test_small_work_runs_on_the_loop_and_big_work_in_a_thread() -> None:
    ctx = _context(inline_ops=100)
    threads: list[str] = []

    def work(ops: int) -> int:
        threads.append(threading.current_thread().name)
        ctx.budget.spend(ops)
        return ops

    assert await ctx.compute(lambda: work(10)) == 10
    assert await ctx.compute(lambda: work(1_000)) == 1_000
    main = threading.current_thread().name
    assert threads[0] == main  # fitted the slice
    assert threads[1] == main and threads[2] != main  # redone off the loop


async def test_off_loop_work_is_bounded_in_time_and_stopped_when_abandoned() -> None:
    ctx = _context(inline_ops=1, offload_timeout_s=0.05)
    stopped = threading.Event()

    def spin() -> None:
        try:
            while True:  # would run forever without the budget's stop
                ctx.budget.spend(1)
        except (NeedsOffload, EvaluationStopped) as exc:
            if isinstance(exc, EvaluationStopped):
                stopped.set()
            raise

    with pytest.raises(NodeError) as caught:
        await ctx.compute(spin)
    assert caught.value.code == "evaluation_timeout"
    assert await asyncio.to_thread(stopped.wait, 10)
