"""The boundary: raw JSON -> `WorkflowDef`, checked against the published JSON Schema.

Parsing does the structural checks (schema.json: types, required fields, no unknown
field anywhere, the size limit) and folds the nodes-and-edges form of visual editors
(`"edges": [{"source": "a", "target": "b"}]`) into each target's `depends_on`.
Registries (agents, kinds, built-ins) and the graph are checked by
`validate.check_definition`; `validate.compile_workflow` runs both and reports
every problem of both at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from orchestrator.dag.errors import DefinitionError, Problem
from orchestrator.dag.kinds import NodeKindRegistry, default_kinds
from orchestrator.dag.model import (
    COMMON_NODE_FIELDS,
    DEFAULT_MAX_PARALLEL,
    DEFAULT_TIMEOUT_S,
    FallbackDef,
    FallbackKind,
    NodeDef,
    OnFailure,
    WorkflowDef,
    WorkflowOptions,
    frozen_mapping,
)
from orchestrator.dag.schema import (
    SchemaIssue,
    builtin_param_fields,
    compose_schema,
    validator_for,
)
from orchestrator.dag.triggers import TriggerRule

DEFAULT_MAX_NODES = 10_000
# Dependencies (depends_on entries plus edges) allowed per allowed node.
EDGES_PER_NODE = 10
DEFAULT_NAME = "workflow"
_MAX_MESSAGE = 300
_TRIGGERS = frozenset(rule.value for rule in TriggerRule)
_UNEXPECTED = re.compile(r"'([^']*)'")


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


def definition_schema(kinds: NodeKindRegistry | None = None) -> dict[str, Any]:
    """The published JSON Schema (Draft 2020-12) for definitions using `kinds`
    (default: the built-in kinds). Served at GET /api/workflows/schema."""
    return compose_schema((kinds or _default_kinds()).params_schemas())


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
    their own (whose params later checks skip, to avoid reporting one mistake twice)."""

    definition: WorkflowDef | None
    problems: list[Problem] = field(default_factory=list)
    malformed: set[str] = field(default_factory=set)


def parse_definition(
    raw: object,
    *,
    max_nodes: int = DEFAULT_MAX_NODES,
    kinds: NodeKindRegistry | None = None,
) -> WorkflowDef:
    """Check `raw` against the schema and build the typed definition.

    Raises DefinitionError listing every structural problem: not an object, over
    `max_nodes` nodes (or `EDGES_PER_NODE * max_nodes` dependencies), wrong types,
    missing or unknown fields (refused everywhere, never ignored), edges naming
    nodes that do not exist.
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
    validator = validator_for(kinds.params_schemas())
    nodes_raw = raw.get("nodes")
    problems: list[Problem] = []
    malformed: set[str] = set()
    for issue in validator.issues(raw):
        problem = _issue_problem(issue, nodes_raw, kinds)
        if problem is None:
            continue
        problems.append(problem)
        if problem.node_id is not None:
            malformed.add(problem.node_id)
    definition, edge_problems = _build(raw)
    problems.extend(edge_problems)
    return ParseResult(definition, problems, malformed)


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


def _node_id_at(nodes_raw: Any, index: Any) -> str | None:
    if isinstance(nodes_raw, list) and isinstance(index, int) and 0 <= index < len(nodes_raw):
        node = nodes_raw[index]
        if isinstance(node, Mapping) and isinstance(node.get("id"), str):
            return str(node["id"])
    return None


def _unknown_kind_at(nodes_raw: Any, index: Any, kinds: NodeKindRegistry) -> bool:
    if isinstance(nodes_raw, list) and isinstance(index, int) and 0 <= index < len(nodes_raw):
        node = nodes_raw[index]
        kind = node.get("kind") if isinstance(node, Mapping) else None
        return isinstance(kind, str) and kind not in kinds
    return False


def _declared_fields(kind: Any, kinds: NodeKindRegistry) -> frozenset[str]:
    """The fields a node of `kind` may carry: the common ones and its params'."""
    found = kinds.get(kind) if isinstance(kind, str) else None
    if found is None:
        return COMMON_NODE_FIELDS
    params: Mapping[str, Any] = found.params_schema
    ref = params.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/kinds/"):
        return COMMON_NODE_FIELDS | builtin_param_fields(ref.rsplit("/", 1)[-1])
    return COMMON_NODE_FIELDS | frozenset(params.get("properties", {}))


def _shorten(text: str) -> str:
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 1] + "…"


