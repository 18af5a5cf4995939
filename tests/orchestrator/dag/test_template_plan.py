"""The planned render (priced first, charged once) behaves exactly as the general one.

`Template.render` tries the plan and falls back to the general render (`_render`,
charging piece by piece) whenever the plan cannot be sure; these properties compare
the two on random templates, scopes and budgets: the same value (or the same error),
and the same budget left, in the node and in the workflow.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.dag.budget import Budget, EvaluationStopped, Limits, NeedsOffload
from orchestrator.dag.templates import _Meter, _render, compile_template
from orchestrator.dag.values import ValueSizes

_NAMES = ("a", "b", "c", "0", "1")

_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(_NAMES), children, max_size=4)
    ),
    max_leaves=20,
)

_paths = st.lists(st.sampled_from(_NAMES), min_size=1, max_size=2).map(
    lambda segments: ".".join(["s", *segments])
)
_strings = st.one_of(
    st.text(alphabet="xy {", max_size=6).filter(lambda text: "{{" not in text),
    _paths.map(lambda path: "{{ " + path + " }}"),
    st.tuples(st.text(alphabet="xy ", max_size=4), _paths, st.text(alphabet="z }", max_size=4)).map(
        lambda t: f"{t[0]}{{{{{t[1]}}}}}{t[2]}"
    ),
)
_templates = st.recursive(
    st.none() | st.booleans() | st.integers() | _strings,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(alphabet="kl", max_size=2), children, max_size=4)
    ),
    max_leaves=12,
)


def _budgets(
    ops: int, nbytes: int, stopped: bool = False, inline: tuple[int, int] | None = None
) -> tuple[Budget, Budget]:
    """(a node's budget, the workflow's it draws on)."""
    workflow = Budget.for_workflow(Limits(workflow_ops=ops * 2, workflow_bytes=nbytes + 50))
    budget = workflow.child(Limits(node_ops=ops, node_bytes=nbytes))
    if stopped:
        budget.stop()
    if inline is not None:
        budget.inline(*inline)
    return budget, workflow


def _left(budget: Budget) -> tuple[int, int]:
    return budget.ops_left, budget.bytes_left


def _outcome(render: Any) -> tuple[str, Any]:
    try:
        return "value", render()
    except (EvaluationStopped, NeedsOffload) as exc:
        return "error", type(exc).__name__
    except Exception as exc:  # every error must be the same, message included
        return "error", f"{type(exc).__name__}: {exc}"


@settings(max_examples=400, deadline=None)
@given(
    template=_templates,
    value=st.fixed_dictionaries({name: _json for name in _NAMES}) | _json,
    missing=st.sampled_from(["error", "null"]),
    ops=st.integers(min_value=0, max_value=40),
    nbytes=st.integers(min_value=0, max_value=400),
    stopped=st.booleans(),
    inline=st.none() | st.tuples(st.integers(0, 30), st.integers(0, 300)),
    remember=st.booleans(),
)
def test_the_planned_render_matches_the_general_one(
    template: Any,
    value: Any,
    missing: Any,
    ops: int,
    nbytes: int,
    stopped: bool,
    inline: tuple[int, int] | None,
    remember: bool,
) -> None:
    """Same value or error, same budget left (node and workflow), for any template."""
    scope = {"s": value, "t": [value, value]}
    known = None
    if remember:
        sizes = ValueSizes(min_size=0)
        sizes.keep(value, max_bytes=2**30)
        known = sizes.entries
    compiled = compile_template(template)
    (fast, fast_workflow), (slow, slow_workflow) = (
        _budgets(ops, nbytes, stopped, inline) for _ in range(2)
    )
    # Twice: the first render makes the plan, the second uses the one kept.
    for _ in range(2):
        got = _outcome(lambda: compiled.render(scope, missing=missing, budget=fast, sizes=known))
        want = _outcome(lambda: _render(compiled._compiled, scope, missing, _Meter(slow, known)))
        assert got == want
        assert _left(fast) == _left(slow)
        assert _left(fast_workflow) == _left(slow_workflow)


_ROWS = [{"region": f"r{i}", "total": i * 1000} for i in range(40)]
_SCOPE = {"d": {"rows": _ROWS, "n": 3, "name": "eu", "flag": True, "none": None}}


@pytest.mark.parametrize(
    "template",
    [
        {"q": "{{ d.name }}"},
        {"q": "region {{ d.name }} of {{ d.n }}, rows {{ d.rows.1 }} ({{ d.flag }})"},
        {"rows": "{{ d.rows }}", "again": ["{{ d.rows }}", "{{ d.rows.0 }}"], "n": 1},
        {"a": {"b": {"c": ["x", None, 2.5, "{{ d.none }}"]}}, "e": [], "f": {}},
        "text {{ d.rows }} text",
        "{{ d.rows.39.total }}",
        [],
        "plain",
    ],
)
@pytest.mark.parametrize("limit", [10**9, 5_000, 700, 60, 0])
def test_the_planned_render_matches_the_general_one_on_examples(template: Any, limit: int) -> None:
    """Big values (charged by size), text around placeholders, budgets from ample to none."""
    compiled = compile_template(template)
    (fast, fast_workflow), (slow, slow_workflow) = (_budgets(limit, limit) for _ in range(2))
    got = _outcome(lambda: compiled.render(_SCOPE, budget=fast))
    want = _outcome(lambda: _render(compiled._compiled, _SCOPE, "error", _Meter(slow)))
    assert got == want
    assert _left(fast) == _left(slow)
    assert _left(fast_workflow) == _left(slow_workflow)


def test_a_planned_render_builds_new_containers_each_time() -> None:
    """The template's own dicts and lists are new objects on every render, as before."""
    template = compile_template({"a": {"b": [1, "{{ s }}"]}, "c": "x"})
    first = template.render({"s": 1})
    second = template.render({"s": 1})
    assert first == second == {"a": {"b": [1, 1]}, "c": "x"}
    assert first is not second and first["a"] is not second["a"]
    assert first["a"]["b"] is not second["a"]["b"]


def test_a_whole_placeholder_is_the_scope_value_itself() -> None:
    """A whole-value placeholder is not copied by the plan either."""
    rows = [{"region": "eu"}]
    assert compile_template({"rows": "{{ d.rows }}"}).render({"d": {"rows": rows}})["rows"] is rows


@pytest.mark.parametrize(
    "template",
    [
        {"a": "{{ s }}", "n": 3, "b": "{{ t.1 }}", "c": None, "d": "x"},
        {"n": 3, "a": "{{ s }}"},
        {"a": "{{ s }}", "b": "{{ t }}"},
    ],
)
def test_a_flat_object_keeps_its_key_order_and_is_new_each_time(template: Any) -> None:
    """Objects of placeholders and constants only (built from a copy of the constants,
    or zipped): the template's key order, a new dict on every render, values as is."""
    scope = {"s": {"x": [1]}, "t": ["u", "v"]}
    compiled = compile_template(template)
    first = compiled.render(scope)
    second = compiled.render(scope)
    want = _render(compiled._compiled, scope, "error", _Meter(Budget(ops=99, nbytes=999)))
    assert first == second == want
    assert list(first) == list(template)
    assert first is not second
    if "a" in template:
        assert first["a"] is scope["s"]
