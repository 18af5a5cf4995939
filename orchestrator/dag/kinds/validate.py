"""`validate`: check an upstream output against a client's JSON Schema; fail with the errors.

The schema comes from the client, so it is applied with jsonschema-rs configured to
do nothing but check: no `$ref` is ever resolved over the network or from the file
system (a retriever that refuses everything; any reference that does not point inside
the document is a definition problem naming the node), and `pattern` /
`patternProperties` run on Rust's `regex` engine, which matches in linear time (no
lookaround or backreferences: such a pattern is refused when the definition is
checked), with each pattern's length and compiled size capped.

jsonschema-rs is imported when the first `validate` node is compiled, not with this
module: its Rust library is ~6 MB of a process that never validates anything
(`bench.targets`' peak RSS row).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from types import ModuleType
from typing import Any, cast

from msgspec import UNSET, UnsetType

from orchestrator.dag.budget import measure
from orchestrator.dag.errors import NodeError
from orchestrator.dag.kinds.base import BaseKind, Compiled, NodeContext, ProblemCollector
from orchestrator.dag.kinds.transform import source_problem
from orchestrator.dag.model import NodeDef, TemplateValue
from orchestrator.dag.templates import Template

# Errors listed in the failure message; the count says how many there were in all.
MAX_LISTED_ERRORS = 10
# Characters of one error message (a message quotes the instance, which may be big).
MAX_ERROR_CHARS = 300
# A `pattern` (or `patternProperties` key) longer than this is refused at compile time.
MAX_PATTERN_CHARS = 1_000
# Compiled size of one regular expression, and of its lazy DFA cache (bytes).
_REGEX_SIZE_LIMIT = 1 << 20
_REF_KEYWORDS = ("$ref", "$dynamicRef", "$recursiveRef")


class ValidateNode(NodeDef, tag="validate", frozen=True):
    """Checks `source` (default: the output of its one dependency) against the JSON
    Schema `schema`; fails with the schema errors. Output {"value": source}."""

    schema: dict[str, Any] | bool
    source: TemplateValue | UnsetType = UNSET


@dataclass(frozen=True, slots=True)
class ValidateParams(Compiled):
    source: Template | None = None
    validator: Any = None  # a jsonschema_rs validator (untyped)


@cache
def _jsonschema() -> ModuleType:
    import jsonschema_rs

    return jsonschema_rs


@cache
def _schema_errors() -> tuple[type[Exception], ...]:
    """What jsonschema-rs raises for a schema it cannot build or apply."""
    js = _jsonschema()
    return (js.ValidationError, js.ReferencingError, ValueError)


def _refuse_retrieval(uri: str) -> Any:
    raise ValueError(f"reference {uri!r} is outside the schema; only '#...' references resolve")


def _walk(schema: Any) -> Iterator[tuple[str, Any, Mapping[str, Any]]]:
    """(keyword, value, containing object) for every keyword of every object in `schema`."""
    stack = [schema]
    while stack:
        item = stack.pop()
        if isinstance(item, Mapping):
            for key, value in item.items():
                yield key, value, item
                stack.append(value)
        elif isinstance(item, list):
            stack.extend(item)


def _schema_problems(schema: Mapping[str, Any]) -> list[str]:
    """External references and oversized patterns, found before the schema is built."""
    ids = {
        value.split("#", 1)[0]
        for key, value, _ in _walk(schema)
        if key in ("$id", "id") and isinstance(value, str)
    }
    problems: list[str] = []
    for key, value, _ in _walk(schema):
        if key in _REF_KEYWORDS and isinstance(value, str):
            base = value.split("#", 1)[0]
            if base and base not in ids:
                problems.append(
                    f"{key} {value!r} points outside the schema; only references inside "
                    "the document resolve"
                )
        elif key == "pattern" and isinstance(value, str) and len(value) > MAX_PATTERN_CHARS:
            problems.append(f"a pattern is longer than {MAX_PATTERN_CHARS} characters")
        elif key == "patternProperties" and isinstance(value, Mapping):
            if any(len(str(p)) > MAX_PATTERN_CHARS for p in value):
                problems.append(f"a pattern is longer than {MAX_PATTERN_CHARS} characters")
    return problems


def _short(text: str) -> str:
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


def _where(path: Any) -> str:
    parts = [str(p) for p in path]
    return "/".join(parts) if parts else "(root)"


def build_validator(schema: Any) -> Any:
    """A checking-only validator for a client's schema; ValueError says what is wrong."""
    if isinstance(schema, bool):  # true accepts all, false nothing
        schema = {} if schema else {"not": {}}
    if not isinstance(schema, Mapping):
        raise ValueError("'schema' must be a JSON Schema object")
    problems = _schema_problems(schema)
    if problems:
        raise ValueError("; ".join(problems))
    js = _jsonschema()
    regex = js.RegexOptions(size_limit=_REGEX_SIZE_LIMIT, dfa_size_limit=_REGEX_SIZE_LIMIT)
    try:
        return js.validator_for(dict(schema), retriever=_refuse_retrieval, pattern_options=regex)
    except _schema_errors() as exc:
        message = getattr(exc, "message", None) or str(exc).split("\n", 1)[0]
        raise ValueError(f"invalid JSON Schema: {_short(message)}") from None


