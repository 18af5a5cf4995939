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

import functools
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
    shape, detail = _shape(tp)
    if shape == "struct":
        if isinstance(value, Mapping):
            return _struct(value, detail, path)
    elif shape == "union":
        return _union(value, tp, detail, path)
    elif shape == "list":
        if isinstance(value, list):
            found = [i for n, v in enumerate(value) for i in explain(v, detail, (*path, n))]
            if found:
                return found
    elif shape == "dict":
        if isinstance(value, Mapping):
            key_type, value_type = detail
            found = []
            for key, item in value.items():
                found += explain(key, key_type, (*path, key))
                found += explain(item, value_type, (*path, key))
            if found:
                return found
    return _leaf(value, tp, path)


@functools.cache
def _shape(tp: Any) -> tuple[str, Any]:
    """What `tp` is, for the walk (cached: a definition walks the same few types
    thousands of times): a Struct, a union, a list or tuple, a mapping, or a leaf."""
    base = _unwrap(tp)
    if isinstance(base, type) and issubclass(base, Struct):
        return "struct", base
    if _is_union(base):
        args = get_args(base)
        options = tuple(a for a in args if a is not type(None) and a is not UnsetType)
        structs = tuple(o for o in options if isinstance(o, type) and issubclass(o, Struct))
        tags = {cls.__struct_config__.tag: cls for cls in structs} if len(structs) > 1 else {}
        return "union", _Union(options, len(options) < len(args), tags)
    origin = get_origin(base)
    if origin in (list, tuple):
        args = get_args(base)
        return "list", args[0] if args else Any
    if origin in (dict, Mapping):
        return "dict", get_args(base) or (Any, Any)
    return "leaf", None


@dataclass(frozen=True, slots=True)
class _Union:
    options: tuple[Any, ...]
    nullable: bool
    # Tag value -> class, for a union of tagged Structs (empty otherwise).
    tags: dict[Any, type[Struct]]


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
        message = _message_of(exc)
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


def _message_of(exc: msgspec.ValidationError) -> str:
    """msgspec's message without its "- at `$...`" suffix (the caller says where)."""
    return _AT.sub("", str(exc))


@functools.cache
def _fields(cls: type[Struct]) -> tuple[msgspec.structs.FieldInfo, ...]:
    # msgspec resolves the annotations on every call: once per class is enough.
    return msgspec.structs.fields(cls)


def _struct(value: Mapping[str, Any], cls: type[Struct], path: Path) -> list[Issue]:
    try:
        # msgspec keeps a Struct class's decoding plan: a valid object costs a microsecond.
        msgspec.convert(value, cls)
    except msgspec.ValidationError:
        pass
    else:
        return []
    fields = _fields(cls)
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


def _union(value: Any, tp: Any, union: _Union, path: Path) -> list[Issue]:
    if value is None and union.nullable:
        return []
    if union.tags and isinstance(value, Mapping):
        return _tagged(value, union.tags, path)
    for option in union.options:
        shape, _ = _shape(option)
        if (shape in ("struct", "dict") and isinstance(value, Mapping)) or (
            shape == "list" and isinstance(value, list)
        ):
            return explain(value, option, path)
    return _leaf(value, tp, path)


def _tagged(value: Mapping[str, Any], tags: dict[Any, type[Struct]], path: Path) -> list[Issue]:
    tag_field = next(iter(tags.values())).__struct_config__.tag_field
    assert tag_field is not None  # msgspec allows several structs in a union only if tagged
    if tag_field not in value:
        return [Issue(path, "missing_field", f"missing required field {tag_field!r}", (tag_field,))]
    tag = value[tag_field]
    cls = tags.get(tag) if isinstance(tag, str | int) else None
    if cls is None:
        message = f"unknown {tag_field} {tag!r}"
        return [Issue((*path, tag_field), "unknown_tag", message, (str(tag),))]
    return _struct(value, cls, path)
