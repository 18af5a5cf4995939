"""The published JSON Schema of workflow definitions, generated from the model.

`msgspec.json.schema_components` writes the schema of the definition type of a
registry's kinds (dag/model.py, each kind's `node_type`): the node is a union
tagged by `kind` (an OpenAPI `discriminator` says so), unknown fields are refused
everywhere (`additionalProperties: false`). Rules a class checks in `__post_init__`
are added from its `json_schema_extra`, and a service's built-in fallbacks narrow
`builtin` to their names. Served at GET /api/workflows/schema; the OpenAPI document
can embed it (`definition_schema(...)` returns a fresh dict each call).
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Collection, Iterator
from typing import Annotated, Any, get_args, get_origin

import msgspec
from msgspec import Struct

from orchestrator.dag.kinds import NodeKindRegistry, default_kinds
from orchestrator.dag.model import Fallback, WorkflowDef

SCHEMA_ID = "urn:agent-orchestrator:workflow-definition:1"
DRAFT = "https://json-schema.org/draft/2020-12/schema"
_DESCRIPTION = (
    "A DAG of nodes run by the orchestrator's engine. Each node's `kind` selects its "
    "fields (the node kinds this service knows, including any it was started with). "
    "Unknown fields are refused everywhere."
)


def definition_schema(
    kinds: NodeKindRegistry | None = None, *, builtins: Collection[str] | None = None
) -> dict[str, Any]:
    """The JSON Schema (Draft 2020-12) of definitions using `kinds` (default: the
    built-in kinds); with `builtins`, a fallback's `builtin` must be one of them.

    A fresh copy each call (callers may embed or change it).
    """
    model = (kinds or default_kinds()).definition_type()
    names = None if builtins is None else tuple(sorted(builtins))
    return copy.deepcopy(_generated(model, names))


@functools.lru_cache(maxsize=32)
def _generated(model: type[WorkflowDef], builtins: tuple[str, ...] | None) -> dict[str, Any]:
    structs = list(dict.fromkeys(_structs(model)))
    refs, defs = msgspec.json.schema_components(structs, ref_template="#/$defs/{name}")
    name_of = {cls: ref["$ref"].rsplit("/", 1)[-1] for cls, ref in zip(structs, refs, strict=True)}
    for cls, name in name_of.items():
        extra = getattr(cls, "json_schema_extra", None)
        if extra:
            defs[name].update(copy.deepcopy(extra))
    if builtins is not None:
        fallback = defs[name_of[Fallback]]
        fallback["properties"]["builtin"] = {
            "enum": list(builtins),
            "description": "one of this service's built-in fallbacks",
        }
    root = defs.pop(name_of[model])
    root.pop("title", None)
    return {
        "$schema": DRAFT,
        "$id": SCHEMA_ID,
        "title": "Workflow definition",
        "description": _DESCRIPTION,
        **root,
        "$defs": defs,
    }


def _structs(tp: Any) -> Iterator[type[Struct]]:
    """Every Struct class reachable from `tp` through its fields' annotations."""
    seen: set[type[Struct]] = set()
    stack = [tp]
    while stack:
        item = stack.pop()
        if isinstance(item, type) and issubclass(item, Struct):
            if item in seen:
                continue
            seen.add(item)
            yield item
            stack.extend(f.type for f in msgspec.structs.fields(item))
        elif get_origin(item) is not None:
            args = get_args(item)
            # Annotated's metadata are not types.
            stack.extend(args[:1] if get_origin(item) is Annotated else args)
