"""The Data reference agent: the bundled dataset, its SQL, and answers checked against Python."""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.reference import create_agent_app
from agents.reference.contract import UnusableInput
from agents.reference.data import DataAgent
from agents.reference.dataset import (
    COLUMNS,
    DEFAULT_PATH,
    DEFAULT_ROWS,
    MEASURES,
    build_database,
    connect_readonly,
    generate_rows,
    read_rows,
)
from agents.reference.intent import Intent, value_column
from agents.reference.query import build_query

DATASET: list[dict[str, Any]] = [
    dict(zip(COLUMNS, row, strict=True)) for row in read_rows(DEFAULT_PATH)
]
DISTINCT = {name: sorted({row[name] for row in DATASET}) for name in COLUMNS}

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "=": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    "in": lambda a, b: a in b,
}


def _intent(**fields: Any) -> Intent:
    base: dict[str, Any] = {
        "query": "",
        "metric": "revenue",
        "aggregation": "sum",
        "group_by": [],
        "filters": [],
        "order": None,
        "limit": None,
        "chart_hint": None,
    }
    return base | fields  # type: ignore[return-value]


def _aggregate(aggregation: str, values: list[float]) -> float | None:
    if aggregation == "count":
        return len(values)
    if not values:
        return None
    aggregate: dict[str, Callable[[list[float]], float]] = {
        "sum": sum,
        "avg": lambda v: sum(v) / len(v),
        "min": min,
        "max": max,
    }
    return aggregate[aggregation](values)


def expected_answer(intent: Intent) -> dict[tuple[Any, ...], float | None]:
    """The intent computed in plain Python over the dataset: group key -> value."""
    selected = [
        row
        for row in DATASET
        if all(_OPS[f["op"]](row[f["field"]], f["value"]) for f in intent["filters"])
    ]
    groups: dict[tuple[Any, ...], list[float]] = defaultdict(list)
    for row in selected:
        groups[tuple(row[c] for c in intent["group_by"])].append(row[intent["metric"]])
    if not intent["group_by"]:
        groups.setdefault((), [])
    return {key: _aggregate(intent["aggregation"], values) for key, values in groups.items()}


async def _run(intent: Intent, agent: DataAgent | None = None) -> dict[str, Any]:
    return await (agent or DataAgent()).process({"intent": dict(intent)})


def _by_key(answer: dict[str, Any], intent: Intent) -> dict[tuple[Any, ...], Any]:
    value = value_column(intent)
    return {tuple(row[c] for c in intent["group_by"]): row[value] for row in answer["rows"]}


def _assert_matches(answer: dict[str, Any], intent: Intent) -> None:
    expected = expected_answer(intent)
    got = _by_key(answer, intent)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        if value is None:
            assert got[key] is None
        else:
            # The agent rounds money to the cent; Python sums in another order.
            assert got[key] == pytest.approx(value, abs=0.011), key
    assert answer["row_count"] == len(answer["rows"])
    assert answer["columns"] == [*intent["group_by"], value_column(intent)]


def test_shipped_dataset_is_what_the_generator_makes() -> None:
    """Regenerating the dataset gives exactly the rows of the shipped file."""
    assert list(read_rows(DEFAULT_PATH)) == generate_rows()
    assert len(DATASET) == DEFAULT_ROWS


def test_build_database_round_trips(tmp_path: Path) -> None:
    """A rebuilt file holds the generator's rows; another seed gives other rows."""
    path = tmp_path / "sales.sqlite"
    build_database(path)
    assert list(read_rows(path)) == generate_rows()
    assert generate_rows(seed=1, count=50) == generate_rows(seed=1, count=50)
    assert generate_rows(seed=1, count=50) != generate_rows(seed=2, count=50)


def test_dataset_rows_are_consistent() -> None:
    """Derived columns agree with the date and the money adds up."""
    for row in DATASET:
        assert row["year"] == int(row["date"][:4])
        assert row["month"] == row["date"][:7]
        assert row["quarter"] == f"Q{(int(row['date'][5:7]) - 1) // 3 + 1}"
        assert row["profit"] == pytest.approx(row["revenue"] - row["cost"], abs=0.011)
        assert row["units"] >= 1


def test_dataset_connection_is_read_only() -> None:
    """The agent's connection cannot write, whatever SQL reaches it."""
    conn = connect_readonly(DEFAULT_PATH)
    try:
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            conn.execute("DELETE FROM sales")
    finally:
        conn.close()


