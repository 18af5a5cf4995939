"""`transform` (adapter): reshape an upstream output with select, filter and map."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, cast

from msgspec import UNSET, Meta, UnsetType

from orchestrator.dag.errors import NodeError
from orchestrator.dag.expressions import Expression
from orchestrator.dag.kinds.base import BaseKind, Compiled, NodeContext, ProblemCollector, to_json
from orchestrator.dag.model import NODE_ID_PATTERN, DotPath, NodeDef, TemplateValue
from orchestrator.dag.model import Expression as ExpressionText
from orchestrator.dag.paths import PathError, json_type, resolve_segments, with_article
from orchestrator.dag.templates import Template

# The name a filter expression reads the current list item under.
ITEM = "item"


_STEPS = ("source", "select", "filter", "map")


class TransformNode(NodeDef, tag="transform", frozen=True):
    """source (default: the output of its one dependency), then select, then filter
    (lists; over `item`), then map. Output {"value": ...}."""

    source: TemplateValue | UnsetType = UNSET
    select: DotPath | None = None
    filter: ExpressionText | None = None
    map: (
        Annotated[dict[Annotated[str, Meta(pattern=NODE_ID_PATTERN)], DotPath], Meta(min_length=1)]
        | None
    ) = None

    json_schema_extra: ClassVar[dict[str, Any]] = {
        "anyOf": [{"required": [step]} for step in _STEPS]
    }

    def __post_init__(self) -> None:
        if (
            self.source is UNSET
            and self.select is None
            and self.filter is None
            and self.map is None
        ):
            raise ValueError(
                "a transform needs at least one of 'source', 'select', 'filter', 'map'; it has none"
            )


@dataclass(frozen=True, slots=True)
class TransformParams(Compiled):
    source: Template | None = None
    select: tuple[str, ...] | None = None
    filter: Expression | None = None
    map: tuple[tuple[str, tuple[str, ...]], ...] = field(default=())
    has_map: bool = False


def resolve_in(value: Any, segments: tuple[str, ...], node_id: str) -> Any:
    """A dot path into any JSON value (an object or a list at the root)."""
    try:
        return resolve_segments(cast(Mapping[str, Any], value), segments)
    except PathError as exc:
        raise NodeError(f"node {node_id!r}: {exc}", code="path_error", node_id=node_id) from exc


def source_problem(node: NodeDef, collect: ProblemCollector) -> None:
    """Without a `source`, a node reads its one dependency: it must have exactly one."""
    if len(node.depends_on) != 1:
        collect.add(
            "missing_source",
            f"without 'source' the node reads its one dependency, but it has "
            f"{len(node.depends_on)}",
            "source",
        )


class TransformKind(BaseKind):
    """`source` (a template; default: the output of the node's one dependency), then
    `select` (a dot path into it), then `filter` (lists only: keep the items for which
    the expression over `item` is true), then `map` (`{"new": "dot.path"}` applied to
    each item of a list, or to an object). Output `{"value": ...}`.
    """

    name = "transform"
    node_type = TransformNode

    def compile(self, node: NodeDef) -> TransformParams:
        typed = cast(TransformNode, node)
        collect = ProblemCollector(node)
        refs: set[str] = set()
        source = None
        if typed.source is not UNSET:
            source = collect.template(typed.source, "source")
            refs |= source.references if source else set()
        else:
            source_problem(node, collect)
            refs |= set(node.depends_on)
        select = collect.dot_path(typed.select, "select") if typed.select is not None else None
        filt = None
        if typed.filter is not None:
            filt = collect.expression(typed.filter, "filter", extra_names=(ITEM,))
            refs |= filt.names if filt else set()
        mapping: list[tuple[str, tuple[str, ...]]] = []
        raw_map = typed.map
        if raw_map is not None:
            for key, path in raw_map.items():
                segments = collect.dot_path(path, f"map/{key}")
                if segments is not None:
                    mapping.append((key, segments))
        collect.raise_if_any()
        return TransformParams(
            references=frozenset(refs),
            source=source,
            select=select,
            filter=filt,
            map=tuple(mapping),
            has_map=raw_map is not None,
        )

    async def run(self, node: NodeDef, ctx: NodeContext) -> Any:
        return await ctx.compute(lambda: self._transform(node, ctx))

    def _transform(self, node: NodeDef, ctx: NodeContext) -> Any:
        params = cast(TransformParams, ctx.compiled)
        value = ctx.render(params.source) if params.source else ctx.dependency_output()
        ctx.input = value
        if params.select is not None:
            value = resolve_in(value, params.select, node.id)
        if params.filter is not None:
            value = self._filter(node, ctx, params.filter, value)
        if params.has_map:
            value = self._map(node, ctx, params.map, value)
        return {"value": to_json(value)}

    @staticmethod
    def _filter(node: NodeDef, ctx: NodeContext, expr: Expression, value: Any) -> list[Any]:
        if not isinstance(value, list):
            raise NodeError(
                f"node {node.id!r}: 'filter' needs a list, got {with_article(json_type(value))}",
                code="invalid_input",
                node_id=node.id,
            )
        return [item for item in value if ctx.evaluate(expr, {ITEM: item})]

    @staticmethod
    def _map(
        node: NodeDef,
        ctx: NodeContext,
        mapping: tuple[tuple[str, tuple[str, ...]], ...],
        value: Any,
    ) -> Any:
        def project(item: Any) -> dict[str, Any]:
            # Charged per item as the list is built: a map over a huge list stops at
            # the node's budget instead of after the whole list exists.
            ctx.charge(len(mapping), 8 * len(mapping), what="map")
            return {key: resolve_in(item, segs, node.id) for key, segs in mapping}

        if isinstance(value, list):
            return [project(item) for item in value]
        if isinstance(value, Mapping):
            return project(value)
        raise NodeError(
            f"node {node.id!r}: 'map' needs a list or an object, got "
            f"{with_article(json_type(value))}",
            code="invalid_input",
            node_id=node.id,
        )
