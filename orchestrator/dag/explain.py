"""Every problem of a value against a msgspec type, not only the first.

msgspec stops at the first error, which is what the fast path wants: a valid
definition decodes in one call. A refused definition should list everything wrong
with it at once, so the refusal path walks the type with the value, using only the
model (`msgspec.structs.fields` and the type annotations): unknown fields and missing
ones per object, then each field's value against its field's type, down to the
leaves, where msgspec's own message says what is wrong. A rule of a class's own
(`__post_init__`) is reported on the object once its fields are fine.

Tagged unions (the node kinds) are followed by their tag; an unknown tag is
reported by `on_unknown_tag`'s caller (dag/parse.py knows what to say about kinds).
"""

from __future__ import annotations

import re
import types
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import msgspec
from msgspec import Struct, UnsetType

Path = tuple[str | int, ...]
IssueKind = Literal["unknown_field", "missing_field", "invalid_value", "unknown_tag"]

_AT = re.compile(r" - at `\$[^`]*`$")


@dataclass(frozen=True, slots=True)
class Issue:
    """One problem: where (the path into the value), what kind, a message for people,
    and the field names it is about (unknown or missing fields; the tag)."""

    path: Path
    kind: IssueKind
    message: str
    names: tuple[str, ...] = ()


def explain(value: Any, tp: Any, path: Path = ()) -> list[Issue]:
    """Every issue of `value` against `tp` ([] if it converts)."""
    base = _unwrap(tp)
    if isinstance(base, type) and issubclass(base, Struct):
        if isinstance(value, Mapping):
            return _struct(value, base, path)
    elif _is_union(base):
        return _union(value, tp, base, path)
    elif get_origin(base) in (list, tuple) and isinstance(value, list):
        args = get_args(base)
        item = args[0] if args else Any
        found = [i for n, v in enumerate(value) for i in explain(v, item, (*path, n))]
        if found:
            return found
    elif get_origin(base) in (dict, Mapping) and isinstance(value, Mapping):
        key_type, value_type = get_args(base) or (Any, Any)
        found = []
        for key, item in value.items():
            found += explain(key, key_type, (*path, key))
            found += explain(item, value_type, (*path, key))
        if found:
            return found
    return _leaf(value, tp, path)


def _unwrap(tp: Any) -> Any:
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    return tp


def _is_union(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType)


def _leaf(value: Any, tp: Any, path: Path) -> list[Issue]:
    try:
        msgspec.convert(value, tp)
    except msgspec.ValidationError as exc:
        message = message_of(exc)
        allowed = _choices(tp)
        if allowed and message.startswith("Invalid enum value"):
            message += f" (one of: {', '.join(allowed)})"
        return [Issue(path, "invalid_value", message)]
    return []


def _choices(tp: Any) -> list[str]:
    """The values an enum or a Literal (optional or not) allows, for messages."""
    base = _unwrap(tp)
    if _is_union(base):
        return [c for arg in get_args(base) for c in _choices(arg)]
    if isinstance(base, type) and issubclass(base, Enum):
        return [str(member.value) for member in base]
    if get_origin(base) is Literal:
        return [str(v) for v in get_args(base)]
    return []


def message_of(exc: msgspec.ValidationError) -> str:
    """msgspec's message without its "- at `$...`" suffix (the caller says where)."""
    return _AT.sub("", str(exc))


def _struct(value: Mapping[str, Any], cls: type[Struct], path: Path) -> list[Issue]:
    fields = msgspec.structs.fields(cls)
    declared = {f.encode_name for f in fields}
    tag_field = cls.__struct_config__.tag_field
    found: list[Issue] = []
    unknown = tuple(str(k) for k in value if k not in declared and k != tag_field)
    if unknown:
        listed = ", ".join(repr(n) for n in unknown)
        found.append(Issue(path, "unknown_field", f"unknown field {listed}", unknown))
    missing = tuple(f.encode_name for f in fields if f.required and f.encode_name not in value)
    if missing:
        listed = ", ".join(repr(n) for n in missing)
        found.append(Issue(path, "missing_field", f"missing required field {listed}", missing))
    for f in fields:
        if f.encode_name in value:
            found += explain(value[f.encode_name], f.type, (*path, f.encode_name))
    return found or _leaf(value, cls, path)


def _union(value: Any, tp: Any, union: Any, path: Path) -> list[Issue]:
    options = [a for a in get_args(union) if a is not type(None) and a is not UnsetType]
    if value is None and len(options) < len(get_args(union)):
        return []
    structs = [o for o in options if isinstance(o, type) and issubclass(o, Struct)]
    if len(structs) > 1 and isinstance(value, Mapping):
        return _tagged(value, structs, path)
    for option in options:
        base = _unwrap(option)
        if (
            (isinstance(base, type) and issubclass(base, Struct) and isinstance(value, Mapping))
            or (get_origin(base) in (list, tuple) and isinstance(value, list))
            or (get_origin(base) in (dict, Mapping) and isinstance(value, Mapping))
        ):
            return explain(value, option, path)
    return _leaf(value, tp, path)


def _tagged(value: Mapping[str, Any], structs: list[type[Struct]], path: Path) -> list[Issue]:
    tag_field = structs[0].__struct_config__.tag_field
    assert tag_field is not None  # msgspec allows several structs in a union only if tagged
    if tag_field not in value:
        return [Issue(path, "missing_field", f"missing required field {tag_field!r}", (tag_field,))]
    tag = value[tag_field]
    for cls in structs:
        if cls.__struct_config__.tag == tag:
            return _struct(value, cls, path)
    return [Issue((*path, tag_field), "unknown_tag", f"unknown {tag_field} {tag!r}", (str(tag),))]
