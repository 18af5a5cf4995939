"""`validate`: check an upstream output against a JSON Schema; fail with the errors."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import jsonschema
from jsonschema.exceptions import SchemaError
from jsonschema.protocols import Validator

from orchestrator.dag.errors import NodeError
from orchestrator.dag.kinds.base import BaseKind, Compiled, NodeContext, ProblemCollector
from orchestrator.dag.kinds.transform import source_problem
from orchestrator.dag.model import NodeDef
from orchestrator.dag.schema import builtin_params_schema
from orchestrator.dag.templates import Template

# Errors listed in the failure message; the count says how many there were in all.
MAX_LISTED_ERRORS = 10


@dataclass(frozen=True, slots=True)
class ValidateParams(Compiled):
    source: Template | None = None
    validator: Validator | None = None


def _where(path: Any) -> str:
    parts = [str(p) for p in path]
    return "/".join(parts) if parts else "(root)"


class ValidateKind(BaseKind):
    """`{"source": template, "schema": {...}}`: passes the source through as
    `{"value": source}` if it validates (the schema's own `$schema` picks the draft,
    default 2020-12); otherwise fails with `validation_failed` listing the errors.
    Remote `$ref`s are never fetched. `source` defaults to the one dependency's output.
    """

    name = "validate"
    params_schema: Mapping[str, Any] = builtin_params_schema("validate")

    def compile(self, node: NodeDef) -> ValidateParams:
        collect = ProblemCollector(node)
        refs: set[str] = set()
        source = None
        if "source" in node.params:
            source = collect.template(node.params["source"], "source")
            refs |= source.references if source else set()
        else:
            source_problem(node, collect)
            refs |= set(node.depends_on)
        schema = node.params.get("schema")
        validator: Validator | None = None
        if not isinstance(schema, Mapping | bool):
            collect.add("invalid_schema", "'schema' must be a JSON Schema object", "schema")
        else:
            # Boolean schemas as their object equivalents: true accepts all, false nothing.
            if isinstance(schema, bool):
                schema = {} if schema else {"not": {}}
            schema = dict(schema)
            cls = jsonschema.validators.validator_for(
                schema, default=jsonschema.Draft202012Validator
            )
            try:
                cls.check_schema(schema)
                validator = cls(schema)
            except SchemaError as exc:
                collect.add("invalid_schema", f"invalid JSON Schema: {exc.message}", "schema")
        collect.raise_if_any()
        return ValidateParams(references=frozenset(refs), source=source, validator=validator)

    async def run(self, node: NodeDef, ctx: NodeContext) -> Any:
        params = cast(ValidateParams, ctx.compiled)
        assert params.validator is not None
        value = ctx.render(params.source) if params.source else ctx.dependency_output()
        ctx.input = value
        try:
            errors = sorted(params.validator.iter_errors(value), key=lambda e: list(e.path))
        except Exception as exc:  # an unresolvable $ref and the like: the schema's fault
            raise NodeError(
                f"node {node.id!r}: schema could not be applied: {exc}",
                code="invalid_schema",
                node_id=node.id,
            ) from exc
        if errors:
            listed = "; ".join(
                f"{_where(e.absolute_path)}: {e.message}" for e in errors[:MAX_LISTED_ERRORS]
            )
            more = len(errors) - MAX_LISTED_ERRORS
            tail = f"; and {more} more" if more > 0 else ""
            raise NodeError(
                f"node {node.id!r}: {len(errors)} schema error(s): {listed}{tail}",
                code="validation_failed",
                node_id=node.id,
            )
        return {"value": value}
