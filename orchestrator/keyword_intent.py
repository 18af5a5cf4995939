"""The built-in keyword parser the chain falls back to when the NLP agent is unavailable.

Deliberately simple: it only spots words it is sure of (a metric, an aggregation,
group-by dimensions, a year), so the Data agent still gets a usable intent and the
workflow ends `degraded` rather than `failed`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_METRICS = ("revenue", "profit", "cost", "units")
_METRIC_SYNONYMS = {
    "sales": "revenue",
    "income": "revenue",
    "margin": "profit",
    "quantity": "units",
}
_DIMENSIONS = ("region", "country", "product", "category", "channel", "year", "quarter", "month")
_AGGREGATIONS = (
    (re.compile(r"\b(average|avg|mean)\b"), "avg"),
    (re.compile(r"\b(how many|number of|count)\b"), "count"),
    (re.compile(r"\b(max|maximum|highest|largest)\b"), "max"),
    (re.compile(r"\b(min|minimum|lowest|smallest)\b"), "min"),
)
_YEAR = re.compile(r"\b(20\d\d)\b")
_WORD = re.compile(r"[a-z]+")


def keyword_intent(query: str) -> dict[str, Any]:
    text = query.lower()
    words = _WORD.findall(text)
    metric = next((w for w in words if w in _METRICS), None)
    if metric is None:
        metric = next((_METRIC_SYNONYMS[w] for w in words if w in _METRIC_SYNONYMS), "revenue")
    aggregation = next((agg for pattern, agg in _AGGREGATIONS if pattern.search(text)), "sum")
    group_by: list[str] = []
    for word in words:
        dim = word[:-1] if word.endswith("s") and word[:-1] in _DIMENSIONS else word
        if dim in _DIMENSIONS and dim not in group_by and _follows_by(text, word):
            group_by.append(dim)
    filters = [{"field": "year", "op": "=", "value": int(y)} for y in _YEAR.findall(text)[:1]]
    return {
        "query": query,
        "metric": metric,
        "aggregation": aggregation,
        "group_by": group_by,
        "filters": filters,
        "order": None,
        "limit": None,
        "chart_hint": None,
    }


def _follows_by(text: str, word: str) -> bool:
    return re.search(rf"\b(by|per|each|across)\s+(\w+\s+)?{re.escape(word)}\b", text) is not None


async def keyword_intent_fallback(node_input: Mapping[str, Any]) -> dict[str, Any]:
    """Fallback for the chain's `nlp` node: same output shape as the NLP agent."""
    query = node_input.get("query")
    return {"intent": keyword_intent(query if isinstance(query, str) else "")}
