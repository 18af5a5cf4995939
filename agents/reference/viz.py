"""The reference Viz agent: an intent and its rows in, a Vega-Lite v5 spec out.

Input `{"intent": Intent, "columns": [...], "rows": [{...}, ...]}` (`columns`
may be omitted: it is then read from the rows, or from the intent when there
are none). Answers `{"spec": {...}}` with the rows inlined as `data.values`.

The mark follows the intent's `chart_hint` when it fits the data, else it is
inferred: no group -> a single big number ("text"); a time group -> "line";
otherwise "bar". Pie needs exactly one group; scatter and line need at least one.
"""

from __future__ import annotations

import re
from typing import Any, Final, Literal, cast

from agents.reference.contract import JSONObject, MalformedInput, UnusableInput
from agents.reference.dataset import TIME_DIMENSIONS
from agents.reference.intent import Intent, value_column, value_label
from agents.reference.validation import validate_intent

SCHEMA: Final = "https://vega.github.io/schema/vega-lite/v5.json"
FieldType = Literal["quantitative", "temporal", "ordinal", "nominal"]
Mark = Literal["bar", "line", "pie", "scatter", "table", "text"]

# Dataset columns whose type the values alone would get wrong (2024 is not a timestamp).
_KNOWN_TYPES: Final[dict[str, FieldType]] = {
    "year": "ordinal",
    "quarter": "ordinal",
    "month": "temporal",
    "date": "temporal",
}
_TIME_UNITS: Final = {"month": "yearmonth", "date": "yearmonthdate"}
_ISO_DATE: Final = re.compile(r"^\d{4}-\d{2}(-\d{2})?([T ][\d:.]+Z?)?$")


def field_type(name: str, rows: list[JSONObject]) -> FieldType:
    """The Vega-Lite type of column `name`: known for the dataset, else from its values."""
    if name in _KNOWN_TYPES:
        return _KNOWN_TYPES[name]
    sample = next((row[name] for row in rows if row.get(name) is not None), None)
    if isinstance(sample, int | float) and not isinstance(sample, bool):
        return "quantitative"
    if isinstance(sample, str) and _ISO_DATE.match(sample):
        return "temporal"
    return "nominal"


def _channel(name: str, rows: list[JSONObject], **extra: Any) -> JSONObject:
    encoding: JSONObject = {"field": name, "type": field_type(name, rows), "title": name}
    if name in _TIME_UNITS:
        encoding["timeUnit"] = _TIME_UNITS[name]
    return encoding | extra


def _choose_mark(intent: Intent, groups: list[str], rows: list[JSONObject]) -> Mark:
    hint = intent["chart_hint"]
    if hint == "table":
        return "table"
    if not groups:
        return "text"
    if hint == "pie" and len(groups) != 1:
        return "bar"
    if hint is not None:
        return hint
    is_time = any(g in TIME_DIMENSIONS or field_type(g, rows) == "temporal" for g in groups)
    return "line" if is_time and intent["order"] is None else "bar"


def _axes(mark: Mark, groups: list[str], rows: list[JSONObject]) -> tuple[str, str | None]:
    """The group on x and the one coloured (lines put time on x)."""
    x = groups[0]
    if mark == "line":
        x = next((g for g in groups if field_type(g, rows) in ("temporal", "ordinal")), x)
    color = next((g for g in groups if g != x), None)
    return x, color


def _xy_encoding(
    intent: Intent, mark: Mark, groups: list[str], value: str, rows: list[JSONObject]
) -> JSONObject:
    x, color = _axes(mark, groups, rows)
    encoding: JSONObject = {
        "x": _channel(x, rows),
        "y": {"field": value, "type": "quantitative", "title": value_label(intent)},
    }
    if mark == "bar" and intent["order"] is not None:
        encoding["x"]["sort"] = "-y" if intent["order"] == "desc" else "y"
    if color is not None:
        encoding["color"] = _channel(color, rows)
    return encoding


def _tooltip(
    intent: Intent, groups: list[str], value: str, rows: list[JSONObject]
) -> list[JSONObject]:
    value_tip = {"field": value, "type": "quantitative", "title": value_label(intent)}
    return [*(_channel(name, rows) for name in groups), value_tip]


