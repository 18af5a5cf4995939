"""An intent turned into one parameterised SELECT over the bundled `sales` table.

Identifiers come only from the dataset's column whitelist (agents.reference.dataset.COLUMNS);
every value the user supplied travels as a `?` parameter, never inside the SQL
text. Text comparisons ignore case, so "europe" finds "Europe".
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from agents.reference.contract import UnusableInput
from agents.reference.dataset import COLUMNS, DIMENSIONS, MEASURES, TABLE
from agents.reference.intent import Filter, Intent, Scalar, value_column


@dataclass(frozen=True, slots=True)
class Query:
    sql: str
    params: tuple[Scalar, ...]
    # Names of the result columns, in order: the group columns, then the value.
    columns: tuple[str, ...]


def _quote(identifier: str) -> str:
    # Only ever called with whitelisted names; quoting keeps keywords like "date" safe.
    return f'"{identifier}"'


def _known(column: str, allowed: Collection[str], role: str) -> str:
    if column not in allowed:
        raise UnusableInput(
            f"unknown {role} column {column!r}; known: {', '.join(sorted(allowed))}",
            code="unknown_column",
        )
    return column


def _value_expression(intent: Intent) -> str:
    metric, aggregation = intent["metric"], intent["aggregation"]
    if aggregation == "count":
        return f"COUNT({_quote(_known(metric, COLUMNS, 'metric'))})"
    if metric in COLUMNS and metric not in MEASURES:
        raise UnusableInput(
            f"cannot take {aggregation} of {metric!r}: it is not a measure "
            f"({', '.join(sorted(MEASURES))}); use aggregation 'count' to count rows",
            code="not_a_measure",
        )
    column = _quote(_known(metric, MEASURES, "metric"))
    expression = f"{aggregation.upper()}({column})"
    if aggregation == "avg" or (aggregation == "sum" and COLUMNS[metric] == "REAL"):
        # Money to the cent; also hides float summation noise that differs by row order.
        expression = f"ROUND({expression}, 2)"
    return expression


def _condition(item: Filter) -> tuple[str, list[Scalar]]:
    column = _known(item["field"], COLUMNS, "filter")
    target = _quote(column)
    if COLUMNS[column] == "TEXT":
        target += " COLLATE NOCASE"
    value = item["value"]
    if item["op"] == "in":
        values = value if isinstance(value, list) else [value]
        placeholders = ", ".join("?" for _ in values)
        return f"{target} IN ({placeholders})", list(values)
    if isinstance(value, list):
        raise UnusableInput(f"operator {item['op']!r} on {column!r} needs a single value")
    return f"{target} {item['op']} ?", [value]


def build_query(intent: Intent) -> Query:
    """The SELECT answering `intent`; UnusableInput names any column not in the dataset."""
    groups = [_known(column, DIMENSIONS, "group_by") for column in intent["group_by"]]
    value_name = value_column(intent)
    select = [_quote(c) for c in groups] + [f"{_value_expression(intent)} AS {_quote(value_name)}"]
    sql = f"SELECT {', '.join(select)} FROM {_quote(TABLE)}"
    params: list[Scalar] = []
    conditions = []
    for item in intent["filters"]:
        condition, values = _condition(item)
        conditions.append(condition)
        params.extend(values)
    if conditions:
        sql += " WHERE " + " AND ".join(conditions)
    if groups:
        sql += " GROUP BY " + ", ".join(_quote(c) for c in groups)
        ordering = [f"{_quote(c)} ASC" for c in groups]
        if intent["order"] is not None:
            ordering.insert(0, f"{_quote(value_name)} {intent['order'].upper()}")
        sql += " ORDER BY " + ", ".join(ordering)
    if intent["limit"] is not None:
        sql += " LIMIT ?"
        params.append(intent["limit"])
    return Query(sql=sql, params=tuple(params), columns=(*groups, value_name))
