"""An adopted value (kept unwalked, its parts measured when a template first reads them)
is charged exactly as a kept one (walked whole when kept).

`ValueSizes.adopt` is the engine's path for an agent's answer as our client decoded it;
`ValueSizes.keep` the walk it replaces. These properties render the same templates, in
the same order, over the same orjson-decoded values both ways, with budgets from ample
to far too small: the same values or the same errors (message included), and the same
budget left, node and workflow, after every render.
"""

from __future__ import annotations

import gc
import weakref
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.dag.budget import Budget, Limits, measure
from orchestrator.dag.templates import Template, compile_template
from orchestrator.dag.values import ValueSizes, json_depth, json_value
from tests.strategies import json_values

_NAMES = ("a", "b", "c", "0", "1")

# What orjson yields (ints within 64 bits, finite floats), nested a few levels.
_json = json_values(st.sampled_from(_NAMES), text_size=12, size=5, leaves=30)
_paths = st.lists(st.sampled_from(_NAMES), min_size=0, max_size=3).map(
    lambda segments: ".".join(["s", *segments])
)
_holes = st.one_of(
    _paths.map(lambda path: "{{ " + path + " }}"),
    _paths.map(lambda path: "x {{ " + path + " }} y"),
    st.lists(st.sampled_from(_NAMES), max_size=2).map(
        lambda segments: "{{ " + ".".join(["u", *segments]) + " }}"
    ),
)
_templates = st.recursive(
    st.none() | st.integers() | _holes,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(alphabet="kl", max_size=2), children, max_size=4)
    ),
    max_leaves=8,
)


def _outcome(template: Template, scope: Any, budget: Budget, sizes: Any) -> tuple[str, Any]:
    try:
        return "value", template.render(scope, missing="null", budget=budget, sizes=sizes)
    except Exception as exc:  # every error must be the same, message included
        return "error", f"{type(exc).__name__}: {exc}"


def _budgets(ops: int, nbytes: int) -> tuple[Budget, Budget]:
    workflow = Budget.for_workflow(Limits(workflow_ops=ops * 3, workflow_bytes=nbytes * 3))
    return workflow.child(Limits(node_ops=ops, node_bytes=nbytes)), workflow


@settings(max_examples=400, deadline=None)
@given(
    value=st.fixed_dictionaries({name: _json for name in _NAMES}) | _json,
    other=_json,
    templates=st.lists(_templates, min_size=1, max_size=5),
    ops=st.integers(min_value=0, max_value=60),
    nbytes=st.integers(min_value=0, max_value=2_000),
    min_size=st.sampled_from([0, 16]),
)
def test_an_adopted_value_is_charged_as_a_kept_one(
    value: Any, other: Any, templates: list[Any], ops: int, nbytes: int, min_size: int
) -> None:
    decoded = orjson.loads(orjson.dumps(value))
    # `u` is in the scope but neither kept nor adopted (a workflow's inputs): measured
    # by each render within what its budget has left, either way.
    scope = {"s": decoded, "u": orjson.loads(orjson.dumps(other))}
    eager = ValueSizes(min_size=min_size)
    assert eager.keep(decoded, max_bytes=2**30) is decoded
    lazy = ValueSizes(min_size=min_size)
    assert lazy.adopt(decoded) is decoded
    compiled = [compile_template(t) for t in templates]
    (fast, fast_workflow), (slow, slow_workflow) = (_budgets(ops, nbytes) for _ in range(2))
    for template in compiled:
        # The eager path as the engine had it: the remembered sizes, a mapping.
        want = _outcome(template, scope, slow, eager.entries)
        got = _outcome(template, scope, fast, lazy)
        assert got == want
        assert (fast.ops_left, fast.bytes_left) == (slow.ops_left, slow.bytes_left)
        assert (fast_workflow.ops_left, fast_workflow.bytes_left) == (
            slow_workflow.ops_left,
            slow_workflow.bytes_left,
        )
        if want[0] == "value":
            # The result crosses the boundary the same way (the workflow output's path).
            assert json_value(want[1], known=eager.entries) == json_value(
                got[1], known=lazy.entries
            )
    # Every size learned is the one the walk found.
    for key, (container, size, height) in lazy.entries.items():
        assert eager.entries[key] == (container, size, height)


def test_a_part_is_walked_once_then_charged_from_what_was_learned() -> None:
    rows = [{"region": f"r{i}", "total": i} for i in range(30)]
    answer = orjson.loads(orjson.dumps({"columns": ["region", "total"], "rows": rows}))
    sizes = ValueSizes()
    sizes.adopt(answer)
    assert len(sizes) == 0  # nothing walked when adopted
    template = compile_template({"r": "{{ s.rows }}"})
    template.render({"s": answer}, budget=_budgets(10**6, 10**6)[0], sizes=sizes)
    # The rows, not the columns nor the answer.
    assert id(answer["rows"]) in sizes.entries
    assert id(answer["columns"]) not in sizes.entries
    assert id(answer) not in sizes.entries
    kept = ValueSizes()
    kept.keep(answer, max_bytes=10**6)
    assert sizes.entries[id(answer["rows"])] == kept.entries[id(answer["rows"])]
    # Read again: charged from the entry, exactly as the first time.
    first, again = _budgets(10**6, 10**6)[0], _budgets(10**6, 10**6)[0]
    template.render({"s": answer}, budget=first, sizes=kept.entries)
    template.render({"s": answer}, budget=again, sizes=sizes)
    assert (first.ops_left, first.bytes_left) == (again.ops_left, again.bytes_left)


