"""One value of the settings, checked against its field's type: the environment and TOML both.

The settings model is typed dataclasses whose field types carry their constraints as
`Annotated[..., msgspec.Meta(...)]` (orchestrator/settings.py, circuit/config.py,
agents/registry.py). msgspec does the converting and checking; this module only turns
its verdict into a `ConfigError` that names where the value came from, the key, the
value and what was expected — the same words for an environment variable and a key
of the file.

Environment values are strings, so they are converted *laxly* ("15" is 15); TOML
values already have types, so a string where a number belongs is refused.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import msgspec

from orchestrator.errors import StartupError


class ConfigError(StartupError, ValueError):
    """The environment or the config file is unusable; start-up must stop."""

    def __init__(self, message: str, *, source: str, key: str) -> None:
        super().__init__(f"{source}: {key}: {message}")
        self.source = source
        self.key = key
        self.problem = message


def convert(value: object, tp: Any, *, source: str, key: str, lax: bool) -> Any:
    """`value` as the type `tp` (with its constraints), or a ConfigError naming `key`."""
    try:
        out = msgspec.convert(value, tp, strict=not lax)
    except msgspec.ValidationError:
        raise ConfigError(
            f"expected {describe(tp)}, got {value!r}", source=source, key=key
        ) from None
    # msgspec reads "nan" and "inf" as floats; no count, size or duration is either.
    if isinstance(out, float) and not math.isfinite(out):
        raise ConfigError(
            f"expected {describe(tp)} (finite), got {value!r}", source=source, key=key
        )
    return out


def describe(tp: Any) -> str:
    """What a value of `tp` looks like, in words: "an integer > 0", "one of: rate, count"."""
    origin = get_origin(tp)
    if origin is typing.Annotated:
        inner, *metas = get_args(tp)
        for meta in metas:
            if isinstance(meta, msgspec.Meta) and meta.description:
                return meta.description
        bounds = [
            f"{op} {getattr(meta, name)}"
            for meta in metas
            if isinstance(meta, msgspec.Meta)
            for name, op in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))
            if getattr(meta, name) is not None
        ]
        return " ".join([describe(inner), *bounds])
    if origin is Literal:
        return "one of: " + ", ".join(str(choice) for choice in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(describe(arg) for arg in get_args(tp) if arg is not type(None))
    if origin in (tuple, list):
        return f"a list of {describe(get_args(tp)[0]).removeprefix('a ').removeprefix('an ')}s"
    return _WORDS.get(tp, getattr(tp, "__name__", str(tp)))


_WORDS: dict[Any, str] = {
    int: "an integer",
    float: "a number",
    str: "a string",
    bool: "true or false",
}

_D = TypeVar("_D")


@functools.cache
def type_hints(cls: Any) -> dict[str, Any]:
    """`cls`'s field types with their constraints (resolved once: it is not cheap)."""
    return typing.get_type_hints(cls, include_extras=True)


def overlay(
    base: _D, table: object, *, source: str, key: str, fixed: frozenset[str] = frozenset()
) -> _D:
    """`base` (a dataclass) with the TOML table's values, each checked against its field.

    A field whose value is itself a dataclass takes a sub-table, overlaid the same way,
    so untouched keys keep `base`'s values (an agent's own defaults, not the class's).
    `fixed` fields are not keys of the table (an agent's name is its table's name).
    """
    if not isinstance(table, dict):
        raise ConfigError("must be a table", source=source, key=key)
    owner: Any = type(base)
    hints = type_hints(owner)
    fields = set(hints) & {f.name for f in dataclasses.fields(base)} - fixed  # type: ignore[arg-type]
    changes: dict[str, Any] = {}
    for name, value in table.items():
        where = f"{key}.{name}"
        if name not in fields:
            allowed = ", ".join(sorted(fields))
            raise ConfigError(f"unknown key (allowed: {allowed})", source=source, key=where)
        current = getattr(base, name)
        if dataclasses.is_dataclass(current):
            changes[name] = overlay(current, value, source=source, key=where)
        else:
            changes[name] = convert(value, hints[name], source=source, key=where, lax=False)
    return dataclasses.replace(base, **changes)  # type: ignore[type-var]
