"""Checking an intent that arrived over the wire, before the Data or Viz agent uses it.

Wrong JSON types are MalformedInput (400); values outside the allowed sets (an
unknown aggregation or operator, a limit out of range) are UnusableInput (422).
Column names are not checked here: the Data agent checks them against its
dataset, the Viz agent against the columns it was given.
"""

from __future__ import annotations

from typing import Any, Final, cast

from agents.reference.contract import MalformedInput, UnusableInput
from agents.reference.intent import (
    AGGREGATIONS,
    CHART_HINTS,
    OPERATORS,
    ORDERS,
    Aggregation,
    ChartHint,
    Filter,
    FilterValue,
    Intent,
    Operator,
    Order,
    Scalar,
)

MAX_LIMIT: Final = 10_000
MAX_IN_VALUES: Final = 1_000
MAX_FILTERS: Final = 50
MAX_GROUPS: Final = 5


def _is_scalar(value: object) -> bool:
    # bool is an int subclass, but `year = true` is never what anyone meant.
    return isinstance(value, str | int | float) and not isinstance(value, bool)


def _string(document: dict[str, Any], key: str, *, default: str | None = None) -> str:
    value = document.get(key, default)
    if not isinstance(value, str):
        raise MalformedInput(f"intent '{key}' must be a string")
    return value


def _choice(document: dict[str, Any], key: str, allowed: frozenset[str]) -> str | None:
    value = document.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise MalformedInput(f"intent '{key}' must be a string or null")
    if value not in allowed:
        raise UnusableInput(
            f"intent '{key}' {value!r} is not one of {sorted(allowed)}", code=f"unsupported_{key}"
        )
    return value


def _string_list(document: dict[str, Any], key: str) -> list[str]:
    value = document.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise MalformedInput(f"intent '{key}' must be a list of strings")
    return list(dict.fromkeys(cast(list[str], value)))


def _filter_value(op: str, value: object, index: int) -> FilterValue:
    if op == "in":
        if not isinstance(value, list) or not all(_is_scalar(v) for v in value):
            raise MalformedInput(f"filter {index}: 'in' needs a list of strings or numbers")
        if not 0 < len(value) <= MAX_IN_VALUES:
            raise UnusableInput(f"filter {index}: 'in' needs 1 to {MAX_IN_VALUES} values")
        return cast(list[Scalar], list(value))
    if not _is_scalar(value):
        raise MalformedInput(f"filter {index}: 'value' must be a string or a number")
    return cast(Scalar, value)


def _filters(document: dict[str, Any]) -> list[Filter]:
    raw = document.get("filters", [])
    if not isinstance(raw, list):
        raise MalformedInput("intent 'filters' must be a list")
    if len(raw) > MAX_FILTERS:
        raise UnusableInput(f"at most {MAX_FILTERS} filters")
    filters: list[Filter] = []
    for index, item in enumerate(raw):
        if not isinstance(item, dict):
            raise MalformedInput(f"filter {index} must be an object")
        column, op = item.get("field"), item.get("op")
        if not isinstance(column, str) or not isinstance(op, str):
            raise MalformedInput(f"filter {index}: 'field' and 'op' must be strings")
        if op not in OPERATORS:
            raise UnusableInput(
                f"filter {index}: operator {op!r} is not one of {sorted(OPERATORS)}",
                code="unsupported_operator",
            )
        value = _filter_value(op, item.get("value"), index)
        filters.append({"field": column, "op": cast(Operator, op), "value": value})
    return filters


def _limit(document: dict[str, Any]) -> int | None:
    value = document.get("limit")
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise MalformedInput("intent 'limit' must be an integer or null")
    if not 1 <= value <= MAX_LIMIT:
        raise UnusableInput(f"intent 'limit' must be between 1 and {MAX_LIMIT}")
    return value


def validate_intent(value: object) -> Intent:
    """`value` checked and normalised into an Intent (a new dict; duplicates dropped).

    `query`, `group_by`, `filters`, `order`, `limit` and `chart_hint` may be
    omitted; `metric` and `aggregation` are required.
    """
    if not isinstance(value, dict):
        raise MalformedInput("'intent' must be a JSON object")
    document = cast(dict[str, Any], value)
    aggregation = _choice(document, "aggregation", AGGREGATIONS)
    if aggregation is None:
        raise MalformedInput("intent 'aggregation' is required")
    group_by = _string_list(document, "group_by")
    if len(group_by) > MAX_GROUPS:
        raise UnusableInput(f"at most {MAX_GROUPS} group_by columns")
    return {
        "query": _string(document, "query", default=""),
        "metric": _string(document, "metric"),
        "aggregation": cast(Aggregation, aggregation),
        "group_by": group_by,
        "filters": _filters(document),
        "order": cast(Order | None, _choice(document, "order", ORDERS)),
        "limit": _limit(document),
        "chart_hint": cast(ChartHint | None, _choice(document, "chart_hint", CHART_HINTS)),
    }
