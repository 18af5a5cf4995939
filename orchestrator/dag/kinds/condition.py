"""`condition`: a safe expression over inputs and upstream outputs, or a choice of branch."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from orchestrator.dag.expressions import Expression
from orchestrator.dag.kinds.base import BaseKind, Compiled, NodeContext, ProblemCollector, to_json
from orchestrator.dag.model import NodeDef
from orchestrator.dag.schema import builtin_params_schema


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
    params_schema: Mapping[str, Any] = builtin_params_schema("condition")

    def compile(self, node: NodeDef) -> ConditionParams:
        collect = ProblemCollector(node)
        params = node.params
        if "expr" in params:
            if "cases" in params or "default" in params:
                collect.add("invalid_value", "use either 'expr' or 'cases' with 'default'")
            expr = collect.expression(params["expr"], "expr")
            collect.raise_if_any()
            assert expr is not None
            return ConditionParams(references=expr.names, expr=expr)
        cases_raw = params.get("cases")
        default = params.get("default")
        if not isinstance(cases_raw, list) or not cases_raw or not isinstance(default, str):
            collect.add("invalid_value", "needs 'expr', or 'cases' (a list) with a 'default'")
            collect.raise_if_any()
        cases: list[tuple[Expression, str]] = []
        for i, case in enumerate(cast(list[Any], cases_raw)):
            if not isinstance(case, Mapping) or not isinstance(case.get("value"), str):
                collect.add("invalid_value", "each case needs 'when' and 'value'", f"cases/{i}")
                continue
            expr = collect.expression(case.get("when"), f"cases/{i}/when")
            if expr is not None:
                cases.append((expr, case["value"]))
        collect.raise_if_any()
        names = frozenset().union(*(expr.names for expr, _ in cases))
        return ConditionParams(references=names, cases=tuple(cases), default=cast(str, default))

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
