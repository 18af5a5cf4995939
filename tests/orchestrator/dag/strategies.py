"""Hypothesis strategies for random graphs, shared by the graph, plan and runner tests."""

from __future__ import annotations

from hypothesis import strategies as st


@st.composite
def dags(draw: st.DrawFn, max_nodes: int = 30) -> dict[str, tuple[str, ...]]:
    """A random DAG as {node: deps}: edges only from earlier to later nodes of a random
    order, node names shuffled so the key order is not a topological order."""
    n = draw(st.integers(min_value=1, max_value=max_nodes))
    names = draw(st.permutations([f"n{i}" for i in range(n)]))
    deps: dict[str, tuple[str, ...]] = {}
    for i, name in enumerate(names):
        chosen = draw(
            st.sets(st.integers(min_value=0, max_value=max(0, i - 1)), max_size=min(i, 4))
        )
        deps[name] = tuple(names[j] for j in sorted(chosen) if j < i)
    keys = draw(st.permutations(list(deps)))
    return {k: deps[k] for k in keys}


@st.composite
def digraphs(draw: st.DrawFn, max_nodes: int = 12) -> dict[str, tuple[str, ...]]:
    """A random directed graph, cycles and self-loops allowed."""
    n = draw(st.integers(min_value=1, max_value=max_nodes))
    names = [f"n{i}" for i in range(n)]
    return {
        name: tuple(sorted(draw(st.sets(st.sampled_from(names), max_size=3)))) for name in names
    }
