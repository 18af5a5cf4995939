"""Typed bodies from bounded JSON: msgspec decodes, and its errors become our 400s, here only.

`read_json_object` (api/requests.py) has already bounded the body (size, time,
depth) and parsed it, so msgspec only ever converts a small, shallow-enough
object into a body type (api/bodies.py). msgspec's `ValidationError` carries one
message in a fixed form ("Expected `str | null`, got `int` - at `$.query`");
`decode` reads it into the error codes this API has always answered with, each
naming the field:

    unknown field(s)                    400 unknown_field  (every unknown field, sorted)
    missing field, or null where a
      value is required                 400 missing_field
    wrong JSON type                     400 invalid_type
    a value outside an enum/constraint  the field's own error (`invalid_value`), else
                                        400 invalid_value

tests/orchestrator/api/test_decoding.py pins each message form msgspec produces, so a
msgspec release that rewords one fails there, not in production.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import msgspec

from orchestrator.api.errors import BadRequest

Body = TypeVar("Body", bound=msgspec.Struct)
# field name, the value sent -> the error to raise for a value the type does not allow.
ValueRefusal = Callable[[str, Any], Exception]

_AT = r"(?: - at `\$(?P<path>[^`]*)`)?$"
_MISSING = re.compile(r"^Object missing required field `(?P<field>[^`]+)`" + _AT)
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<field>[^`]+)`" + _AT)
_TYPE = re.compile(r"^Expected `(?P<expected>[^`]+)`, got `(?P<got>[^`]+)`" + _AT)
_ENUM = re.compile(r"^Invalid enum value (?P<value>.*?)" + _AT)
_CONSTRAINT = re.compile(r"^Expected `(?P<expected>[^`]+)` (?P<rule>[^`]+?)" + _AT)

# msgspec's type names in "Expected `...`" -> how our messages say them.
_EXPECTED = {
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "a boolean",
    "object": "an object",
    "array": "an array",
}
# msgspec's names of what was sent -> the JSON names (as `json_type` says them).
_GOT = {"int": "number", "float": "number", "str": "string", "bool": "boolean"}


def decode(
    body: Mapping[str, Any],
    model: type[Body],
    *,
    invalid_value: Mapping[str, ValueRefusal] | None = None,
) -> Body:
    """`body` as a `model`, or the ApiError saying what is wrong with it (and where)."""
    try:
        return msgspec.convert(body, model, strict=True)
    except msgspec.ValidationError as exc:
        raise _translate(str(exc), body, model, invalid_value or {}) from None


def field_names(model: type[msgspec.Struct]) -> tuple[str, ...]:
    """The JSON names of a body's fields."""
    return tuple(f.encode_name for f in msgspec.structs.fields(model))


def unknown_fields(body: Mapping[str, Any], model: type[msgspec.Struct]) -> list[str]:
    return sorted(set(body) - set(field_names(model)))


def _translate(
    message: str,
    body: Mapping[str, Any],
    model: type[msgspec.Struct],
    invalid_value: Mapping[str, ValueRefusal],
) -> Exception:
    # Unknown fields first, all of them: msgspec stops at the first problem it meets.
    unknown = unknown_fields(body, model)
    if unknown:
        return BadRequest(
            f"unknown field(s): {', '.join(unknown)}; "
            f"allowed: {', '.join(sorted(field_names(model)))}",
            code="unknown_field",
            details={"fields": unknown},
        )
    if match := _UNKNOWN.match(message):  # in a nested object
        field = _field(match["path"], match["field"])
        return BadRequest(
            f"unknown field(s): {field}", code="unknown_field", details={"fields": [field]}
        )
    if match := _MISSING.match(message):
        return _missing(_field(match["path"], match["field"]))
    if match := _TYPE.match(message):
        field = _field(match["path"])
        if match["got"] == "null":  # null is "not sent" to this API
            return _missing(field)
        expected, got = _expected(match["expected"]), _GOT.get(match["got"], match["got"])
        return BadRequest(
            f"'{field}' must be {expected}, got {got}",
            code="invalid_type",
            details={"field": field, "expected": expected, "got": got},
        )
    match = _ENUM.match(message) or _CONSTRAINT.match(message)
    if match:
        field = _field(match["path"])
        value = body.get(field)
        if field in invalid_value:
            return invalid_value[field](field, value)
        rule = match.groupdict().get("rule")
        return BadRequest(
            f"'{field}' has a value not allowed here"
            + (f": it must be {rule}" if rule else f" ({_shown(value)})"),
            code="invalid_value",
            details={"field": field},
        )
    return BadRequest(message, code="invalid_body")


def _field(path: str | None, name: str | None = None) -> str:
    # "$.query" -> "query"; "$.a[0].b" -> "a[0].b"; a missing field is named after its object.
    where = (path or "").removeprefix(".")
    if name is None:
        return where or "$"
    return f"{where}.{name}" if where else name


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _missing(field: str) -> BadRequest:
    return BadRequest(
        f"missing field '{field}'", code="missing_field", details={"field": field}
    )


def _expected(names: str) -> str:
    words = [_EXPECTED.get(n, n) for n in names.split(" | ") if n != "null"]
    return " or ".join(words) or "null"
