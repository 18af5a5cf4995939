"""The value boundary: one walk measures and checks a value; kept sizes are charged again,
never trusted blindly."""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from orchestrator.dag.budget import Budget, BudgetExceeded, measure
from orchestrator.dag.templates import compile_template
from orchestrator.dag.values import (
    UnstorableValue,
    ValueSizes,
    _convert,
    decoded_within,
    json_depth,
    json_value,
)


def size_of(sizes: ValueSizes, value: Any) -> int | None:
    """The remembered size of `value` itself (an equal copy is another object)."""
    entry = sizes.entries.get(id(value))
    return None if entry is None or entry[0] is not value else entry[1]


# What an agent's answer decodes to: orjson's own output types.
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
JSON = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=40,
)


@settings(max_examples=200, deadline=None)
@given(JSON)
def test_plain_json_is_kept_as_it_is_and_sized_as_measure_sizes_it(value: Any) -> None:
    """An orjson-decoded value is already plain: no copy, and the one walk that checks it
    gives the size `measure` gives (so every budget charges the same as before)."""
    decoded = orjson.loads(orjson.dumps(value))
    assert json_value(decoded) is decoded
    sizes = ValueSizes(min_size=0)
    assert sizes.keep(decoded, max_bytes=10**9) is decoded
    if isinstance(decoded, dict | list):
        assert size_of(sizes, decoded) == measure(decoded, 10**9)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ((1, 2), [1, 2]),
        ({"a": {3, 1, 2}}, {"a": [1, 2, 3]}),
        ({1: "x"}, {"1": "x"}),
        ([2**64], [float(2**64)]),
    ],
)
def test_values_that_are_not_plain_json_are_converted_into_new_ones(
    value: Any, expected: Any
) -> None:
    sizes = ValueSizes(min_size=0)
    converted = sizes.keep(value, max_bytes=10**6)
    assert converted == expected and converted is not value
    assert len(sizes) == 0  # nothing of a converted value is remembered: it is not kept


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ({"a": [1, math.nan]}, "value_out_of_range"),
        ([[2**2000]], "value_out_of_range"),
        ({"a": object()}, "not_json"),
        ({"a": [[[[0]]]]}, "nesting_too_deep"),
    ],
)
def test_the_walk_still_refuses_what_no_store_can_hold(value: Any, code: str) -> None:
    with pytest.raises(UnstorableValue) as caught:
        ValueSizes().keep(value, max_bytes=10**6, max_depth=4)
    assert caught.value.code == code


def test_a_value_over_the_cap_is_refused_before_anything_is_kept() -> None:
    sizes = ValueSizes(min_size=0)
    with pytest.raises(UnstorableValue) as caught:
        sizes.keep({"rows": ["x" * 100] * 100}, max_bytes=5_000)
    assert caught.value.code == "value_too_large"
    assert len(sizes) == 0


def test_kept_parts_reused_by_a_later_value_are_counted_each_time_they_occur() -> None:
    """`[a, a]` node after node doubles once written out: a remembered `a` is not walked
    again, but its size is still added for every reference, so the doubling stops at
    the cap exactly as without the memory."""
    sizes = ValueSizes(min_size=0)
    value: Any = sizes.keep(["abc"] * 10, max_bytes=10**6)
    for _ in range(30):
        try:
            value = sizes.keep([value, value], max_bytes=256 * 1024)
        except UnstorableValue as exc:
            assert exc.code == "value_too_large"
            break
    else:
        pytest.fail("the doubling value was never refused")
    assert measure(value, 10**9) <= 256 * 1024


def test_a_kept_part_nested_deeper_by_a_later_value_is_still_refused() -> None:
    """A remembered container carries its height: placed deeper by the next value, the
    whole is refused when it nests past the limit, though the part was not walked."""
    sizes = ValueSizes(min_size=0)
    part = sizes.keep([[[0]]], max_bytes=10**6, max_depth=4)  # height 3
    assert sizes.keep({"a": part}, max_bytes=10**6, max_depth=4) is not None  # depth 4: fits
    with pytest.raises(UnstorableValue) as caught:
        sizes.keep({"a": [part]}, max_bytes=10**6, max_depth=4)
    assert caught.value.code == "nesting_too_deep"


def test_remembered_entries_are_bounded_outermost_first() -> None:
    sizes = ValueSizes(min_size=0, max_entries=3)
    rows = [{"region": f"r{i}", "v": i} for i in range(50)]
    document = {"rows": rows}
    sizes.keep(document, max_bytes=10**6)
    assert len(sizes) == 3
    assert size_of(sizes, document) == measure(document, 10**9)
    assert size_of(sizes, rows) == measure(rows, 10**9)
    small = ValueSizes(min_size=10**6)
    small.keep(document, max_bytes=10**7)
    assert len(small) == 0  # below min_size: cheaper to walk again than to keep


