"""`Template.render_json` (a workflow's output) is `json_value(template.render(...))`: the
same value or error and the same budget spent, with the value's walk skipped when the
render proves it needless (`_Shape`, `sized_within`)."""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from orchestrator.chain import CHAIN_DEFINITION
from orchestrator.dag.budget import Budget, measure
from orchestrator.dag.templates import Template, compile_template
from orchestrator.dag.values import (
    MAX_JSON_DEPTH,
    UnstorableValue,
    ValueSizes,
    json_value,
    sized_within,
)
from tests.strategies import json_values

_NAMES = ("a", "b", "0")

# What orjson yields, nested a few levels (a step's output, kept or adopted).
_json = json_values(st.sampled_from(_NAMES))


def _unkept_containers(children: Any) -> Any:
    """Lists, tuples and dicts with int keys among str ones: what only the walk converts."""
    return (
        st.lists(children, max_size=3)
        | st.lists(children, max_size=2).map(tuple)
        | st.dictionaries(st.sampled_from(_NAMES) | st.integers(0, 2), children, max_size=3)
    )


# What no store holds as it is: kept (converted), or an input nobody kept (which the
# walk converts or refuses).
_keepable = st.recursive(
    st.none()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=4),
    _unkept_containers,
    max_leaves=10,
)
_raw = st.recursive(
    st.none() | st.integers() | st.floats() | st.text(max_size=4),
    _unkept_containers,
    max_leaves=10,
)
_paths = st.tuples(
    st.sampled_from(["s", "k", "u", "missing"]),
    st.lists(st.sampled_from(_NAMES), max_size=2),
).map(lambda p: ".".join([p[0], *p[1]]))
_holes = _paths.map(lambda path: "{{ " + path + " }}") | _paths.map(
    lambda path: "<{{ " + path + " }}>"
)
# Constants beyond what a store holds (ints past 64 bits, NaN) and nesting, with holes.
_templates = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=3) | _holes,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text("kl", max_size=2), children, max_size=3)
    ),
    max_leaves=8,
)


def _outcome(make: Any) -> tuple[str, Any]:
    try:
        return "value", orjson.dumps(make())
    except Exception as exc:  # the same error, message included
        return "error", f"{type(exc).__name__}: {exc}"


def _sizes(adopted: Any, kept: Any, *, adopt: bool) -> tuple[ValueSizes, dict[str, Any]]:
    sizes = ValueSizes(min_size=0)
    s = sizes.adopt(adopted) if adopt else sizes.keep(adopted, max_bytes=2**30)
    return sizes, {"s": s, "k": sizes.keep(kept, max_bytes=2**30)}


@settings(max_examples=500, deadline=None)
@given(
    adopted=_json,
    kept=_keepable,
    raw=_raw,
    template=_templates,
    adopt=st.booleans(),
    ops=st.integers(0, 40),
    nbytes=st.integers(0, 400) | st.just(10**6),
    max_bytes=st.integers(0, 300) | st.just(10**6),
    missing=st.sampled_from(["error", "null"]),
)
@example(
    adopted={"a": [1.5]},
    kept=[2**70],
    raw=(math.nan,),
    template={"k": ["{{ s.a }}", 2**70]},
    adopt=True,
    ops=40,
    nbytes=10**6,
    max_bytes=10**6,
    missing="null",
)
def test_render_json_is_json_value_of_render(
    adopted: Any,
    kept: Any,
    raw: Any,
    template: Any,
    adopt: bool,
    ops: int,
    nbytes: int,
    max_bytes: int,
    missing: Any,
) -> None:
    try:
        compiled = compile_template(template)
    except ValueError:
        return  # not a template (a NaN constant is one: compile takes any float)
    decoded = orjson.loads(orjson.dumps(adopted))
    slow_sizes, slow_scope = _sizes(decoded, kept, adopt=adopt)
    fast_sizes, fast_scope = _sizes(decoded, kept, adopt=adopt)
    slow_scope["u"] = fast_scope["u"] = raw
    slow_budget, fast_budget = Budget(ops=ops, nbytes=nbytes), Budget(ops=ops, nbytes=nbytes)

    def slow() -> Any:
        rendered = compiled.render(
            slow_scope, missing=missing, budget=slow_budget, sizes=slow_sizes
        )
        return json_value(rendered, max_bytes=max_bytes, known=slow_sizes.entries)

    def fast() -> Any:
        return compiled.render_json(
            fast_scope, missing=missing, budget=fast_budget, sizes=fast_sizes, max_bytes=max_bytes
        )

    assert _outcome(fast) == _outcome(slow)
    assert (fast_budget.ops_left, fast_budget.bytes_left) == (
        slow_budget.ops_left,
        slow_budget.bytes_left,
    )
    assert [e[1:] for e in fast_sizes.entries.values()] == [
        e[1:] for e in slow_sizes.entries.values()
    ]


