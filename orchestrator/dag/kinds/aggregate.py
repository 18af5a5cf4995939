"""`aggregate` (fan-in): combine the dependencies' outputs with one operation."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast, get_args

from orchestrator.dag.errors import NodeError
from orchestrator.dag.kinds.base import BaseKind, Compiled, NodeContext, ProblemCollector
from orchestrator.dag.kinds.transform import resolve_in
from orchestrator.dag.model import DotPath, NodeDef
from orchestrator.dag.paths import json_type, with_article

Op = Literal["merge", "concat", "sum", "avg", "count", "min", "max"]
OPS: tuple[str, ...] = get_args(Op)


class AggregateNode(NodeDef, tag="aggregate", frozen=True):
    """Fan-in over the dependencies' outputs (skipped ones left out), reading `path` in
    each. Output {"value": ...}."""

    op: Op
    path: DotPath | None = None


@dataclass(frozen=True, slots=True)
class AggregateParams(Compiled):
    op: str = "concat"
    path: tuple[str, ...] | None = None


def _flatten(values: list[Any]) -> list[Any]:
    out: list[Any] = []
    for value in values:
        if isinstance(value, list):
            out.extend(value)
        else:
            out.append(value)
    return out


def _numbers(values: list[Any], op: str, node_id: str) -> list[int | float]:
    flat = _flatten(values)
    for value in flat:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise NodeError(
                f"node {node_id!r}: {op} needs numbers, got {with_article(json_type(value))}",
                code="invalid_input",
                node_id=node_id,
            )
    return cast(list[int | float], flat)


def _merge(values: list[Any], node_id: str) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for value in values:
        if not isinstance(value, Mapping):
            raise NodeError(
                f"node {node_id!r}: merge needs objects, got {with_article(json_type(value))}",
                code="invalid_input",
                node_id=node_id,
            )
        merged.update(value)
    return merged


def _avg(numbers: list[int | float]) -> float | None:
    return sum(numbers) / len(numbers) if numbers else None


_NUMERIC: Mapping[str, Callable[[list[int | float]], Any]] = {
    "sum": lambda ns: sum(ns),
    "avg": _avg,
    "min": lambda ns: min(ns) if ns else None,
    "max": lambda ns: max(ns) if ns else None,
}


class AggregateKind(BaseKind):
    """`{"op": ..., "path": "dot.path"}` over the outputs of the node's dependencies, in
    `depends_on` order, reading `path` in each (default: the whole output). Dependencies
    that were skipped are left out (the node runs on what it has). Output `{"value": ...}`:

    - merge: the objects merged, later dependencies winning on equal keys;
    - concat: one list; a list value contributes its items, any other value itself;
    - sum, avg, min, max: over the numbers, list values contributing their items
      (avg, min and max of nothing are null; sum of nothing is 0);
    - count: how many values, list values counting their items.
    """

    name = "aggregate"
    node_type = AggregateNode

    def compile(self, node: NodeDef) -> AggregateParams:
        typed = cast(AggregateNode, node)
        collect = ProblemCollector(node)
        if not node.depends_on:
            collect.add("missing_dependency", "an aggregate needs at least one dependency")
        path = None
        if typed.path is not None:
            path = collect.dot_path(typed.path, "path")
        collect.raise_if_any()
        return AggregateParams(references=frozenset(node.depends_on), op=typed.op, path=path)

    async def run(self, node: NodeDef, ctx: NodeContext) -> Any:
        params = cast(AggregateParams, ctx.compiled)
        values = [
            output if params.path is None else resolve_in(output, params.path, node.id)
            for _, output in ctx.dependency_outputs
        ]
        ctx.input = values
        if params.op == "merge":
            return {"value": _merge(values, node.id)}
        if params.op == "concat":
            return {"value": _flatten(values)}
        if params.op == "count":
            return {"value": len(_flatten(values))}
        numbers = _numbers(values, params.op, node.id)
        return {"value": _NUMERIC[params.op](numbers)}
