"""The document's components: generated from the body types, the definition's schema embedded."""

from __future__ import annotations

from typing import Any

import pytest
from jsonschema import Draft202012Validator, ValidationError

from orchestrator.api.schemas import REF_PREFIX, definition_components

# A definition schema shaped like the published one: its own $id, $defs and a self-reference.
_DEFINITION: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "urn:example:definition",
    "type": "object",
    "required": ["nodes"],
    "properties": {
        "nodes": {"type": "array", "items": {"$ref": "#/$defs/Node"}},
        "sub": {"$ref": "#"},
        "one": {
            "oneOf": [{"$ref": "#/$defs/Node"}],
            "discriminator": {"propertyName": "id", "mapping": {"a": "#/$defs/Node"}},
        },
    },
    "additionalProperties": False,
    "$defs": {
        "Node": {"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}}
    },
}


def _validator(components: dict[str, Any]) -> Draft202012Validator:
    return Draft202012Validator(
        {"$ref": REF_PREFIX + "WorkflowDefinition", "components": {"schemas": components}}
    )


def test_the_definition_schema_is_embedded_with_its_references_rehomed() -> None:
    components = definition_components(_DEFINITION)
    assert set(components) == {"WorkflowDefinition", "WorkflowDefinition.Node"}
    root = components["WorkflowDefinition"]
    assert "$id" not in root and "$defs" not in root and "$schema" not in root
    node = REF_PREFIX + "WorkflowDefinition.Node"
    assert root["properties"]["nodes"]["items"] == {"$ref": node}
    assert root["properties"]["one"]["discriminator"]["mapping"] == {"a": node}
    validator = _validator(components)
    validator.validate({"nodes": [{"id": "a"}], "sub": {"nodes": []}})
    bad: dict[str, Any]
    for bad in ({"nodes": [{"id": 1}]}, {"nodes": [], "sub": {}}, {"nodes": [], "x": 1}):
        with pytest.raises(ValidationError):
            validator.validate(bad)


def test_without_a_definition_schema_the_component_is_an_object() -> None:
    assert definition_components(None)["WorkflowDefinition"]["type"] == "object"
