"""The Viz reference agent: Vega-Lite v5 specs of the right shape for every mark.

The Vega-Lite JSON Schema is not available offline, so `assert_valid_spec`
checks the structure the renderer relies on instead: the schema URL, inline
data, a known mark, known channels, and every encoded field present in the data
(or made by a transform).
"""

from __future__ import annotations

from typing import Any

import pytest

from agents.reference import create_agent_app
from agents.reference.data import DataAgent
from agents.reference.intent import Intent, value_column
from agents.reference.viz import SCHEMA, build_spec

VEGA_MARKS = {"arc", "area", "bar", "line", "point", "rect", "rule", "text", "tick"}
CHANNELS = {"x", "y", "color", "theta", "text", "tooltip", "size", "shape", "opacity"}
TYPES = {"quantitative", "temporal", "ordinal", "nominal"}


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


def _includes(definition: dict[str, Any], expected: dict[str, Any]) -> bool:
    return definition.items() >= expected.items()


def _fields_made_by_transforms(spec: dict[str, Any]) -> set[str]:
    made: set[str] = set()
    for step in spec.get("transform", []):
        for window in step.get("window", []):
            made.add(window["as"])
        made.update(step.get("as", []) if "fold" in step else [])
    return made


def assert_valid_spec(spec: dict[str, Any]) -> str:
    """Check the structure of a Vega-Lite v5 single-view spec; returns its mark type."""
    assert spec["$schema"] == SCHEMA
    assert isinstance(spec["title"], str) and spec["title"]
    values = spec["data"]["values"]
    assert isinstance(values, list)
    mark = spec["mark"]["type"] if isinstance(spec["mark"], dict) else spec["mark"]
    assert mark in VEGA_MARKS
    available = {key for row in values for key in row} | _fields_made_by_transforms(spec)
    assert spec["encoding"], "a chart encodes at least one channel"
    for channel, definition in spec["encoding"].items():
        assert channel in CHANNELS, channel
        for item in definition if isinstance(definition, list) else [definition]:
            assert item["type"] in TYPES, (channel, item)
            assert isinstance(item["field"], str)
            if values:
                assert item["field"] in available, (channel, item["field"])
    return str(mark)


async def _data_for(intent: Intent) -> dict[str, Any]:
    """The real Data agent's answer, so the Viz tests chart what the chain would."""
    return await DataAgent().process({"intent": dict(intent)})


async def _spec_for(intent: Intent) -> dict[str, Any]:
    data = await _data_for(intent)
    return build_spec(intent, data["columns"], data["rows"])


async def test_category_group_is_a_bar_chart() -> None:
    """One categorical group: bars, the category nominal on x, the value quantitative on y."""
    intent = _intent(
        query="average revenue by region in 2024",
        aggregation="avg",
        group_by=["region"],
        filters=[{"field": "year", "op": "=", "value": 2024}],
    )
    data = await _data_for(intent)
    spec = build_spec(intent, data["columns"], data["rows"])
    assert assert_valid_spec(spec) == "bar"
    assert spec["title"] == "average revenue by region in 2024"
    assert spec["data"]["values"] == data["rows"]
    assert _includes(spec["encoding"]["x"], {"field": "region", "type": "nominal"})
    assert _includes(spec["encoding"]["y"], {"field": "avg_revenue", "type": "quantitative"})
    assert spec["encoding"]["y"]["title"] == "average revenue"


async def test_ranked_bars_keep_their_order() -> None:
    """Top-N bars sort by the value, largest first."""
    spec = await _spec_for(_intent(group_by=["product"], order="desc", limit=3))
    assert assert_valid_spec(spec) == "bar"
    assert spec["encoding"]["x"]["sort"] == "-y"
    assert len(spec["data"]["values"]) == 3


async def test_time_group_is_a_line_over_time() -> None:
    """A month group draws a line with month temporal on x."""
    spec = await _spec_for(_intent(query="monthly revenue", group_by=["month"]))
    assert assert_valid_spec(spec) == "line"
    assert _includes(spec["encoding"]["x"], {"field": "month", "type": "temporal"})
    assert spec["encoding"]["x"]["timeUnit"] == "yearmonth"


async def test_line_puts_time_on_x_and_colours_the_other_group() -> None:
    """Two groups, one of them time: time on x, the other as colour."""
    spec = await _spec_for(_intent(group_by=["region", "year"], chart_hint="line"))
    assert assert_valid_spec(spec) == "line"
    assert _includes(spec["encoding"]["x"], {"field": "year", "type": "ordinal"})
    assert _includes(spec["encoding"]["color"], {"field": "region", "type": "nominal"})


async def test_two_category_groups_stack_bars_by_colour() -> None:
    spec = await _spec_for(_intent(group_by=["category", "channel"]))
    assert assert_valid_spec(spec) == "bar"
    assert spec["encoding"]["x"]["field"] == "category"
    assert spec["encoding"]["color"]["field"] == "channel"


async def test_pie_hint_draws_an_arc() -> None:
    """A pie is an arc with the value on theta and the group as colour."""
    spec = await _spec_for(_intent(group_by=["category"], chart_hint="pie"))
    assert assert_valid_spec(spec) == "arc"
    assert _includes(spec["encoding"]["theta"], {"field": "sum_revenue", "type": "quantitative"})
    assert _includes(spec["encoding"]["color"], {"field": "category", "type": "nominal"})


