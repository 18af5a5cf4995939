"""`condition`: a safe expression over inputs and upstream outputs, or a choice of branch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, cast

from msgspec import UNSET, Meta, Struct, UnsetType

from orchestrator.dag.expressions import Expression
from orchestrator.dag.kinds.base import BaseKind, Compiled, NodeContext, ProblemCollector, to_json
from orchestrator.dag.model import Expression as ExpressionText
from orchestrator.dag.model import NodeDef

Branch = Annotated[str, Meta(min_length=1)]


class Case(Struct, frozen=True, forbid_unknown_fields=True):
    when: ExpressionText
    value: Branch


class ConditionNode(NodeDef, tag="condition", frozen=True):
    """`expr`: output {"value": result}. Or `cases` (first true `when` wins) with
    `default`: output {"value": branch name}."""

    expr: ExpressionText | UnsetType = UNSET
    cases: Annotated[tuple[Case, ...], Meta(min_length=1)] | UnsetType = UNSET
    default: Branch | UnsetType = UNSET

    json_schema_extra: ClassVar[dict[str, Any]] = {
        "oneOf": [{"required": ["expr"]}, {"required": ["cases", "default"]}]
    }

    def __post_init__(self) -> None:
        if self.expr is not UNSET:
            if self.cases is not UNSET or self.default is not UNSET:
                raise ValueError("use either 'expr', or 'cases' with 'default', not both")
        elif self.cases is UNSET or self.default is UNSET:
            missing = [f for f in ("cases", "default") if getattr(self, f) is UNSET]
            raise ValueError(
                f"needs 'expr', or 'cases' with 'default' (missing: {', '.join(missing)})"
            )


@dataclass(frozen=True, slots=True)
class ConditionParams(Compiled):
    expr: Expression | None = None
    cases: tuple[tuple[Expression, str], ...] = ()
    default: str | None = None


class ConditionKind(BaseKind):
    """Two forms, output `{"value": ...}` either way:

    - `{"expr": "len(data.rows) > 10"}`: the expression's value.
    - `{"cases": [{"when": "len(data.rows) > 10", "value": "big"}, ...],
      "default": "small"}`: the `value` of the first case whose `when` is true, else
      `default` — a branch name that later nodes test in their `when`
      (`"when": "size.value == 'big'"`).
    """

    name = "condition"
    node_type = ConditionNode

    def compile(self, node: NodeDef) -> ConditionParams:
        typed = cast(ConditionNode, node)
        collect = ProblemCollector(node)
        if typed.expr is not UNSET:
            expr = collect.expression(typed.expr, "expr")
            collect.raise_if_any()
            assert expr is not None
            return ConditionParams(references=expr.names, expr=expr)
        assert typed.cases is not UNSET and typed.default is not UNSET  # __post_init__
        cases: list[tuple[Expression, str]] = []
        for i, case in enumerate(typed.cases):
            when = collect.expression(case.when, f"cases/{i}/when")
            if when is not None:
                cases.append((when, case.value))
        collect.raise_if_any()
        names = frozenset().union(*(expr.names for expr, _ in cases))
        return ConditionParams(references=names, cases=tuple(cases), default=typed.default)

    async def run(self, node: NodeDef, ctx: NodeContext) -> Any:
        return await ctx.compute(lambda: self._choose(ctx))

    @staticmethod
    def _choose(ctx: NodeContext) -> Any:
        params = cast(ConditionParams, ctx.compiled)
        if params.expr is not None:
            return {"value": to_json(ctx.evaluate(params.expr))}
        for expr, value in params.cases:
            if ctx.evaluate(expr):
                return {"value": value}
        return {"value": params.default}
