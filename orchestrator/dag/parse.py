"""The boundary: raw JSON -> `WorkflowDef`, decoded into the typed model (dag/model.py).

A definition decodes in one msgspec call into the model of the registry's kinds
(types, bounds, patterns, required fields, unknown fields refused everywhere); the
size limits are checked before it, and the nodes-and-edges form of visual editors
(`"edges": [{"source": "a", "target": "b"}]`) is folded into each target's
`depends_on` after it. A definition that does not decode is walked again
(dag/explain.py) to report every problem at once, each naming its node and field,
and is rebuilt as far as it can be so the graph checks still run.
Registries (agents, built-ins) and the graph are checked by `compiler.check_definition`;
`compiler.compile_workflow` runs both and reports every problem of both at once.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from orchestrator.dag.errors import DefinitionError, Problem
from orchestrator.dag.explain import Issue, explain
from orchestrator.dag.kinds import NodeKindRegistry, default_kinds
from orchestrator.dag.model import (
    DEFAULT_NAME,
    Edge,
    NodeDef,
    Options,
    UnreadNode,
    WorkflowDef,
)

DEFAULT_MAX_NODES = 10_000
# Dependencies (depends_on entries plus edges) allowed per allowed node.
EDGES_PER_NODE = 10
_MAX_MESSAGE = 300
_CODES = {
    "unknown_field": "unknown_field",
    "missing_field": "missing_field",
    "invalid_value": "invalid_value",
    "unknown_tag": "unknown_kind",
}


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a definition is parsed and compiled.

    Compiling 10,000 nodes allocates ~120,000 container objects, none of them in a
    reference cycle, and so triggers full collections of the whole process heap that
    free nothing: on the reference machine they took 150-300 ms of a ~150 ms compile
    (bench/dag_plan.py). The work in between is synchronous and bounded by max_nodes;
    the collector runs again as soon as it is over.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


_DEFAULT_KINDS: NodeKindRegistry | None = None


def _default_kinds() -> NodeKindRegistry:
    global _DEFAULT_KINDS
    if _DEFAULT_KINDS is None:
        _DEFAULT_KINDS = default_kinds()
    return _DEFAULT_KINDS


@dataclass(slots=True)
class ParseResult:
    """What lenient parsing found: the definition as far as it could be read (None if
    not at all), every structural problem, and the ids of nodes that had problems of
    their own (kept as `UnreadNode`s for the graph checks, never compiled)."""

    definition: WorkflowDef | None
    problems: list[Problem] = field(default_factory=list)
    malformed: set[str] = field(default_factory=set)


def parse_definition(
    raw: object,
    *,
    max_nodes: int = DEFAULT_MAX_NODES,
    kinds: NodeKindRegistry | None = None,
) -> WorkflowDef:
    """Decode `raw` into the typed definition of `kinds` (default: the built-in kinds).

    Raises DefinitionError listing every structural problem: not an object, over
    `max_nodes` nodes (or `EDGES_PER_NODE * max_nodes` dependencies), wrong types or
    values, missing or unknown fields (refused everywhere, never ignored), unknown
    kinds, edges naming nodes that do not exist.
    """
    with gc_paused():
        result = parse_lenient(raw, max_nodes=max_nodes, kinds=kinds)
    if result.problems or result.definition is None:
        raise DefinitionError(result.problems)
    return result.definition


def parse_lenient(
    raw: object,
    *,
    max_nodes: int = DEFAULT_MAX_NODES,
    kinds: NodeKindRegistry | None = None,
) -> ParseResult:
    """Like parse_definition, but returns the problems with the best-effort definition."""
    kinds = kinds or _default_kinds()
    if not isinstance(raw, Mapping):
        return ParseResult(
            None, [Problem("invalid_type", "a workflow definition must be a JSON object")]
        )
    size = _size_problem(raw, max_nodes)
    if size is not None:
        return ParseResult(None, [size])
    model = kinds.definition_type()
    try:
        definition = msgspec.convert(raw if isinstance(raw, dict) else dict(raw), model)
    except msgspec.ValidationError:
        return _refused(raw, model, kinds)
    definition, edge_problems = _normalised(definition, enumerate(definition.edges))
    return ParseResult(definition, edge_problems)


def _size_problem(raw: Mapping[str, Any], max_nodes: int) -> Problem | None:
    nodes = raw.get("nodes")
    if isinstance(nodes, list) and len(nodes) > max_nodes:
        return Problem(
            "too_many_nodes",
            f"the workflow has {len(nodes)} nodes; the limit is {max_nodes}",
            path="nodes",
        )
    edges = raw.get("edges")
    count = len(edges) if isinstance(edges, list) else 0
    if isinstance(nodes, list):
        for node in nodes:
            deps = node.get("depends_on") if isinstance(node, Mapping) else None
            count += len(deps) if isinstance(deps, list) else 0
    limit = EDGES_PER_NODE * max_nodes
    if count > limit:
        return Problem(
            "too_many_edges",
            f"the workflow has {count} dependencies; the limit is {limit}",
        )
    return None


# -- a definition that did not decode: every problem, and as much of it as can be read --


def _refused(
    raw: Mapping[str, Any], model: type[WorkflowDef], kinds: NodeKindRegistry
) -> ParseResult:
    nodes_raw = raw.get("nodes")
    problems: list[Problem] = []
    malformed: set[str] = set()
    for issue in explain(raw, model):
        problem = _problem(issue, nodes_raw, kinds)
        problems.append(problem)
        if problem.node_id is not None:
            malformed.add(problem.node_id)
    readable, edges = _readable(raw, kinds, malformed)
    definition, edge_problems = _normalised(readable, edges)
    return ParseResult(definition, problems + edge_problems, malformed)


def _node_id_at(nodes_raw: Any, index: Any) -> str | None:
    if isinstance(nodes_raw, list) and isinstance(index, int) and 0 <= index < len(nodes_raw):
        node = nodes_raw[index]
        if isinstance(node, Mapping) and isinstance(node.get("id"), str):
            return str(node["id"])
    return None


def _shorten(text: str) -> str:
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 1] + "…"


def _problem(issue: Issue, nodes_raw: Any, kinds: NodeKindRegistry) -> Problem:
    path = issue.path
    in_node = len(path) >= 2 and path[0] == "nodes"
    node_id = _node_id_at(nodes_raw, path[1]) if in_node else None
    pointer = "/".join(str(p) for p in path)
    code = _CODES[issue.kind]
    if in_node:
        where = f"node {node_id!r}" if node_id else f"node #{path[1]}"
        if code == "unknown_kind":
            known = ", ".join(sorted(kinds))
            message = f"{where}: unknown kind {issue.names[0]!r} (known: {known})"
            return Problem(code, _shorten(message), node_id, pointer)
        if len(path) > 2:
            where += f" field {'/'.join(str(p) for p in path[2:])!r}"
    else:
        where = f"{pointer!r}" if pointer else "the definition"
    return Problem(code, _shorten(f"{where}: {issue.message}"), node_id, pointer)


def _convert_or(value: Any, tp: Any, default: Any) -> Any:
    try:
        return msgspec.convert(value, tp)
    except msgspec.ValidationError:
        return default


def _readable(
    raw: Mapping[str, Any], kinds: NodeKindRegistry, malformed: set[str]
) -> tuple[WorkflowDef, list[tuple[int, Edge]]]:
    """The definition as far as it decodes: nodes with problems become UnreadNodes (id,
    kind and string dependencies, for the graph checks), the rest as they are; and the
    edges that decode, with their positions."""
    nodes: list[NodeDef] = []
    nodes_raw = raw.get("nodes")
    for item in nodes_raw if isinstance(nodes_raw, list) else []:
        if not isinstance(item, Mapping):
            continue
        node_id, kind = item.get("id"), item.get("kind")
        if not isinstance(node_id, str) or not isinstance(kind, str):
            continue
        node = None
        found = kinds.get(kind)
        if node_id not in malformed and found is not None:
            node = _convert_or(item, found.node_type, None)
        if node is None:
            deps = item.get("depends_on")
            strings = [d for d in deps if isinstance(d, str)] if isinstance(deps, list) else []
            node = UnreadNode(id=node_id, depends_on=tuple(dict.fromkeys(strings)), raw_kind=kind)
            malformed.add(node_id)
        nodes.append(node)
    edges_raw = raw.get("edges")
    edges: list[tuple[int, Edge]] = []
    for j, item in enumerate(edges_raw if isinstance(edges_raw, list) else []):
        edge = _convert_or(item, Edge, None)
        if edge is not None:
            edges.append((j, edge))
    name = raw.get("name")
    description = raw.get("description")
    inputs = raw.get("inputs")
    definition = WorkflowDef(
        nodes=tuple(nodes),
        name=name if isinstance(name, str) and name else DEFAULT_NAME,
        description=description if isinstance(description, str) else None,
        inputs=dict(inputs) if isinstance(inputs, Mapping) else {},
        options=_convert_or(raw.get("options", {}), Options, Options()),
        output=raw.get("output"),
    )
    return definition, edges


def _normalised(
    definition: WorkflowDef, edges: Iterable[tuple[int, Edge]]
) -> tuple[WorkflowDef, list[Problem]]:
    """Each node's depends_on without repeats, each edge's source added to its target's
    depends_on; `edges` emptied. Problems: edges naming nodes that do not exist."""
    nodes = definition.nodes
    edges = list(edges)
    out: list[NodeDef] | None = None
    for i, node in enumerate(nodes):
        deps = node.depends_on
        if len(deps) > 1 and len(set(deps)) < len(deps):
            out = out or list(nodes)
            out[i] = msgspec.structs.replace(node, depends_on=tuple(dict.fromkeys(deps)))
    problems: list[Problem] = []
    if edges or out is not None:
        out, problems = _fold_edges(out or list(nodes), edges)
        definition = msgspec.structs.replace(definition, nodes=tuple(out), edges=())
    return definition, problems


def _fold_edges(
    nodes: list[NodeDef], edges: Iterable[tuple[int, Edge]]
) -> tuple[list[NodeDef], list[Problem]]:
    first: dict[str, int] = {}
    for i, node in enumerate(nodes):
        first.setdefault(node.id, i)
    extra: dict[int, list[str]] = {}
    problems: list[Problem] = []
    for j, edge in edges:
        source, target = edge.source, edge.target
        if target not in first:
            problems.append(
                Problem(
                    "unknown_node",
                    f"edge #{j}: target {target!r} is not a node",
                    path=f"edges/{j}/target",
                )
            )
            continue
        if source not in first:
            problems.append(
                Problem(
                    "unknown_dependency",
                    f"node {target!r}: edge #{j} comes from {source!r}, which is not a node",
                    node_id=target,
                    path=f"edges/{j}/source",
                )
            )
            continue
        extra.setdefault(first[target], []).append(source)
    out = list(nodes)
    for i, sources in extra.items():
        node = out[i]
        deps = tuple(dict.fromkeys((*node.depends_on, *sources)))
        out[i] = msgspec.structs.replace(node, depends_on=deps)
    return out, problems
