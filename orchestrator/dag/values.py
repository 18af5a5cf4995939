"""The one boundary every value crosses before it is kept in a workflow's state.

Step outputs (agent answers, expression results, transforms) and workflow results
must be JSON that both stores can carry, so `json_value` makes them so, the same
way for every source:

- integers outside what orjson (both stores' serialiser) carries, -2**63 .. 2**64-1,
  become floats, exactly as orjson itself reads such a number from a request body;
  one too big even for a float is refused;
- NaN and infinities are refused (JSON has no such numbers);
- tuples and sets become lists (sets sorted when their items allow), object keys
  become strings;
- nesting deeper than `max_depth` is refused: it could not be written, read back
  or rendered without deep recursion;
- a value larger than `max_bytes` once written out is refused. It is measured
  before it is copied: an expression can build a value full of shared references
  cheaply (`[a, a]`, node after node), which written out doubles at every step, so
  copying it first would take the process's memory and the event loop with it.

Anything else (a Python object a node kind let through) is refused, so a buggy kind
cannot leave a value the store would choke on.

```
ValueError
└── UnstorableValue     # .code: "value_out_of_range" | "nesting_too_deep" | "not_json"
                        #        | "value_too_large"
```
"""

from __future__ import annotations

import math
from typing import Any

from orchestrator.dag.budget import DEFAULT_LIMITS, measure
from orchestrator.errors import EvaluationError

__all__ = ["MAX_JSON_DEPTH", "UnstorableValue", "json_depth", "json_value"]

# Deeper than any real document; far below orjson's own limit (1024) and the
# interpreter's recursion limit, with room for the state document around it.
MAX_JSON_DEPTH = 64

_MIN_INT = -(2**63)
_MAX_INT = 2**64 - 1


class UnstorableValue(EvaluationError, ValueError):
    """A value cannot be kept as JSON; `code` says why (the step's error type)."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code


def json_value(
    value: Any, *, max_depth: int = MAX_JSON_DEPTH, max_bytes: int = DEFAULT_LIMITS.node_bytes
) -> Any:
    """`value` as plain JSON (see the module docstring); raises UnstorableValue."""
    # measure() walks each distinct container once, so this check is linear in what was
    # really built, however many times it is referenced.
    if measure(value, max_bytes) > max_bytes:
        raise UnstorableValue(
            f"the value is larger than {max_bytes:,} bytes written out", code="value_too_large"
        )
    return _convert(value, max_depth, 0)


def _convert(value: Any, max_depth: int, depth: int) -> Any:
    if value is None or isinstance(value, str | bool):
        return value
    if isinstance(value, int):
        if _MIN_INT <= value <= _MAX_INT:
            return value
        try:
            return float(value)
        except OverflowError:
            raise UnstorableValue(
                f"the number {_digits(value)} is too large to store", code="value_out_of_range"
            ) from None
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        raise UnstorableValue(f"{value} is not a JSON number", code="value_out_of_range")
    if depth >= max_depth:
        raise UnstorableValue(
            f"the value is nested more than {max_depth} levels deep", code="nesting_too_deep"
        )
    if isinstance(value, dict):
        return {
            key if isinstance(key, str) else str(key): _convert(item, max_depth, depth + 1)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [_convert(item, max_depth, depth + 1) for item in value]
    if isinstance(value, set | frozenset):
        items = [_convert(item, max_depth, depth + 1) for item in value]
        try:
            return sorted(items)
        except TypeError:
            return items
    raise UnstorableValue(f"a {type(value).__name__} is not a JSON value", code="not_json")


def json_depth(value: Any, limit: int = MAX_JSON_DEPTH) -> int:
    """How deep `value` nests (a scalar is 0), counting at most to `limit + 1`."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        depth += 1
        if depth > deepest:
            deepest = depth
            if deepest > limit:
                return deepest
        stack.extend((child, depth) for child in children)
    return deepest


def _digits(value: int) -> str:
    # str() of a huge int is itself slow (and Python caps it at 4300 digits).
    return f"of {value.bit_length()} bits"
