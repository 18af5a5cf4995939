"""The `components/schemas` of the OpenAPI document, generated from the body types.

Every request body (api/bodies.py) and JSON response body (api/replies.py) the
route table names is one msgspec Struct; `msgspec.json.schema_components` turns
them, and every type they use (nested Structs, the status enums), into JSON
Schema 2020-12 components named after the classes. Nothing here is written by
hand, so the document cannot drift from what the routes decode and encode.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

from orchestrator.api.bodies import DEFINITION_COMPONENT, Error

Model = type[msgspec.Struct]

REF_PREFIX = "#/components/schemas/"


def ref(model: Model) -> dict[str, str]:
    """A `$ref` to `model`'s component."""
    return {"$ref": REF_PREFIX + model.__name__}


def components(
    models: Iterable[Model], *, definition: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The component schemas of `models` (and `Error`), of every type they use, and of
    the workflow definition (`definition`: its JSON Schema; see `definition_components`)."""
    unique: set[Model] = {Error, *models}
    wanted = sorted(unique, key=lambda m: m.__name__)
    names = [m.__name__ for m in wanted]
    if len(set(names)) != len(names):
        raise RuntimeError(f"two body types share a name: {sorted(names)}")
    _, schemas = msgspec.json.schema_components(wanted, ref_template=REF_PREFIX + "{name}")
    schemas.update(definition_components(definition))
    return dict(sorted(schemas.items()))


def definition_components(definition: dict[str, Any] | None) -> dict[str, Any]:
    """The definition's JSON Schema as components: its root as `WorkflowDefinition`, each of
    its `$defs` as `WorkflowDefinition.<name>`, its `#/$defs/` references rewritten to
    them (the document has one root, so the schema's own `$id` and `$schema` go)."""
    if definition is None:
        return {DEFINITION_COMPONENT: {"type": "object", "description": _DEFINITION_TEXT}}
    root = {k: v for k, v in definition.items() if k not in ("$schema", "$id", "$defs")}
    hoisted = {
        f"{DEFINITION_COMPONENT}.{name}": schema
        for name, schema in definition.get("$defs", {}).items()
    }
    out = {DEFINITION_COMPONENT: root, **hoisted}
    return {name: _rehome(schema) for name, schema in out.items()}


_DEFINITION_TEXT = "a workflow definition: see GET /api/workflows/schema"


def _rehome(node: Any) -> Any:
    if isinstance(node, list):
        return [_rehome(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _rehome(v) for k, v in node.items()}
    if isinstance(out.get("$ref"), str):
        out["$ref"] = _rehome_ref(out["$ref"])
    mapping = out.get("discriminator", {}).get("mapping") if "discriminator" in out else None
    if isinstance(mapping, dict):  # OpenAPI's discriminator names its targets by reference too
        out["discriminator"] = {
            **out["discriminator"],
            "mapping": {k: _rehome_ref(v) if isinstance(v, str) else v for k, v in mapping.items()},
        }
    return out


def _rehome_ref(target: str) -> str:
    if target == "#":
        return REF_PREFIX + DEFINITION_COMPONENT
    if target.startswith("#/$defs/"):
        return f"{REF_PREFIX}{DEFINITION_COMPONENT}.{target.removeprefix('#/$defs/')}"
    return target
