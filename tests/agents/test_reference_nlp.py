"""The NLP reference agent: the rule-based parser's table of questions, and its HTTP face."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.reference import create_agent_app
from agents.reference import lexicon as lx
from agents.reference.dataset import COLUMNS, DIMENSIONS
from agents.reference.intent import AGGREGATIONS, CHART_HINTS, OPERATORS
from agents.reference.intent import parse_intent as parse_via_intent_module
from agents.reference.parser import MAX_QUERY_CHARS, UnrecognisedQuery, parse_intent
from agents.reference.query import build_query
from agents.reference.validation import validate_intent


def _f(field: str, op: str, value: Any) -> dict[str, Any]:
    return {"field": field, "op": op, "value": value}


# (question, the intent fields it must produce). Every listed field is compared exactly.
PARSER_TABLE: list[tuple[str, dict[str, Any]]] = [
    (
        "average revenue by region in 2024",
        {
            "metric": "revenue",
            "aggregation": "avg",
            "group_by": ["region"],
            "filters": [_f("year", "=", 2024)],
            "order": None,
            "limit": None,
            "chart_hint": "bar",
        },
    ),
    (
        "What is the mean profit per category?",
        {"metric": "profit", "aggregation": "avg", "group_by": ["category"], "filters": []},
    ),
    (
        "total sales by channel",
        {"metric": "revenue", "aggregation": "sum", "group_by": ["channel"], "chart_hint": "bar"},
    ),
    (
        "Top 5 products by revenue in Q3 2023",
        {
            "group_by": ["product"],
            "order": "desc",
            "limit": 5,
            "filters": [_f("year", "=", 2023), _f("quarter", "=", "Q3")],
            "chart_hint": "bar",
        },
    ),
    (
        "bottom three countries by profit",
        {"metric": "profit", "group_by": ["country"], "order": "asc", "limit": 3},
    ),
    (
        "monthly revenue in Europe",
        {
            "group_by": ["month"],
            "filters": [_f("region", "=", "Europe")],
            "chart_hint": "line",
        },
    ),
    (
        "revenue by month for laptops in 2024",
        {
            "group_by": ["month"],
            "filters": [_f("year", "=", 2024), _f("product", "=", "Laptop")],
            "chart_hint": "line",
        },
    ),
    (
        "How many orders over $1,200 in the U.S.?",
        {
            "metric": "order_id",
            "aggregation": "count",
            "group_by": [],
            "filters": [_f("revenue", ">", 1200), _f("country", "=", "United States")],
            "chart_hint": None,
        },
    ),
    (
        "number of orders by country excluding Europe",
        {
            "aggregation": "count",
            "group_by": ["country"],
            "filters": [_f("region", "!=", "Europe")],
        },
    ),
    (
        "how many units were sold per quarter in 2022",
        {
            "metric": "units",
            "aggregation": "sum",
            "group_by": ["quarter"],
            "filters": [_f("year", "=", 2022)],
        },
    ),
    (
        "which region had the highest profit in 2023?",
        {
            "metric": "profit",
            "group_by": ["region"],
            "order": "desc",
            "limit": 1,
            "filters": [_f("year", "=", 2023)],
        },
    ),
    (
        "Sales 2022-2023 in North America vs Europe",
        {
            "group_by": ["region"],
            "filters": [
                _f("year", ">=", 2022),
                _f("year", "<=", 2023),
                _f("region", "in", ["North America", "Europe"]),
            ],
        },
    ),
    (
        "revenue since 2023 by year",
        {"group_by": ["year"], "filters": [_f("year", ">=", 2023)], "chart_hint": "line"},
    ),
    (
        "revenue in 2022 and 2024 for office supplies",
        {
            "filters": [
                _f("year", "in", [2022, 2024]),
                _f("category", "=", "Office Supplies"),
            ]
        },
    ),
    (
        "share of profit by product category",
        {"metric": "profit", "group_by": ["category"], "chart_hint": "pie"},
    ),
    (
        "cost by region and channel as a table",
        {"metric": "cost", "group_by": ["region", "channel"], "chart_hint": "table"},
    ),
    (
        "scatter plot of units by product",
        {"metric": "units", "group_by": ["product"], "chart_hint": "scatter"},
    ),
    (
        "revenue over time in Asia",
        {
            "group_by": ["month"],
            "filters": [_f("region", "=", "Asia Pacific")],
            "chart_hint": "line",
        },
    ),
    (
        "lowest revenue in 2024",
        {"aggregation": "min", "group_by": [], "order": None, "limit": None},
    ),
    (
        "maximum order value online",
        {"metric": "revenue", "aggregation": "max", "filters": [_f("channel", "=", "Online")]},
    ),
    (
        "sales in March 2024 in Germany",
        {"filters": [_f("month", "=", "2024-03"), _f("country", "=", "Germany")]},
    ),
    (
        "orders with more than 10 units in the first half of 2023",
        {
            "aggregation": "count",
            "filters": [
                _f("units", ">", 10),
                _f("year", "=", 2023),
                _f("quarter", "in", ["Q1", "Q2"]),
            ],
        },
    ),
    (
        "average revenue per order, smartphones and tablets, ascending, by country",
        {
            "aggregation": "avg",
            "group_by": ["country"],
            "order": "asc",
            "filters": [_f("product", "in", ["Smartphone", "Tablet"])],
        },
    ),
    (
        "daily revenue in the retail channel before 2023",
        {
            "group_by": ["date"],
            "filters": [_f("year", "<", 2023), _f("channel", "=", "Retail")],
            "chart_hint": "line",
        },
    ),
    (
        "revenue >= 10k by product category",
        {"group_by": ["category"], "filters": [_f("revenue", ">=", 10000)]},
    ),
]


@pytest.mark.parametrize(("question", "expected"), PARSER_TABLE, ids=[q for q, _ in PARSER_TABLE])
def test_parser_table(question: str, expected: dict[str, Any]) -> None:
    """Each question turns into the intent a reader would expect."""
    intent = parse_intent(question)
    assert intent["query"] == question
    assert {key: intent[key] for key in expected} == expected  # type: ignore[literal-required]


def test_parser_defaults_to_total_revenue() -> None:
    """A question naming only a dimension asks for total revenue, with no ordering."""
    intent = parse_intent("by region")
    assert intent == {
        "query": "by region",
        "metric": "revenue",
        "aggregation": "sum",
        "group_by": ["region"],
        "filters": [],
        "order": None,
        "limit": None,
        "chart_hint": "bar",
    }


@pytest.mark.parametrize("question", ["", "   ", "hello there", "what's the weather like?"])
def test_parser_refuses_what_it_cannot_read(question: str) -> None:
    """Empty questions, and questions naming nothing known, raise instead of guessing."""
    with pytest.raises(UnrecognisedQuery):
        parse_intent(question)


def test_parser_refuses_overlong_questions() -> None:
    with pytest.raises(UnrecognisedQuery, match="longer than"):
        parse_intent("revenue " * (MAX_QUERY_CHARS // 8 + 1))


def test_parse_intent_is_reachable_from_the_intent_module() -> None:
    """agents.reference.intent.parse_intent delegates to the parser."""
    question = "average profit by channel in 2023"
    assert parse_via_intent_module(question) == parse_intent(question)


@given(st.text(max_size=200))
def test_parser_never_produces_an_invalid_intent(question: str) -> None:
    """Whatever the text, the parser either refuses it or returns an intent over known columns."""
    try:
        intent = parse_intent(question)
    except UnrecognisedQuery:
        return
    assert intent["aggregation"] in AGGREGATIONS
    assert intent["metric"] in COLUMNS
    assert set(intent["group_by"]) <= DIMENSIONS
    assert intent["chart_hint"] is None or intent["chart_hint"] in CHART_HINTS
    for item in intent["filters"]:
        assert item["field"] in COLUMNS
        assert item["op"] in OPERATORS
    assert intent["limit"] is None or intent["limit"] > 0


_VOCABULARY = sorted(
    {
        *(w.replace("_", " ") for table in (lx.AGGREGATION_WORDS, lx.METRIC_WORDS,
          lx.DIMENSION_WORDS, lx.PERIODIC_WORDS, lx.VALUE_WORDS, lx.COMPARATORS,
          lx.YEAR_PREPOSITIONS, lx.CHART_WORDS, lx.MONTH_WORDS, lx.NUMBER_WORDS) for w in table),
        *lx.GROUP_TRIGGERS, *lx.NEGATORS, *lx.DESCENDING_WORDS, *lx.ASCENDING_WORDS,
        *lx.COMPARE_WORDS, *lx.TREND_WORDS, "which", "and", "in", "of", "between", "to",
        "2022", "2023", "2024", "1999", "5", "1000", "$2,500", "10k", "2022-2024",
    }
)  # fmt: skip


@given(st.lists(st.sampled_from(_VOCABULARY), min_size=1, max_size=12).map(" ".join))
def test_every_parsed_question_runs_on_the_data_agent(question: str) -> None:
    """Property: whatever known words a question strings together, its intent is valid SQL."""
    try:
        intent = parse_intent(question)
    except UnrecognisedQuery:
        return
    assert validate_intent(dict(intent)) == intent
    build_query(intent)


def _envelope(payload: dict[str, Any]) -> dict[str, Any]:
    return {"workflow_id": "wf-1", "step_id": "nlp", "input": payload}


async def test_nlp_agent_answers_the_parsed_intent(aiohttp_client: Any) -> None:
    """POST /process answers {"status": "success", "data": {"intent": ...}}."""
    client = await aiohttp_client(create_agent_app("nlp"))
    question = "top 3 categories by profit in Europe"
    response = await client.post("/process", json=_envelope({"query": question}))
    assert response.status == 200
    assert await response.json() == {
        "status": "success",
        "data": {"intent": dict(parse_intent(question))},
    }


@pytest.mark.parametrize(
    ("payload", "status", "code"),
    [
        ({}, 400, "malformed_input"),
        ({"query": 42}, 400, "malformed_input"),
        ({"query": ""}, 422, "unrecognised_query"),
        ({"query": "tell me a joke"}, 422, "unrecognised_query"),
    ],
)
async def test_nlp_agent_rejects_bad_queries(
    aiohttp_client: Any, payload: dict[str, Any], status: int, code: str
) -> None:
    """A missing or non-string query is a 400; one the parser cannot read is a 422."""
    client = await aiohttp_client(create_agent_app("nlp"))
    response = await client.post("/process", json=_envelope(payload))
    assert response.status == status
    body = await response.json()
    assert body["status"] == "error"
    assert body["error"]["code"] == code
    assert body["error"]["message"]