class ValidateKind(BaseKind):
    """`{"source": template, "schema": {...}}`: passes the source through as
    `{"value": source}` if it validates (the schema's own `$schema` picks the draft,
    default 2020-12); otherwise fails with `validation_failed` listing the errors.
    `$ref`s resolve only inside the schema. `source` defaults to the one dependency's
    output.
    """

    name = "validate"
    node_type = ValidateNode

    def compile(self, node: NodeDef) -> ValidateParams:
        typed = cast(ValidateNode, node)
        collect = ProblemCollector(node)
        refs: set[str] = set()
        source = None
        if typed.source is not UNSET:
            source = collect.template(typed.source, "source")
            refs |= source.references if source else set()
        else:
            source_problem(node, collect)
            refs |= set(node.depends_on)
        validator = None
        try:
            validator = build_validator(typed.schema)
        except ValueError as exc:
            collect.add("invalid_schema", str(exc), "schema")
        collect.raise_if_any()
        return ValidateParams(references=frozenset(refs), source=source, validator=validator)

    async def run(self, node: NodeDef, ctx: NodeContext) -> Any:
        # Checking a big document is CPU work: off the loop when it does not fit the
        # inline slice (NodeContext.compute).
        return await ctx.compute(lambda: self._check(node, ctx))

    @staticmethod
    def _check(node: NodeDef, ctx: NodeContext) -> Any:
        params = cast(ValidateParams, ctx.compiled)
        assert params.validator is not None
        value = ctx.render(params.source) if params.source else ctx.dependency_output()
        ctx.input = value
        # Validation walks the document: charged by its size, which also sends a big one
        # off the event loop.
        ctx.charge(measure(value, max(0, ctx.budget.ops_left)), what="validate")
        try:
            errors = sorted(
                params.validator.iter_errors(value), key=lambda e: [str(p) for p in e.instance_path]
            )
        except _schema_errors() as exc:
            raise NodeError(
                f"node {node.id!r}: schema could not be applied: {_short(str(exc))}",
                code="invalid_schema",
                node_id=node.id,
            ) from exc
        if errors:
            listed = "; ".join(
                f"{_where(e.instance_path)}: {_short(e.message)}"
                for e in errors[:MAX_LISTED_ERRORS]
            )
            more = len(errors) - MAX_LISTED_ERRORS
            tail = f"; and {more} more" if more > 0 else ""
            raise NodeError(
                f"node {node.id!r}: {len(errors)} schema error(s): {listed}{tail}",
                code="validation_failed",
                node_id=node.id,
            )
        return {"value": value}