def test_a_size_is_only_ever_used_for_the_very_object_it_was_measured_on() -> None:
    sizes = ValueSizes(min_size=0)
    kept = sizes.keep({"rows": ["x" * 50] * 10}, max_bytes=10**6)
    assert size_of(sizes, dict(kept)) is None  # an equal copy is a stranger
    assert size_of(sizes, kept) == measure(kept, 10**9)


def test_a_template_reading_a_kept_value_is_charged_its_full_size_every_time() -> None:
    """Cached accounting still refuses: the size comes from memory, the charge does not
    shrink, so repeating a big kept value runs out of budget as it did before."""
    sizes = ValueSizes(min_size=0)
    big = sizes.keep({"rows": [{"k": "v" * 100}] * 100}, max_bytes=10**6)
    scope = {"data": big}
    template = compile_template({"copies": ["{{ data.rows }}"] * 20})
    size = measure(big["rows"], 10**9)
    budget = Budget(ops=10**6, nbytes=size * 20 + 500)
    template.render(scope, budget=budget, sizes=sizes.entries)
    spent = size * 20 + 500 - budget.bytes_left
    assert spent >= size * 20
    with pytest.raises(BudgetExceeded):
        template.render(scope, budget=Budget(ops=10**6, nbytes=size * 19), sizes=sizes.entries)


# Anything a node kind might hand over: plain JSON, and what is not (tuples, sets, int
# keys, NaN, huge ints, foreign objects, str subclasses), nested and shared.
class _Text(str):
    pass


_ANY_SCALARS = (
    _SCALARS
    | st.floats()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.just(2**2000)
    | st.builds(_Text, st.text(max_size=3))
    | st.builds(object)
)
ANYTHING = st.recursive(
    _ANY_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=3).map(tuple)
        | st.frozensets(st.integers(0, 9), max_size=3)
        | st.dictionaries(st.text(max_size=4) | st.integers(0, 3), inner, max_size=4)
        | inner.map(lambda shared: [shared, shared])
    ),
    max_leaves=30,
)


def _slow_json_value(value: Any, max_depth: int, max_bytes: int) -> Any:
    """The general path alone: measure, then convert (what every value went through
    before the one-walk fast path)."""
    if measure(value, max_bytes) > max_bytes:
        raise UnstorableValue("too large", code="value_too_large")
    return _convert(value, max_depth, 0)


def _outcome(make: Any) -> tuple[str, Any]:
    try:
        return "value", make()
    except UnstorableValue as exc:
        return "error", exc.code


@settings(max_examples=400, deadline=None)
@given(ANYTHING, st.integers(1, 6), st.integers(0, 400) | st.just(10**6))
@example([1.5, math.nan], 4, 10**6)
@example({"a": [None, True, math.inf]}, 4, 10**6)
@example({"a": [[2**64], (1,)]}, 4, 10**6)
def test_the_one_walk_gives_what_measure_and_convert_give(
    value: Any, max_depth: int, max_bytes: int
) -> None:
    """Whatever the value, the fast walk keeps, converts or refuses it exactly as the
    general path does; what it remembers of a kept value is each container's size as
    `measure` counts it and its height as `json_depth` counts it."""
    sizes = ValueSizes(min_size=0)
    fast = _outcome(lambda: sizes.keep(value, max_bytes=max_bytes, max_depth=max_depth))
    slow = _outcome(lambda: _slow_json_value(value, max_depth, max_bytes))
    assert fast[0] == slow[0]
    if fast[0] == "error":
        assert fast[1] == slow[1]
        return
    assert orjson.dumps(fast[1]) == orjson.dumps(slow[1])
    for container, size, height in sizes.entries.values():
        assert size == measure(container, 10**9)
        assert height == json_depth(container)


# Bodies as an agent may write them: any JSON, compact or indented, and the shapes that
# cost the walk most per byte (short floats, null, booleans, long ints, empty containers).
_DENSE = st.lists(
    st.sampled_from([b"1e5", b"0.5", b"null", b"true", b"9999999999", b"[]", b"{}", b'""']),
    min_size=1,
    max_size=40,
).map(lambda items: b"[" + b",".join(items) + b"]")


@settings(max_examples=300, deadline=None)
@given(
    JSON.map(orjson.dumps)
    | JSON.map(lambda v: orjson.dumps(v, option=orjson.OPT_INDENT_2))
    | _DENSE
    | st.integers(1, 80).map(lambda n: b"[" * n + b"]" * n)
)
def test_a_decoded_body_within_its_bounds_is_kept_as_it_is(body: bytes) -> None:
    """decoded_within's bounds hold: the walk's size is at most three times the body, its
    depth at most the body's brackets; with the tightest max_bytes decoded_within allows,
    the walk keeps the value as it is."""
    value = orjson.loads(body)
    brackets = body.count(b"[") + body.count(b"{")
    assert measure(value, 10**9) <= 3 * len(body)
    assert json_depth(value) <= brackets
    if decoded_within(body, max_bytes=3 * len(body), max_depth=64):
        assert json_value(value, max_bytes=3 * len(body)) is value
    else:
        assert brackets > 64