def test_what_is_learned_stays_within_the_entries_cap() -> None:
    answer = orjson.loads(orjson.dumps({"rows": [{"n": "x" * 20, "i": i} for i in range(50)]}))
    sizes = ValueSizes(max_entries=10)
    sizes.adopt(answer)
    template = compile_template(["{{ s.rows }}", *(f"{{{{ s.rows.{i} }}}}" for i in range(30))])
    budget = _budgets(10**6, 10**6)[0]
    template.render({"s": answer}, budget=budget, sizes=sizes)
    assert len(sizes) == 10
    # The first parts read are the ones remembered, and charged as the walk charges them.
    assert id(answer["rows"]) in sizes.entries
    kept = ValueSizes()
    kept.keep(answer, max_bytes=10**6)
    again = _budgets(10**6, 10**6)[0]
    template.render({"s": answer}, budget=again, sizes=kept.entries)
    assert (budget.ops_left, budget.bytes_left) == (again.ops_left, again.bytes_left)


def test_an_adopted_value_is_held_so_its_id_cannot_be_reused() -> None:
    class Answer(dict[str, Any]):  # a dict that can be weakly referenced
        pass

    sizes = ValueSizes()
    adopted, dropped = Answer(rows=[[1, 2, 3]] * 4), Answer(rows=[])
    alive, gone = weakref.ref(adopted), weakref.ref(dropped)
    sizes.adopt(adopted)
    del adopted, dropped
    gc.collect()
    assert alive() is not None  # held by the ValueSizes, as its entries hold theirs
    assert gone() is None


def test_a_value_not_adopted_is_not_learned() -> None:
    sizes = ValueSizes()
    sizes.adopt({"x": [1]})
    part = ["y" * 40]
    assert sizes.learn({"other": part}, part) is None
    assert len(sizes) == 0


@settings(max_examples=300, deadline=None)
@given(value=_json)
def test_a_learned_size_is_measures_and_its_height_the_values_depth(value: Any) -> None:
    """The sizer for decoded values skips the walk's checks, not its arithmetic."""
    decoded = orjson.loads(orjson.dumps(value))
    if type(decoded) not in (dict, list):
        return
    sizes = ValueSizes(min_size=0)
    sizes.adopt(decoded)
    assert sizes.learn(decoded, decoded) == measure(decoded, 2**30)
    assert sizes.entries[id(decoded)][1:] == (measure(decoded, 2**30), json_depth(decoded))


_SHAPES = [
    # Flat, two levels, three and more; dicts in lists in dicts and the reverse.
    {"region": "APAC", "n": 7, "avg": 1000.5, "ok": True, "none": None},
    [{"region": f"r{i}", "n": i, "big": 2**63 + i, "neg": -(2**63)} for i in range(4)],
    {"spec": {"mark": "bar", "data": {"values": [{"x": "é", "y": [1, [2, {"z": []}]]}]}}},
    {"a": [[[], {}], [[{}], {"k": [[[1]]]}]], "": {"": [{"": ""}]}},
    [[], {}, [[]], [{}], {"k": {}}, {"k": []}, 0, -1, 1.5, "", False],
]


def test_a_learned_size_is_measures_whatever_the_nesting() -> None:
    """The sizers (a dict's, a list's, each calling the other's for a nested container)
    give `measure`'s size and the depth: containers at every level, empty ones, keys of
    any length (counted per item read) and ints at both ends of 64 bits."""
    for shape in _SHAPES:
        decoded = orjson.loads(orjson.dumps(shape))
        for part in (decoded, {"wrapped": decoded}, [decoded, decoded]):
            sizes = ValueSizes(min_size=0)
            sizes.adopt(part)
            assert sizes.learn(part, part) == measure(part, 2**30), part
            assert sizes.entries[id(part)][2] == json_depth(part), part


def test_a_part_read_before_a_path_that_does_not_resolve_is_charged_as_kept() -> None:
    """The planned render prices each placeholder as it reaches it: a part it learned
    before finding a missing path (and handing the render to the general one) is
    charged, and remembered, exactly as after `keep`."""
    answer = orjson.loads(orjson.dumps({"rows": [{"region": f"r{i}", "n": i} for i in range(9)]}))
    template = compile_template({"a": "{{ s.rows }}", "b": "{{ s.missing }}", "c": "{{ s.rows }}"})
    eager, lazy = ValueSizes(), ValueSizes()
    eager.keep(answer, max_bytes=10**6)
    lazy.adopt(answer)
    (fast, fast_workflow), (slow, slow_workflow) = (_budgets(10**6, 10**6) for _ in range(2))
    want = _outcome(template, {"s": answer}, slow, eager.entries)
    got = _outcome(template, {"s": answer}, fast, lazy)
    assert got == want == ("value", {"a": answer["rows"], "b": None, "c": answer["rows"]})
    assert (fast.ops_left, fast.bytes_left) == (slow.ops_left, slow.bytes_left)
    assert (fast_workflow.ops_left, fast_workflow.bytes_left) == (
        slow_workflow.ops_left,
        slow_workflow.bytes_left,
    )
    assert lazy.entries[id(answer["rows"])] == eager.entries[id(answer["rows"])]
