"""Graph algorithms over a dependency mapping `{node: (its dependencies, ...)}`.

Pure functions, no engine types: topological layering (Kahn), cycles (Tarjan's
strongly connected components, one concrete cycle reported per component),
ancestor tests and the weighted longest (critical) path. All iterative, so a
10,000-node chain does not hit the recursion limit. Callers guarantee every
dependency is itself a key (unknown ones are filtered out before).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

Deps = Mapping[str, Sequence[str]]


@dataclass(frozen=True, slots=True)
class Layering:
    """Kahn's algorithm's result. `order` is a topological order of the acyclic part;
    `levels[i]` holds the nodes whose longest dependency chain has i edges; `blocked`
    are nodes on or downstream of a cycle (empty for a DAG); `dependents` the
    reversed edges."""

    order: list[str]
    levels: list[list[str]]
    level_of: dict[str, int]
    blocked: list[str]
    dependents: dict[str, list[str]]


def layer(deps: Deps) -> Layering:
    """Topological order and longest-path layering; nodes on/after cycles go to `blocked`."""
    # The reverse edges (dependents) and the in-degree count, in one pass over the edges.
    dependents: dict[str, list[str]] = {n: [] for n in deps}
    remaining: dict[str, int] = {}
    frontier: list[str] = []
    for n, ds in deps.items():
        if ds:
            remaining[n] = len(ds)
            for d in ds:
                dependents[d].append(n)
        else:
            frontier.append(n)
    level_of: dict[str, int] = {}
    order: list[str] = []
    levels: list[list[str]] = []
    # Level by level: every node of level i+1 is released by the last of its deps, which
    # sits on level i, so one pass over the frontier assigns the longest-path level.
    while frontier:
        level_of.update(dict.fromkeys(frontier, len(levels)))
        levels.append(frontier)
        order.extend(frontier)
        nxt: list[str] = []
        for n in frontier:
            for m in dependents[n]:
                left = remaining[m] - 1
                remaining[m] = left
                if not left:
                    nxt.append(m)
        frontier = nxt
    blocked = [n for n in deps if n not in level_of] if len(order) < len(deps) else []
    return Layering(
        order=order, levels=levels, level_of=level_of, blocked=blocked, dependents=dependents
    )


class ReadyTracker:
    """`graphlib.TopologicalSorter`'s `get_ready` / `done` / `is_active`, for a graph
    already known to be acyclic, with its reversed edges already built.

    The DAG engine makes one per workflow run. graphlib would rebuild a node record per
    node and look for cycles on every run; a compiled workflow was checked once, so
    a run needs only a copy of the in-degrees. Callers keep graphlib's contract:
    `done` once per node handed out by `get_ready`. Roots come out in key order,
    the others in the order of `dependents` (the definition's order).
    """

    __slots__ = ("_dependents", "_finished", "_passed_out", "_ready", "_waiting")

    def __init__(self, deps: Deps, dependents: Mapping[str, Sequence[str]]) -> None:
        self._dependents = dependents
        self._waiting: dict[str, int] = {}
        self._ready: list[str] = []
        for node, ds in deps.items():
            if ds:
                self._waiting[node] = len(ds)
            else:
                self._ready.append(node)
        self._passed_out = 0
        self._finished = 0

    def is_active(self) -> bool:
        """True while a node is ready or handed out and not yet done."""
        return self._finished < self._passed_out or bool(self._ready)

    def get_ready(self) -> list[str]:
        """The nodes whose dependencies are all done, each handed out once."""
        ready = self._ready
        self._ready = []
        self._passed_out += len(ready)
        return ready

    def done(self, node: str) -> None:
        """`node` is finished: dependents whose last dependency it was become ready."""
        self._finished += 1
        waiting = self._waiting
        for dependent in self._dependents[node]:
            left = waiting[dependent] - 1
            waiting[dependent] = left
            if not left:
                self._ready.append(dependent)


class _Tarjan:
    def __init__(self, deps: Deps, allowed: set[str]) -> None:
        self.deps = deps
        self.allowed = allowed
        self.index: dict[str, int] = {}
        self.low: dict[str, int] = {}
        self.on_stack: set[str] = set()
        self.stack: list[str] = []
        self.components: list[list[str]] = []
        # Frames: (node, its successors in the subgraph, [next successor position]).
        self.work: list[tuple[str, list[str], list[int]]] = []

    def enter(self, node: str) -> None:
        self.index[node] = self.low[node] = len(self.index)
        self.stack.append(node)
        self.on_stack.add(node)
        succ = [d for d in self.deps[node] if d in self.allowed]
        self.work.append((node, succ, [0]))

    def descend(self, node: str, succ: list[str], cursor: list[int]) -> bool:
        """Advance over `node`'s successors; True if it entered an unvisited one."""
        while cursor[0] < len(succ):
            nxt = succ[cursor[0]]
            cursor[0] += 1
            if nxt not in self.index:
                self.enter(nxt)
                return True
            if nxt in self.on_stack:
                self.low[node] = min(self.low[node], self.index[nxt])
        return False

    def finish(self, node: str) -> None:
        if self.low[node] == self.index[node]:
            component: list[str] = []
            while True:
                member = self.stack.pop()
                self.on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            self.components.append(component)
        if self.work:
            parent = self.work[-1][0]
            self.low[parent] = min(self.low[parent], self.low[node])

    def run(self, roots: Sequence[str]) -> list[list[str]]:
        for root in roots:
            if root in self.index:
                continue
            self.enter(root)
            while self.work:
                node, succ, cursor = self.work[-1]
                if self.descend(node, succ, cursor):
                    continue
                self.work.pop()
                self.finish(node)
        return self.components


def strongly_connected(deps: Deps, nodes: Sequence[str] | None = None) -> list[list[str]]:
    """Tarjan's SCCs of the subgraph on `nodes` (default: all), iteratively."""
    universe = list(deps) if nodes is None else list(nodes)
    return _Tarjan(deps, set(universe)).run(universe)


def _cycle_through(start: str, deps: Deps, members: set[str]) -> list[str]:
    """A shortest cycle through `start` inside one SCC, following dependency edges."""
    parent: dict[str, str] = {}
    queue = deque([start])
    seen = {start}
    while queue:
        node = queue.popleft()
        for d in deps[node]:
            if d == start:
                path = [node]
                while path[-1] != start:
                    path.append(parent[path[-1]])
                path.reverse()
                return path
            if d in members and d not in seen:
                seen.add(d)
                parent[d] = node
                queue.append(d)
    raise AssertionError(f"{start!r} is on no cycle of its component")  # pragma: no cover


def find_cycles(deps: Deps, candidates: Sequence[str] | None = None) -> list[list[str]]:
    """One concrete cycle per cyclic strongly connected component.

    A cycle `[a, b, c]` means a depends on b, b on c, and c on a. It starts at the
    component's first node in key order, so reports are deterministic. `candidates`
    narrows the search (e.g. to `Layering.blocked`); every cycle lies within them.
    """
    position = {n: i for i, n in enumerate(deps)}
    cycles: list[list[str]] = []
    for component in strongly_connected(deps, candidates):
        members = set(component)
        if len(component) == 1:
            only = component[0]
            if only in deps[only]:
                cycles.append([only])
            continue
        start = min(component, key=position.__getitem__)
        cycles.append(_cycle_through(start, deps, members))
    cycles.sort(key=lambda c: position[c[0]])
    return cycles


def ancestor_test(deps: Deps) -> Callable[[str, str], bool]:
    """`is_ancestor(a, n)`: does n (transitively) depend on a? Memoised bitsets, built
    lazily only for the nodes asked about (and their ancestors). Needs a DAG."""
    bit = {n: 1 << i for i, n in enumerate(deps)}
    memo: dict[str, int] = {}

    def bits(node: str) -> int:
        if node in memo:
            return memo[node]
        # Iterative post-order: compute every ancestor's set before the node's.
        work = [node]
        while work:
            top = work[-1]
            if top in memo:
                work.pop()
                continue
            missing = [d for d in deps[top] if d not in memo]
            if missing:
                work.extend(missing)
                continue
            acc = 0
            for d in deps[top]:
                acc |= memo[d] | bit[d]
            memo[top] = acc
            work.pop()
        return memo[node]

    def is_ancestor(candidate: str, node: str) -> bool:
        if candidate not in bit or node not in bit:
            return False
        if candidate in deps[node]:
            return True
        return bool(bits(node) & bit[candidate])

    return is_ancestor


def critical_path(
    order: Sequence[str], deps: Deps, weight: Callable[[str], float] | float
) -> tuple[list[str], float]:
    """The heaviest dependency chain (sum of node weights) and its weight; needs a
    topological `order`. `weight` is a function of the node, or one weight for all.
    Ties go to the node earliest in `order`."""
    best: dict[str, float] = {}
    via: dict[str, str | None] = {}
    end: str | None = None
    end_cost = 0.0
    weigh = weight if callable(weight) else None
    constant = 0.0 if callable(weight) else float(weight)
    for node in order:
        prev: str | None = None
        prev_cost = 0.0
        for d in deps[node]:
            cost = best[d]
            if prev is None or cost > prev_cost:
                prev, prev_cost = d, cost
        cost = prev_cost + (weigh(node) if weigh is not None else constant)
        best[node] = cost
        via[node] = prev
        if end is None or cost > end_cost:
            end, end_cost = node, cost
    path: list[str] = []
    cursor = end
    while cursor is not None:
        path.append(cursor)
        cursor = via[cursor]
    path.reverse()
    return path, end_cost
