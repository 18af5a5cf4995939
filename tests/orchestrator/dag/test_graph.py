"""Graph algorithms: layering, cycles, ancestors and the critical path, against brute force."""

from __future__ import annotations

import graphlib
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.dag.graph import (
    ReadyTracker,
    ancestor_test,
    critical_path,
    find_cycles,
    layer,
)

from .strategies import dags, digraphs


def reachable(deps: dict[str, tuple[str, ...]], start: str) -> set[str]:
    """Every node `start` depends on, transitively (brute force)."""
    seen: set[str] = set()
    stack = list(deps[start])
    while stack:
        node = stack.pop()
        if node not in seen:
            seen.add(node)
            stack.extend(deps[node])
    return seen


def has_cycle(deps: dict[str, tuple[str, ...]]) -> bool:
    try:
        graphlib.TopologicalSorter(deps).prepare()
    except graphlib.CycleError:
        return True
    return False


@given(dags())
@settings(deadline=None)  # timing belongs in bench/, not in a flaky test
def test_layering_is_a_valid_longest_path_layering(deps: dict[str, tuple[str, ...]]) -> None:
    """Every node once; dependencies on strictly lower levels; level > 0 has a dep one below."""
    result = layer(deps)
    assert result.blocked == []
    flat = [n for level in result.levels for n in level]
    assert sorted(flat) == sorted(deps)
    for node, ds in deps.items():
        level = result.level_of[node]
        assert all(result.level_of[d] < level for d in ds)
        if level > 0:
            assert any(result.level_of[d] == level - 1 for d in ds)
        else:
            assert ds == ()
    position = {n: i for i, n in enumerate(result.order)}
    assert all(position[d] < position[n] for n, ds in deps.items() for d in ds)


@given(digraphs())
@settings(deadline=None)  # timing belongs in bench/, not in a flaky test
def test_every_reported_cycle_is_a_real_cycle(deps: dict[str, tuple[str, ...]]) -> None:
    """Cycles are found exactly when graphlib finds one, and each is a closed walk of edges."""
    result = layer(deps)
    cycles = find_cycles(deps, result.blocked)
    assert bool(cycles) == has_cycle(deps) == bool(result.blocked)
    for cycle in cycles:
        assert len(set(cycle)) == len(cycle)
        for here, there in zip(cycle, cycle[1:] + cycle[:1], strict=True):
            assert there in deps[here]


@given(digraphs())
@settings(deadline=None)  # timing belongs in bench/, not in a flaky test
def test_one_cycle_per_cyclic_component(deps: dict[str, tuple[str, ...]]) -> None:
    """No two reported cycles share a node (each comes from its own component)."""
    cycles = find_cycles(deps, layer(deps).blocked)
    seen: set[str] = set()
    for cycle in cycles:
        assert not seen & set(cycle)
        seen |= set(cycle)


def test_cycle_lists_its_nodes_in_dependency_order() -> None:
    """a -> b -> c -> a is reported starting at the first node, following depends_on."""
    deps = {"a": ("b",), "b": ("c",), "c": ("a",), "d": ("a",), "e": ("e",)}
    assert find_cycles(deps, layer(deps).blocked) == [["a", "b", "c"], ["e"]]


@given(dags())
@settings(deadline=None)  # timing belongs in bench/, not in a flaky test
def test_ancestor_test_matches_reachability(deps: dict[str, tuple[str, ...]]) -> None:
    is_ancestor = ancestor_test(deps)
    for node in deps:
        expected = reachable(deps, node)
        assert {other for other in deps if is_ancestor(other, node)} == expected


@given(dags(max_nodes=12), st.data())
@settings(deadline=None)  # timing belongs in bench/, not in a flaky test
def test_critical_path_is_the_heaviest_chain(
    deps: dict[str, tuple[str, ...]], data: st.DataObject
) -> None:
    """The path is a chain of dependencies and no chain is heavier (brute force)."""
    weights = {n: data.draw(st.integers(min_value=0, max_value=9)) for n in deps}
    order = layer(deps).order
    path, length = critical_path(order, deps, lambda n: float(weights[n]))
    for earlier, later in zip(path, path[1:], strict=False):
        assert earlier in deps[later]
    assert length == sum(weights[n] for n in path)

    def heaviest(node: str) -> int:
        return weights[node] + max((heaviest(d) for d in deps[node]), default=0)

    assert length == max(heaviest(n) for n in deps)


def test_deep_chain_does_not_recurse() -> None:
    """A 20,000-node chain is layered and checked for cycles without recursion."""
    deps = {f"n{i}": ((f"n{i - 1}",) if i else ()) for i in range(20_000)}
    assert len(layer(deps).levels) == 20_000
    deps["n0"] = ("n19999",)
    cycles = find_cycles(deps, layer(deps).blocked)
    assert len(cycles) == 1 and len(cycles[0]) == 20_000
    assert ancestor_test({k: v for k, v in deps.items() if k != "n0"} | {"n0": ()})("n0", "n19999")


@settings(max_examples=150, deadline=None)
@given(dags(), st.randoms(use_true_random=False))
def test_ready_tracker_hands_out_what_graphlib_does(
    deps: dict[str, tuple[str, ...]], rng: random.Random
) -> None:
    """Finishing nodes in any order, ReadyTracker and graphlib release the same sets."""
    ours = ReadyTracker(deps, layer(deps).dependents)  # the engine's input, as compiled
    theirs = graphlib.TopologicalSorter(deps)
    theirs.prepare()
    handed_out: set[str] = set()
    pending: list[str] = []
    while theirs.is_active():
        assert ours.is_active()
        got, want = ours.get_ready(), theirs.get_ready()
        assert set(got) == set(want)
        assert not handed_out & set(got)  # each node handed out once
        handed_out |= set(got)
        pending += got
        if pending:
            node = pending.pop(rng.randrange(len(pending)))  # finish one, any of them
            ours.done(node)
            theirs.done(node)
    assert not ours.is_active()
    assert handed_out == set(deps)
