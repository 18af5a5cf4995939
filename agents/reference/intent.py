"""The intent: what a question asks of the data, as the NLP agent hands it on.

An intent is plain JSON, so it crosses HTTP unchanged (NLP -> Data -> Viz) and
any agent or fallback parser may produce one:

    {"query": "average revenue by region in 2024",
     "metric": "revenue",            # a dataset column (order_id when counting orders)
     "aggregation": "avg",           # sum | avg | count | min | max
     "group_by": ["region"],         # dataset columns, outermost first
     "filters": [{"field": "year", "op": "=", "value": 2024}],
     "order": None,                  # asc | desc | None (by the aggregated value)
     "limit": None,                  # int | None
     "chart_hint": "bar"}            # bar | line | pie | scatter | table | None

`parse_intent` (agents.reference.parser, re-exported by agents.reference) makes
one from a question; `validate_intent` (agents.reference.validation) checks one
that arrived over the wire.
"""

from __future__ import annotations

from typing import Final, Literal, TypeAlias, TypedDict, get_args

Aggregation: TypeAlias = Literal["sum", "avg", "count", "min", "max"]
Operator: TypeAlias = Literal["=", "!=", ">", ">=", "<", "<=", "in"]
Order: TypeAlias = Literal["asc", "desc"]
ChartHint: TypeAlias = Literal["bar", "line", "pie", "scatter", "table"]
Scalar: TypeAlias = str | int | float
FilterValue: TypeAlias = Scalar | list[Scalar]

AGGREGATIONS: Final[frozenset[str]] = frozenset(get_args(Aggregation))
OPERATORS: Final[frozenset[str]] = frozenset(get_args(Operator))
ORDERS: Final[frozenset[str]] = frozenset(get_args(Order))
CHART_HINTS: Final[frozenset[str]] = frozenset(get_args(ChartHint))

# What a reader calls each aggregation, for titles and axis labels.
AGGREGATION_LABELS: Final[dict[str, str]] = {
    "sum": "total",
    "avg": "average",
    "count": "number of",
    "min": "minimum",
    "max": "maximum",
}


class Filter(TypedDict):
    """`field op value`; with op "in", value is a non-empty list."""

    field: str
    op: Operator
    value: FilterValue


class Intent(TypedDict):
    """A question turned into a query over one table (see the module docstring)."""

    query: str
    metric: str
    aggregation: Aggregation
    group_by: list[str]
    filters: list[Filter]
    order: Order | None
    limit: int | None
    chart_hint: ChartHint | None


def value_column(intent: Intent) -> str:
    """Name of the aggregated column in the Data agent's rows: `avg_revenue`, `count`."""
    if intent["aggregation"] == "count":
        return "count"
    return f"{intent['aggregation']}_{intent['metric']}"


def value_label(intent: Intent) -> str:
    """Human label of the aggregated value: "average revenue", "number of orders"."""
    if intent["aggregation"] == "count":
        counted = "orders" if intent["metric"] == "order_id" else intent["metric"]
        return f"number of {counted}"
    return f"{AGGREGATION_LABELS[intent['aggregation']]} {intent['metric']}"


def parse_intent(query: str) -> Intent:
    """Turn a question into an intent with the rule-based parser (agents.reference.parser).

    Raises `agents.reference.parser.UnrecognisedQuery` (a ValueError) when the
    question is empty, too long, or names nothing the parser knows.
    """
    # Imported here so the parser may import this module's types without a cycle.
    from agents.reference.parser import parse_intent as parse

    return parse(query)