def _chain_scope() -> tuple[dict[str, Any], ValueSizes]:
    sizes = ValueSizes()
    answers = {
        "nlp": {"intent": {"metric": "revenue", "group_by": ["region"], "limit": None}},
        "data": {"columns": ["region", "avg_revenue"], "rows": [{"region": "EU", "n": 1.5}] * 3},
        "viz": {"spec": {"mark": "bar", "data": {"values": [{"x": 1}, {"x": 2}]}}},
    }
    scope: dict[str, Any] = {"inputs": {"query": "q"}}
    for name, answer in answers.items():
        scope[name] = sizes.adopt(orjson.loads(orjson.dumps(answer)))
    return scope, sizes


def test_the_chain_output_is_proved_plain_without_a_walk() -> None:
    """The built-in chain's output takes the fast path: every value it places is a step
    output's part known once rendered, at the depth the template puts it, so the size is
    had without a walk; and it is the walk's own, to the byte."""
    template = compile_template(CHAIN_DEFINITION["output"])
    scope, sizes = _chain_scope()
    budget = Budget(ops=10**6, nbytes=10**7)
    result = template.render_json(
        scope, missing="null", budget=budget, sizes=sizes, max_bytes=10**6
    )
    values = [result["intent"], result["data"]["columns"], result["data"]["rows"], result["chart"]]
    # {"intent": _, "data": {"columns": _, "rows": _}, "chart": _}: keys, brackets, commas.
    structure = 2 + (6 + 3 + 1) + (4 + 3 + 1) + (5 + 3 + 1) + 2 + (7 + 3 + 1) + (4 + 3 + 1)
    size = sized_within(values, (1, 2, 2, 1), sizes.entries, MAX_JSON_DEPTH)
    assert size is not None
    assert size + structure == measure(result, 10**9)
    # One byte less than it takes: refused as the walk refuses it.
    with pytest.raises(UnstorableValue) as refused:
        template.render_json(
            scope,
            missing="null",
            budget=Budget(ops=10**6, nbytes=10**7),
            sizes=sizes,
            max_bytes=size + structure - 1,
        )
    assert refused.value.code == "value_too_large"


def _nested(levels: int, leaf: Any) -> Any:
    for _ in range(levels):
        leaf = [leaf]
    return leaf


@pytest.mark.parametrize("template_levels", [0, 1, 30, 63, 64])
@pytest.mark.parametrize("value_levels", [0, 1, 33, 64])
def test_nesting_beyond_the_limit_is_refused_as_the_walk_refuses_it(
    template_levels: int, value_levels: int
) -> None:
    """A known value placed deep in the template's own nesting: kept when the whole nests
    within MAX_JSON_DEPTH, refused (nesting_too_deep) past it, exactly as the walk does."""
    sizes = ValueSizes(min_size=0)
    value = sizes.keep(_nested(value_levels, 1), max_bytes=10**6)
    template: Template = compile_template(_nested(template_levels, "{{ v }}"))

    def slow() -> Any:
        rendered = template.render(
            {"v": value}, budget=Budget(ops=10**6, nbytes=10**7), sizes=sizes
        )
        return json_value(rendered, max_bytes=10**6, known=sizes.entries)

    def fast() -> Any:
        return template.render_json(
            {"v": value}, budget=Budget(ops=10**6, nbytes=10**7), sizes=sizes, max_bytes=10**6
        )

    assert _outcome(fast) == _outcome(slow)
    expected = "value" if template_levels + value_levels <= MAX_JSON_DEPTH else "error"
    assert _outcome(fast)[0] == expected


def test_a_template_nested_past_the_limit_itself_is_refused_as_the_walk_refuses_it() -> None:
    template = compile_template(_nested(MAX_JSON_DEPTH, []))  # 65 levels of lists
    sizes = ValueSizes()
    with pytest.raises(UnstorableValue) as refused:
        template.render_json(
            {"v": 1}, budget=Budget(ops=10**6, nbytes=10**7), sizes=sizes, max_bytes=10**6
        )
    assert refused.value.code == "nesting_too_deep"
