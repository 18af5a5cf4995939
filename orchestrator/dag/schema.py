"""The published JSON Schema of workflow definitions, and the validator that applies it.

`schema.json` (Draft 2020-12, no unknown field allowed anywhere) is the source of
truth. Node kinds are a registry, so the node's kind-specific fields are checked by
an `if kind == X then <X's params schema>` entry per registered kind, built here from
the registry; `unevaluatedProperties: false` then refuses any field that neither the
common node fields nor the kind's params declare.

Validation runs on jsonschema-rs (Rust) when it is installed and on the pure-Python
`jsonschema` otherwise, with the same results: the Python one takes ~3 s for a
10,000-node definition, the Rust one ~15 ms (bench/dag_plan.py), and the API checks
every submitted definition with it.
"""

from __future__ import annotations

import copy
import functools
import importlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import jsonschema

SCHEMA_FILE = Path(__file__).with_name("schema.json")
SCHEMA_ID = "urn:agent-orchestrator:workflow-definition:1"

Backend = Literal["rust", "python"]


def _import_rust() -> ModuleType | None:
    try:
        return importlib.import_module("jsonschema_rs")
    except ImportError:  # pragma: no cover - depends on the environment
        return None


_rs = _import_rust()
DEFAULT_BACKEND: Backend = "rust" if _rs is not None else "python"


@functools.cache
def _base_schema_text() -> str:
    return SCHEMA_FILE.read_text(encoding="utf-8")


def base_schema() -> dict[str, Any]:
    """schema.json as shipped (the built-in kinds only); a fresh copy each call."""
    loaded: dict[str, Any] = json.loads(_base_schema_text())
    return loaded


def builtin_params_schema(kind: str) -> dict[str, Any]:
    """A reference to a built-in kind's params in schema.json (`#/$defs/kinds/<kind>`)."""
    return {"$ref": f"#/$defs/kinds/{kind}"}


@functools.cache
def builtin_param_fields(kind: str) -> frozenset[str]:
    """The fields a built-in kind declares in schema.json (empty if no such kind)."""
    params = base_schema()["$defs"]["kinds"].get(kind, {})
    return frozenset(params.get("properties", {}))


def _kind_entry(name: str, params: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "if": {"required": ["kind"], "properties": {"kind": {"const": name}}},
        "then": copy.deepcopy(dict(params)),
    }


def compose_schema(kind_params: Iterable[tuple[str, Mapping[str, Any]]]) -> dict[str, Any]:
    """schema.json with the node's kind dispatch listing exactly these kinds."""
    schema = base_schema()
    schema["$defs"]["node"]["allOf"] = [_kind_entry(name, p) for name, p in kind_params]
    return schema


@dataclass(frozen=True, slots=True)
class SchemaIssue:
    """One schema violation: where (instance path), which keyword, a message, and the
    description of the failing subschema when it has one."""

    path: tuple[str | int, ...]
    keyword: str
    message: str
    description: str | None = None
    unexpected: tuple[str, ...] = ()


def _walk(schema: Any, path: Iterable[str | int]) -> Any:
    node = schema
    for part in path:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return None
    return node


class DefinitionValidator:
    """Applies one composed schema; `issues(instance)` lists every violation."""

    def __init__(self, schema: Mapping[str, Any], *, backend: Backend = DEFAULT_BACKEND) -> None:
        self.schema = dict(schema)
        self.backend: Backend = backend
        jsonschema.Draft202012Validator.check_schema(self.schema)
        if backend == "rust":
            if _rs is None:
                raise RuntimeError("jsonschema-rs is not installed")
            self._rs_validator: Any = _rs.Draft202012Validator(self.schema)
        else:
            self._py_validator = jsonschema.Draft202012Validator(self.schema)

    def issues(self, instance: Any) -> list[SchemaIssue]:
        if self.backend == "rust":
            return self._rust_issues(instance)
        return self._python_issues(instance)

    def _rust_issues(self, instance: Any) -> list[SchemaIssue]:
        if self._rs_validator.is_valid(instance):
            return []
        out: list[SchemaIssue] = []
        for error in self._rs_validator.iter_errors(instance):
            keyword = str(error.kind.name)
            parent = _walk(self.schema, list(error.schema_path)[:-1])
            description = parent.get("description") if isinstance(parent, dict) else None
            unexpected = tuple(getattr(error.kind, "unexpected", ()) or ())
            out.append(
                SchemaIssue(
                    path=tuple(error.instance_path),
                    keyword=keyword,
                    message=str(error.message),
                    description=description,
                    unexpected=unexpected,
                )
            )
        return out

    def _python_issues(self, instance: Any) -> list[SchemaIssue]:
        out: list[SchemaIssue] = []
        for error in self._py_validator.iter_errors(instance):
            keyword = str(error.validator)
            parent = error.schema if isinstance(error.schema, dict) else None
            description = parent.get("description") if parent else None
            unexpected: tuple[str, ...] = ()
            if keyword in ("additionalProperties", "unevaluatedProperties") and isinstance(
                error.instance, dict
            ):
                unexpected = _python_unexpected(error.instance, parent or {}, keyword)
            out.append(
                SchemaIssue(
                    path=tuple(error.absolute_path),
                    keyword=keyword,
                    message=error.message,
                    description=description,
                    unexpected=unexpected,
                )
            )
        return out


def _python_unexpected(
    instance: Mapping[str, Any], schema: Mapping[str, Any], keyword: str
) -> tuple[str, ...]:
    # python-jsonschema reports the names only inside its message; recompute them for
    # additionalProperties (the declared properties are right there). For
    # unevaluatedProperties the evaluated set depends on the applicators, so the
    # message is the only source and callers fall back to it.
    if keyword != "additionalProperties":
        return ()
    declared = schema.get("properties", {})
    return tuple(sorted(k for k in instance if k not in declared))


@functools.lru_cache(maxsize=32)
def _cached_validator(key: str, backend: Backend) -> DefinitionValidator:
    kind_params: list[tuple[str, Mapping[str, Any]]] = json.loads(key)
    return DefinitionValidator(compose_schema(kind_params), backend=backend)


def validator_for(
    kind_params: Iterable[tuple[str, Mapping[str, Any]]], *, backend: Backend = DEFAULT_BACKEND
) -> DefinitionValidator:
    """The (cached) validator for a set of kinds; rebuilt only when the kinds change."""
    key = json.dumps([[name, params] for name, params in kind_params], sort_keys=True)
    return _cached_validator(key, backend)
