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

from orchestrator.api.bodies import Error

Model = type[msgspec.Struct]

REF_PREFIX = "#/components/schemas/"


def ref(model: Model) -> dict[str, str]:
    """A `$ref` to `model`'s component."""
    return {"$ref": REF_PREFIX + model.__name__}


def components(models: Iterable[Model]) -> dict[str, Any]:
    """The component schemas of `models` (and `Error`), and of every type they use."""
    unique: set[Model] = {Error, *models}
    wanted = sorted(unique, key=lambda m: m.__name__)
    names = [m.__name__ for m in wanted]
    if len(set(names)) != len(names):
        raise RuntimeError(f"two body types share a name: {sorted(names)}")
    _, schemas = msgspec.json.schema_components(wanted, ref_template=REF_PREFIX + "{name}")
    return dict(sorted(schemas.items()))