@pytest.mark.parametrize(
    "intent",
    [
        _intent(),
        _intent(aggregation="avg", group_by=["region"], filters=[
            {"field": "year", "op": "=", "value": 2024}
        ]),
        _intent(metric="order_id", aggregation="count", group_by=["category", "channel"]),
        _intent(metric="units", group_by=["quarter"], filters=[
            {"field": "region", "op": "in", "value": ["Europe", "Latin America"]}
        ]),
        _intent(metric="profit", aggregation="min", group_by=["year"]),
        _intent(metric="cost", aggregation="max", filters=[
            {"field": "revenue", "op": ">", "value": 1000},
            {"field": "country", "op": "!=", "value": "Germany"},
        ]),
        _intent(group_by=["month"], filters=[{"field": "date", "op": ">=", "value": "2024-07-01"}]),
    ],
)  # fmt: skip
async def test_data_agent_answers_match_python(intent: Intent) -> None:
    """Aggregates, groups and filters agree with a direct computation over the dataset."""
    _assert_matches(await _run(intent), intent)


async def test_empty_selection_answers_null_not_zero() -> None:
    """No matching rows: a sum is null (unknown), a count is zero."""
    nothing = [{"field": "year", "op": "=", "value": 1999}]
    total = await _run(_intent(filters=nothing))
    count = await _run(_intent(metric="order_id", aggregation="count", filters=nothing))
    assert total["rows"] == [{"sum_revenue": None}]
    assert count["rows"] == [{"count": 0}]


async def test_top_n_is_ordered_and_limited() -> None:
    """order desc + limit N answers the N largest groups, largest first."""
    intent = _intent(metric="profit", group_by=["product"], order="desc", limit=4)
    answer = await _run(intent)
    values = [row["sum_profit"] for row in answer["rows"]]
    expected = sorted((v for v in expected_answer(intent).values() if v is not None), reverse=True)
    assert values == sorted(values, reverse=True)
    assert values == pytest.approx(expected[:4], abs=0.011)


async def test_unordered_groups_come_sorted_by_group() -> None:
    intent = _intent(group_by=["year", "quarter"])
    keys = [(row["year"], row["quarter"]) for row in (await _run(intent))["rows"]]
    assert keys == sorted(keys)


async def test_text_filters_ignore_case() -> None:
    """A fallback parser's "europe" finds the dataset's "Europe"."""
    lower = _intent(filters=[{"field": "region", "op": "in", "value": ["europe", "ASIA PACIFIC"]}])
    canonical = _intent(
        filters=[{"field": "region", "op": "in", "value": ["Europe", "Asia Pacific"]}]
    )
    assert (await _run(lower))["rows"] == (await _run(canonical))["rows"]
    _assert_matches(await _run(canonical), canonical)


_FILTERABLE = ["year", "quarter", "region", "category", "channel", "units", "revenue"]


@st.composite
def intents(draw: st.DrawFn) -> Intent:
    aggregation = draw(st.sampled_from(["sum", "avg", "count", "min", "max"]))
    metric = "order_id" if aggregation == "count" else draw(st.sampled_from(sorted(MEASURES)))
    group_by = draw(
        st.lists(st.sampled_from(["region", "category", "channel", "year", "quarter"]),
                 max_size=2, unique=True)
    )  # fmt: skip
    filters = []
    for column in draw(st.lists(st.sampled_from(_FILTERABLE), max_size=3)):
        op = draw(st.sampled_from(["=", "!=", ">", ">=", "<", "<=", "in"]))
        values = DISTINCT[column]
        if op == "in":
            value: Any = draw(st.lists(st.sampled_from(values), min_size=1, max_size=3))
        else:
            value = draw(st.sampled_from(values))
        filters.append({"field": column, "op": op, "value": value})
    return _intent(metric=metric, aggregation=aggregation, group_by=group_by, filters=filters)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(intents())
async def test_any_whitelisted_intent_matches_python(intent: Intent) -> None:
    """Property: every combination of aggregation, groups and filters agrees with Python."""
    _assert_matches(await _run(intent), intent)


def test_sql_carries_values_only_as_parameters() -> None:
    """User values never appear in the SQL text; they travel as parameters."""
    hostile = "Europe'; DROP TABLE sales; --"
    query = build_query(
        _intent(filters=[{"field": "region", "op": "=", "value": hostile}], limit=7)
    )
    assert hostile not in query.sql
    assert "DROP" not in query.sql
    assert query.params == (hostile, 7)