def _issue_problem(issue: SchemaIssue, nodes_raw: Any, kinds: NodeKindRegistry) -> Problem | None:
    path = issue.path
    in_node = len(path) >= 2 and path[0] == "nodes"
    node_id = _node_id_at(nodes_raw, path[1]) if in_node else None
    unknown_fields = issue.keyword in ("additionalProperties", "unevaluatedProperties")
    if (
        unknown_fields
        and in_node
        and len(path) == 2
        and _unknown_kind_at(nodes_raw, path[1], kinds)
    ):
        # The kind itself is unknown (validate reports it): its fields cannot be judged.
        return None
    pointer = "/".join(str(p) for p in path)
    if in_node:
        where = f"node {node_id!r}" if node_id else f"node #{path[1]}"
        if len(path) > 2:
            where += f" field {'/'.join(str(p) for p in path[2:])!r}"
    else:
        where = f"{pointer!r}" if pointer else "the definition"
    if unknown_fields:
        names = issue.unexpected or tuple(_UNEXPECTED.findall(issue.message))
        if in_node and len(path) == 2:
            # A kind's params that fail their own schema count as "unevaluated" too;
            # only report the fields that really are unknown (the rest have their issue).
            declared = _declared_fields(nodes_raw[path[1]].get("kind"), kinds)
            names = tuple(n for n in names if n not in declared)
            if not names:
                return None
        listed = ", ".join(repr(n) for n in names) if names else "fields"
        return Problem("unknown_field", f"{where}: unknown field {listed}", node_id, pointer)
    if issue.keyword == "required":
        return Problem("missing_field", _shorten(f"{where}: {issue.message}"), node_id, pointer)
    if issue.keyword in ("oneOf", "anyOf", "oneOfNotValid", "oneOfMultipleValid"):
        detail = issue.description or "does not match any of the allowed forms"
        return Problem("invalid_value", _shorten(f"{where}: {detail}"), node_id, pointer)
    return Problem("invalid_value", _shorten(f"{where}: {issue.message}"), node_id, pointer)


# -- building the typed model (tolerant: the schema has already said what is wrong) --


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _options(raw: Any) -> WorkflowOptions:
    if not isinstance(raw, Mapping):
        return WorkflowOptions()
    max_parallel = raw.get("max_parallel")
    if isinstance(max_parallel, bool) or not isinstance(max_parallel, int) or max_parallel < 1:
        max_parallel = DEFAULT_MAX_PARALLEL
    timeout = _number(raw.get("timeout_s"))
    on_failure = raw.get("on_failure")
    return WorkflowOptions(
        max_parallel=max_parallel,
        timeout_s=timeout if timeout is not None and timeout > 0 else DEFAULT_TIMEOUT_S,
        on_failure=OnFailure(on_failure) if on_failure in ("stop", "continue") else OnFailure.STOP,
    )


def _fallback(raw: Any) -> FallbackDef | None:
    if not isinstance(raw, Mapping):
        return None
    if isinstance(raw.get("agent"), str):
        return FallbackDef(FallbackKind.AGENT, target=raw["agent"], input=raw.get("input"))
    if isinstance(raw.get("builtin"), str):
        return FallbackDef(FallbackKind.BUILTIN, target=raw["builtin"])
    if "value" in raw:
        return FallbackDef(FallbackKind.VALUE, value=raw["value"])
    return None


def _strings(raw: Any) -> list[str]:
    return [x for x in raw if isinstance(x, str)] if isinstance(raw, list) else []


def _node(raw: Mapping[str, Any]) -> NodeDef | None:
    node_id, kind = raw.get("id"), raw.get("kind")
    if not isinstance(node_id, str) or not isinstance(kind, str):
        return None
    when = raw.get("when")
    on_failure = raw.get("on_failure")
    timeout = _number(raw.get("timeout_s"))
    estimate = _number(raw.get("estimate_ms"))
    description = raw.get("description")
    trigger = raw.get("trigger")
    return NodeDef(
        id=node_id,
        kind=kind,
        depends_on=tuple(dict.fromkeys(_strings(raw.get("depends_on")))),
        when=when if isinstance(when, str) else None,
        on_failure=OnFailure(on_failure) if on_failure in ("stop", "continue") else None,
        fallback=_fallback(raw.get("fallback")),
        timeout_s=timeout if timeout is not None and timeout > 0 else None,
        estimate_ms=estimate if estimate is not None and estimate >= 0 else None,
        description=description if isinstance(description, str) else None,
        params=frozen_mapping({k: v for k, v in raw.items() if k not in COMMON_NODE_FIELDS}),
        trigger=TriggerRule(trigger) if trigger in _TRIGGERS else None,
    )


def _fold_edges(nodes: list[NodeDef], edges_raw: Any) -> tuple[list[NodeDef], list[Problem]]:
    if not isinstance(edges_raw, list) or not edges_raw:
        return nodes, []
    first: dict[str, int] = {}
    for i, node in enumerate(nodes):
        first.setdefault(node.id, i)
    extra: dict[int, list[str]] = {}
    problems: list[Problem] = []
    for j, edge in enumerate(edges_raw):
        if not isinstance(edge, Mapping):
            continue
        source, target = edge.get("source"), edge.get("target")
        if not isinstance(source, str) or not isinstance(target, str):
            continue
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
        out[i] = dataclasses.replace(node, depends_on=deps)
    return out, problems


def _build(raw: Mapping[str, Any]) -> tuple[WorkflowDef, list[Problem]]:
    nodes_raw = raw.get("nodes")
    nodes: list[NodeDef] = []
    if isinstance(nodes_raw, list):
        for item in nodes_raw:
            node = _node(item) if isinstance(item, Mapping) else None
            if node is not None:
                nodes.append(node)
    nodes, problems = _fold_edges(nodes, raw.get("edges"))
    name = raw.get("name")
    description = raw.get("description")
    inputs = raw.get("inputs")
    definition = WorkflowDef(
        name=name if isinstance(name, str) and name else DEFAULT_NAME,
        nodes=tuple(nodes),
        inputs=frozen_mapping(inputs if isinstance(inputs, Mapping) else {}),
        options=_options(raw.get("options")),
        output=raw.get("output"),
        description=description if isinstance(description, str) else None,
    )
    return definition, problems