def _table_spec(columns: list[str]) -> JSONObject:
    # Vega-Lite has no table mark: one text mark per cell, rows numbered by a window.
    return {
        "transform": [
            {"window": [{"op": "row_number", "as": "_row"}]},
            {"fold": columns, "as": ["_column", "_value"]},
        ],
        "mark": {"type": "text", "align": "center"},
        "encoding": {
            "x": {
                "field": "_column",
                "type": "nominal",
                "sort": columns,
                "axis": {"orient": "top", "title": None, "labelAngle": 0},
            },
            "y": {"field": "_row", "type": "ordinal", "axis": None},
            "text": {"field": "_value", "type": "nominal"},
        },
    }


def _mark_spec(
    intent: Intent, mark: Mark, groups: list[str], value: str, rows: list[JSONObject]
) -> JSONObject:
    tooltip = _tooltip(intent, groups, value, rows)
    if mark == "text":
        number_format = ",d" if intent["aggregation"] == "count" else ",.2f"
        return {
            "mark": {"type": "text", "fontSize": 40, "fontWeight": "bold"},
            "encoding": {
                "text": {"field": value, "type": "quantitative", "format": number_format},
                "tooltip": tooltip,
            },
        }
    if mark == "pie":
        return {
            "mark": {"type": "arc", "tooltip": True},
            "encoding": {
                "theta": {"field": value, "type": "quantitative", "stack": True},
                "color": {"field": groups[0], "type": "nominal", "title": groups[0]},
                "tooltip": tooltip,
            },
        }
    marks: dict[str, JSONObject] = {
        "bar": {"type": "bar"},
        "line": {"type": "line", "point": True},
        "scatter": {"type": "point", "filled": True},
    }
    encoding = _xy_encoding(intent, mark, groups, value, rows) | {"tooltip": tooltip}
    return {"mark": marks[mark], "encoding": encoding}


def _value_field(intent: Intent, columns: list[str]) -> str:
    expected = value_column(intent)
    if expected in columns:
        return expected
    others = [c for c in columns if c not in intent["group_by"]]
    if len(others) == 1:  # an agent that names its value column differently
        return others[0]
    raise UnusableInput(
        f"cannot tell which column holds the value: expected {expected!r} in {columns}",
        code="unknown_column",
    )


def build_spec(intent: Intent, columns: list[str], rows: list[JSONObject]) -> JSONObject:
    """A Vega-Lite v5 spec charting `rows` as `intent` asks (see the module docstring)."""
    groups = intent["group_by"]
    missing = [g for g in groups if g not in columns]
    if missing:
        raise UnusableInput(
            f"group_by columns {missing} are not among the columns {columns}",
            code="unknown_column",
        )
    value = _value_field(intent, columns)
    mark = _choose_mark(intent, groups, rows)
    title = intent["query"] or value_label(intent) + (f" by {', '.join(groups)}" if groups else "")
    spec: JSONObject = {
        "$schema": SCHEMA,
        "title": title,
        "description": value_label(intent),
        "width": "container",
        "data": {"values": rows},
    }
    if mark == "table":
        return spec | _table_spec(columns)
    return spec | _mark_spec(intent, mark, groups, value, rows)


def _columns_and_rows(payload: JSONObject, intent: Intent) -> tuple[list[str], list[JSONObject]]:
    rows = payload.get("rows")
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise MalformedInput("input 'rows' must be a list of objects")
    columns = payload.get("columns")
    if columns is None:
        columns = list(rows[0]) if rows else [*intent["group_by"], value_column(intent)]
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise MalformedInput("input 'columns' must be a list of strings")
    return cast(list[str], columns), cast(list[JSONObject], rows)


class VizAgent:
    """Charts a Data answer as a Vega-Lite v5 spec."""

    name = "viz"

    async def process(self, payload: JSONObject) -> JSONObject:
        intent = validate_intent(payload.get("intent"))
        columns, rows = _columns_and_rows(payload, intent)
        return {"spec": build_spec(intent, columns, rows)}

    async def healthy(self) -> bool:
        return True
