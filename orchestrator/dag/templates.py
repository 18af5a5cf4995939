"""Templates: JSON values with ``{{ path }}`` placeholders, rendered against a scope.

A workflow node's input is a template. Every string in it (dict keys excepted) may
hold placeholders naming a dot path (see :mod:`orchestrator.dag.paths`); there are
no expressions inside placeholders, only paths, so rendering can only copy data.

- A string that is exactly one placeholder, ``"{{ nlp.intent }}"``, renders to the
  referenced value itself, keeping its type (a list stays a list, None stays None).
  Whitespace is allowed inside the braces; any text outside them, whitespace
  included, makes the string an interpolation.
- Any other string renders by interpolation: strings as they are, numbers with
  ``str()``, and everything else (objects, arrays, booleans, null) as compact JSON,
  so ``"n={{ x }}"`` with ``x = True`` gives ``"n=true"`` as the JSON around it would.

Rendering builds new dicts and lists for the template's own structure; a value
taken from the scope by a whole-value placeholder is returned as is, not copied.

```
ValueError
└── TemplateError     # malformed placeholder, or a path that does not resolve;
                      # .template (the string), .reason, .path, .location
```
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from orchestrator.dag.paths import PathError, json_type, resolve_segments, split_path

__all__ = ["MAX_DEPTH", "Template", "TemplateError", "compile_template"]

# Deeper than any real node input, and far from the interpreter's recursion limit.
MAX_DEPTH = 64

_PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_OPEN = "{{"


class TemplateError(ValueError):
    """A template is malformed, or a path in it did not resolve while rendering.

    `template` is the string holding the bad placeholder, `reason` what is wrong,
    `path` the placeholder's path when there is one, `location` where the string
    sits in the template's JSON (``"filters.0.region"``; ``""`` for the root).
    """

    def __init__(
        self,
        reason: str,
        *,
        template: str,
        path: str | None = None,
        location: str = "",
    ) -> None:
        at = f" at {location!r}" if location else ""
        super().__init__(f"template {template!r}{at}: {reason}")
        self.template = template
        self.reason = reason
        self.path = path
        self.location = location


@dataclass(frozen=True, slots=True)
class _Ref:
    path: str
    segments: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Whole:
    text: str
    location: str
    ref: _Ref


@dataclass(frozen=True, slots=True)
class _Interpolated:
    text: str
    location: str
    parts: tuple[str | _Ref, ...]


# The compiled form mirrors the JSON: dicts and lists of compiled nodes, other values as is.
_Node = _Whole | _Interpolated | dict[str, Any] | list[Any] | str | int | float | bool | None


def _format(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        # Not JSON-serialisable (e.g. a set a caller put in the scope): say what it is.
        return str(value)


def _parse_string(text: str, location: str) -> _Node:
    if _OPEN not in text:
        return text

    def fail(reason: str, path: str | None = None) -> TemplateError:
        return TemplateError(reason, template=text, path=path, location=location)

    parts: list[str | _Ref] = []
    refs: list[_Ref] = []
    end = 0
    for match in _PLACEHOLDER.finditer(text):
        before = text[end : match.start()]
        if _OPEN in before:
            raise fail("unclosed '{{'")
        content = match.group(1)
        if _OPEN in content:
            raise fail("unclosed '{{' before another '{{'")
        path = content.strip()
        if not path:
            raise fail("empty placeholder '{{ }}'")
        try:
            segments = split_path(path)
        except PathError as exc:
            raise fail(f"invalid path {path!r}: {exc.reason}", path) from exc
        ref = _Ref(path, segments)
        if before:
            parts.append(before)
        parts.append(ref)
        refs.append(ref)
        end = match.end()
    rest = text[end:]
    if _OPEN in rest:
        raise fail("unclosed '{{'")
    if rest:
        parts.append(rest)
    if len(parts) == 1 and isinstance(parts[0], _Ref):
        return _Whole(text, location, parts[0])
    return _Interpolated(text, location, tuple(parts))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:60] + "…"


def _join(location: str, key: str | int) -> str:
    return f"{location}.{key}" if location else str(key)


def _compile(value: Any, location: str, depth: int) -> _Node:
    if depth > MAX_DEPTH:
        raise TemplateError(
            f"nested more than {MAX_DEPTH} levels deep", template=_short(value), location=location
        )
    if isinstance(value, str):
        return _parse_string(value, location)
    if isinstance(value, Mapping):
        compiled: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TemplateError(
                    f"object keys must be strings, not {json_type(key)}",
                    template=_short(key),
                    location=location,
                )
            compiled[key] = _compile(item, _join(location, key), depth + 1)
        return compiled
    if isinstance(value, list | tuple):
        return [_compile(item, _join(location, i), depth + 1) for i, item in enumerate(value)]
    if value is None or isinstance(value, bool | int | float):
        return value
    raise TemplateError(
        f"{json_type(value)} is not a JSON value", template=_short(value), location=location
    )


def _collect(node: _Node, into: list[_Ref]) -> None:
    if isinstance(node, _Whole):
        into.append(node.ref)
    elif isinstance(node, _Interpolated):
        into.extend(part for part in node.parts if isinstance(part, _Ref))
    elif isinstance(node, dict):
        for item in node.values():
            _collect(item, into)
    elif isinstance(node, list):
        for item in node:
            _collect(item, into)


_Missing = Literal["error", "null"]


def _lookup(
    scope: Mapping[str, Any], ref: _Ref, node: _Whole | _Interpolated, missing: _Missing
) -> tuple[bool, Any]:
    """(found, value); raises TemplateError for a missing path when `missing` is "error"."""
    try:
        return True, resolve_segments(scope, ref.segments)
    except PathError as exc:
        if missing == "null":
            return False, None
        raise TemplateError(
            str(exc), template=node.text, path=ref.path, location=node.location
        ) from exc


def _render(node: _Node, scope: Mapping[str, Any], missing: _Missing) -> Any:
    if isinstance(node, _Whole):
        return _lookup(scope, node.ref, node, missing)[1]
    if isinstance(node, _Interpolated):
        pieces: list[str] = []
        for part in node.parts:
            if isinstance(part, str):
                pieces.append(part)
                continue
            found, value = _lookup(scope, part, node, missing)
            if found:
                pieces.append(_format(value))
        return "".join(pieces)
    if isinstance(node, dict):
        return {key: _render(item, scope, missing) for key, item in node.items()}
    if isinstance(node, list):
        return [_render(item, scope, missing) for item in node]
    return node


@dataclass(frozen=True)
class Template:
    """A checked template, ready to render any number of times.

    `references` are the root names its paths start with (``{"inputs", "nlp"}``);
    `paths` every path it references, once each, in order of first appearance.
    Build one with compile_template.
    """

    raw: Any = field(hash=False)
    references: frozenset[str]
    paths: tuple[str, ...]
    _compiled: Any = field(repr=False, compare=False)

    def render(self, scope: Mapping[str, Any], *, missing: _Missing = "error") -> Any:
        """Render against `scope` (root name -> value).

        A path that does not resolve raises TemplateError naming it with
        ``missing="error"``; with ``missing="null"`` it renders as None when it is
        the whole value and as ``""`` inside a string.
        """
        if missing not in ("error", "null"):
            raise ValueError(f"missing must be 'error' or 'null', not {missing!r}")
        return _render(self._compiled, scope, missing)


def compile_template(value: Any) -> Template:
    """Compile any JSON value (dict/list/str/number/bool/None) into a Template.

    Raises TemplateError on a malformed placeholder (unclosed, empty, bad path),
    a non-string object key, a non-JSON value, or nesting deeper than MAX_DEPTH.
    """
    compiled = _compile(value, "", 0)
    refs: list[_Ref] = []
    _collect(compiled, refs)
    paths = tuple(dict.fromkeys(ref.path for ref in refs))
    references = frozenset(ref.segments[0] for ref in refs)
    return Template(raw=value, references=references, paths=paths, _compiled=compiled)