async def test_pie_with_two_groups_falls_back_to_bars() -> None:
    spec = await _spec_for(_intent(group_by=["category", "region"], chart_hint="pie"))
    assert assert_valid_spec(spec) == "bar"


async def test_scatter_hint_draws_points() -> None:
    spec = await _spec_for(_intent(metric="units", group_by=["product"], chart_hint="scatter"))
    assert assert_valid_spec(spec) == "point"
    assert spec["encoding"]["y"]["field"] == "sum_units"


async def test_table_hint_draws_one_text_per_cell() -> None:
    """A table folds every column into text cells, rows numbered by a window transform."""
    intent = _intent(group_by=["region", "channel"], chart_hint="table")
    data = await _data_for(intent)
    spec = build_spec(intent, data["columns"], data["rows"])
    assert assert_valid_spec(spec) == "text"
    fold = next(step for step in spec["transform"] if "fold" in step)
    assert fold["fold"] == data["columns"]
    assert spec["encoding"]["x"]["sort"] == data["columns"]


async def test_no_group_is_a_single_number() -> None:
    """A single value is shown as text, formatted as money, or as a whole number for counts."""
    spec = await _spec_for(_intent(query="total revenue in 2023"))
    assert assert_valid_spec(spec) == "text"
    assert _includes(spec["encoding"]["text"], {"field": "sum_revenue", "format": ",.2f"})
    count = await _spec_for(_intent(metric="order_id", aggregation="count"))
    assert count["encoding"]["text"]["format"] == ",d"


async def test_title_falls_back_to_the_value_label() -> None:
    spec = await _spec_for(_intent(aggregation="max", metric="profit", group_by=["channel"]))
    assert spec["title"] == "maximum profit by channel"


def test_an_unnamed_value_column_is_found_when_it_is_the_only_other_one() -> None:
    """Rows from another agent naming the value differently still chart."""
    intent = _intent(group_by=["team"])
    spec = build_spec(intent, ["team", "score"], [{"team": "a", "score": 3}])
    assert assert_valid_spec(spec) == "bar"
    assert spec["encoding"]["y"]["field"] == "score"


def test_unknown_fields_get_types_from_their_values() -> None:
    """Numbers are quantitative, ISO dates temporal, anything else nominal."""
    rows = [{"when": "2024-05-01", "n": 2, "total": 1.5}]
    spec = build_spec(_intent(group_by=["when", "n"]), ["when", "n", "total"], rows)
    assert assert_valid_spec(spec) == "line"
    assert spec["encoding"]["x"]["type"] == "temporal"
    assert spec["encoding"]["color"]["type"] == "quantitative"


def _envelope(payload: dict[str, Any]) -> dict[str, Any]:
    return {"workflow_id": "wf-1", "step_id": "viz", "input": payload}


async def test_viz_agent_over_http(aiohttp_client: Any) -> None:
    """POST /process answers {"spec": ...}; columns may be left out."""
    client = await aiohttp_client(create_agent_app("viz"))
    intent = _intent(query="revenue by channel", group_by=["channel"])
    data = await _data_for(intent)
    for payload in (
        {"intent": intent, "columns": data["columns"], "rows": data["rows"]},
        {"intent": intent, "rows": data["rows"]},
    ):
        response = await client.post("/process", json=_envelope(dict(payload)))
        assert response.status == 200
        body = await response.json()
        assert body["status"] == "success"
        assert body["data"]["spec"] == build_spec(intent, data["columns"], data["rows"])


async def test_viz_agent_charts_empty_rows(aiohttp_client: Any) -> None:
    """No rows is still a chart (of nothing), not an error."""
    client = await aiohttp_client(create_agent_app("viz"))
    intent = _intent(group_by=["region"])
    response = await client.post("/process", json=_envelope({"intent": intent, "rows": []}))
    assert response.status == 200
    spec = (await response.json())["data"]["spec"]
    assert assert_valid_spec(spec) == "bar"
    assert spec["data"]["values"] == []


@pytest.mark.parametrize(
    ("payload", "status", "code"),
    [
        ({"rows": []}, 400, "malformed_input"),
        ({"intent": _intent(), "rows": "nope"}, 400, "malformed_input"),
        ({"intent": _intent(), "rows": [1, 2]}, 400, "malformed_input"),
        ({"intent": _intent(), "rows": [], "columns": "a,b"}, 400, "malformed_input"),
        ({"intent": _intent(chart_hint="radar"), "rows": []}, 422, "unsupported_chart_hint"),
        ({"intent": _intent(group_by=["region"]), "rows": [], "columns": ["sum_revenue"]}, 422,
         "unknown_column"),
        ({"intent": _intent(), "rows": [], "columns": ["a", "b"]}, 422, "unknown_column"),
    ],
)  # fmt: skip
async def test_viz_agent_rejects_bad_input(
    aiohttp_client: Any, payload: dict[str, Any], status: int, code: str
) -> None:
    """Wrong shapes are a 400; columns that do not fit the intent a 422."""
    client = await aiohttp_client(create_agent_app("viz"))
    response = await client.post("/process", json=_envelope(payload))
    assert response.status == status
    body = await response.json()
    assert body["status"] == "error"
    assert body["error"]["code"] == code


def test_value_column_names_match_the_data_agent() -> None:
    assert value_column(_intent(aggregation="avg")) == "avg_revenue"
    assert value_column(_intent(aggregation="count", metric="order_id")) == "count"
