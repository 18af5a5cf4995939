"""Dot paths into JSON values: ``"data.rows.0.region"``.

A path is one or more segments of ``[A-Za-z0-9_-]`` joined by ``.``. Resolving it
against a mapping looks each segment up in turn: a key in a mapping, a non-negative
integer index in a list (or tuple). Nothing else is ever read — no attributes, no
calls — so a path sent by a client can only reach data already in the scope.

```
LookupError
└── PathError      # malformed path, or a segment that cannot be resolved; .path, .segment
```
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from orchestrator.errors import EvaluationError

__all__ = [
    "PathError",
    "json_type",
    "resolve_path",
    "resolve_segments",
    "split_path",
    "with_article",
]

_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")
_INDEX = re.compile(r"[0-9]+")


class PathError(EvaluationError, LookupError):
    """A path is malformed or does not resolve.

    `path` is the whole path as written; `segment` is the segment that failed (None
    when the path as a whole is wrong, e.g. empty). The message names both.
    """

    def __init__(self, reason: str, *, path: str, segment: str | None = None) -> None:
        super().__init__(f"path {path!r}: {reason}")
        self.path = path
        self.segment = segment
        self.reason = reason


def json_type(value: Any) -> str:
    """The JSON name of a value's type, for messages people read ("object", "array", ...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, list | tuple):
        return "array"
    return type(value).__name__


def with_article(kind: str) -> str:
    """``"object"`` -> ``"an object"``; ``"null"`` stays ``"null"``."""
    if kind == "null":
        return kind
    return f"an {kind}" if kind[:1] in "aeiou" else f"a {kind}"


def split_path(path: str) -> tuple[str, ...]:
    """Split and validate a dot path; raises PathError naming the bad segment."""
    if not isinstance(path, str):
        raise PathError(f"a path must be a string, not {json_type(path)}", path=repr(path))
    if not path:
        raise PathError("path is empty", path=path)
    segments = tuple(path.split("."))
    for position, segment in enumerate(segments, start=1):
        if not segment:
            raise PathError(f"segment {position} is empty", path=path, segment=segment)
        if not _SEGMENT.fullmatch(segment):
            raise PathError(
                f"segment {segment!r} may only contain letters, digits, '_' and '-'",
                path=path,
                segment=segment,
            )
    return segments


def resolve_segments(root: Mapping[str, Any], segments: Sequence[str]) -> Any:
    """Resolve already-split segments against `root`; raises PathError.

    For callers that hold paths already validated (templates, transforms).
    """
    path = ".".join(segments)
    current: Any = root
    for depth, segment in enumerate(segments):
        where = ".".join(segments[:depth])
        if isinstance(current, Mapping):
            try:
                current = current[segment]
            except KeyError:
                reason = (
                    f"key {segment!r} not found in {where!r}"
                    if where
                    else f"unknown name {segment!r}"
                )
                raise PathError(reason, path=path, segment=segment) from None
        elif isinstance(current, list | tuple):
            if not _INDEX.fullmatch(segment):
                raise PathError(
                    f"{where!r} is an array; {segment!r} is not an index",
                    path=path,
                    segment=segment,
                )
            index = int(segment)
            if index >= len(current):
                raise PathError(
                    f"index {index} out of range for {where!r} (length {len(current)})",
                    path=path,
                    segment=segment,
                )
            current = current[index]
        else:
            raise PathError(
                f"{where!r} is {with_article(json_type(current))}, "
                f"cannot look up {segment!r} in it",
                path=path,
                segment=segment,
            )
    return current


def resolve_path(root: Mapping[str, Any], path: str) -> Any:
    """The value at `path` in `root`: mapping keys and integer list indexes only.

    Raises PathError if the path is malformed or any segment does not resolve.
    """
    return resolve_segments(root, split_path(path))