@pytest.mark.parametrize(
    "value",
    [
        "Europe'; DROP TABLE sales; --",
        "' OR '1'='1",
        '" OR 1=1 --',
        "Europe\x00",
        "%",
    ],
)
async def test_injection_looking_values_are_harmless(value: str) -> None:
    """Hostile filter values match nothing and change nothing."""
    intent = _intent(
        metric="order_id", aggregation="count",
        filters=[{"field": "region", "op": "=", "value": value}],
    )  # fmt: skip
    answer = await _run(intent)
    assert answer["rows"] == [{"count": 0}]
    everything = await _run(_intent(metric="order_id", aggregation="count"))
    assert everything["rows"] == [{"count": DEFAULT_ROWS}]


@pytest.mark.parametrize(
    ("intent", "fragment"),
    [
        (_intent(metric='revenue") FROM sales; --'), "unknown metric column"),
        (_intent(metric="region"), "not a measure"),
        (_intent(group_by=['region" --']), "unknown group_by column"),
        (_intent(group_by=["revenue"]), "unknown group_by column"),
        (_intent(filters=[{"field": "1=1 OR region", "op": "=", "value": 1}]), "unknown filter"),
        (_intent(metric="discount", aggregation="count"), "unknown metric column"),
    ],
)
def test_unknown_columns_are_refused_by_name(intent: Intent, fragment: str) -> None:
    """Any name outside the whitelist is a 422 that says which name and which are known."""
    with pytest.raises(UnusableInput, match=fragment) as caught:
        build_query(intent)
    assert caught.value.status == 422


def _envelope(payload: dict[str, Any]) -> dict[str, Any]:
    return {"workflow_id": "wf-1", "step_id": "data", "input": payload}


async def test_data_agent_over_http(aiohttp_client: Any) -> None:
    """POST /process answers columns, rows, row_count and the parameterised SQL."""
    client = await aiohttp_client(create_agent_app("data"))
    intent = _intent(aggregation="avg", group_by=["region"],
                     filters=[{"field": "year", "op": "=", "value": 2024}])  # fmt: skip
    response = await client.post("/process", json=_envelope({"intent": dict(intent)}))
    assert response.status == 200
    body = await response.json()
    assert body["status"] == "success"
    _assert_matches(body["data"], intent)
    assert body["data"]["sql"].startswith("SELECT")
    assert body["data"]["params"] == [2024]


@pytest.mark.parametrize(
    ("payload", "status", "code"),
    [
        ({}, 400, "malformed_input"),
        ({"intent": "sum revenue"}, 400, "malformed_input"),
        ({"intent": {"metric": "revenue"}}, 400, "malformed_input"),
        ({"intent": _intent(group_by="region")}, 400, "malformed_input"),
        ({"intent": _intent(limit="5")}, 400, "malformed_input"),
        ({"intent": _intent(limit=True)}, 400, "malformed_input"),
        ({"intent": _intent(filters=[{"field": "year", "op": "=", "value": None}])}, 400,
         "malformed_input"),
        ({"intent": _intent(filters=[{"field": "year", "op": "in", "value": 2024}])}, 400,
         "malformed_input"),
        ({"intent": _intent(aggregation="median")}, 422, "unsupported_aggregation"),
        ({"intent": _intent(order="sideways")}, 422, "unsupported_order"),
        ({"intent": _intent(limit=0)}, 422, "unusable_input"),
        ({"intent": _intent(filters=[{"field": "year", "op": "like", "value": "%"}])}, 422,
         "unsupported_operator"),
        ({"intent": _intent(filters=[{"field": "year", "op": "in", "value": []}])}, 422,
         "unusable_input"),
        ({"intent": _intent(metric="discount")}, 422, "unknown_column"),
    ],
)  # fmt: skip
async def test_data_agent_rejects_bad_intents(
    aiohttp_client: Any, payload: dict[str, Any], status: int, code: str
) -> None:
    """Wrong shapes or types are a 400; well-formed but unusable intents a 422."""
    client = await aiohttp_client(create_agent_app("data"))
    response = await client.post("/process", json=_envelope(payload))
    assert response.status == status
    body = await response.json()
    assert body == {"status": "error", "error": {"code": code, "message": body["error"]["message"]}}
    assert body["error"]["message"]


async def test_data_agent_is_unhealthy_without_its_dataset(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    """/health answers 503 when the SQLite file is missing, 200 once it is there."""
    path = tmp_path / "sales.sqlite"
    client = await aiohttp_client(create_agent_app("data", db_path=path))
    response = await client.get("/health")
    assert response.status == 503
    assert (await response.json())["agent"] == "data"
    build_database(path, generate_rows(count=20))
    response = await client.get("/health")
    assert response.status == 200
    assert await response.json() == {"status": "ok", "agent": "data"}
