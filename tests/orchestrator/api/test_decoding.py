"""Typed request bodies: msgspec's validation errors become the API's codes, naming the field.

Each case pins one form of msgspec's error message, so a msgspec release that words one
differently fails here rather than turning a client's 400 into an `invalid_body`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
import pytest
from multidict import MultiDict

from orchestrator.api.bodies import QueryRequest, ScheduleRequest
from orchestrator.api.decoding import decode
from orchestrator.api.errors import ApiError, BadRequest
from orchestrator.api.requests import (
    parse_history_query,
    parse_query_request,
    parse_schedule_request,
    parse_workflow_body,
)
from orchestrator.errors import InvalidSchedule
from state.schedules import Misfire


def _refused(body: dict[str, Any], max_chars: int = 100) -> ApiError:
    with pytest.raises(ApiError) as caught:
        parse_query_request(body, max_query_chars=max_chars)
    return caught.value


@pytest.mark.parametrize(
    ("body", "code", "field", "message"),
    [
        ({}, "missing_field", "query", "missing field 'query'"),
        ({"query": None}, "missing_field", "query", "missing field 'query'"),
        ({"query": 42}, "invalid_type", "query", "'query' must be a string, got number"),
        ({"query": ["a"]}, "invalid_type", "query", "'query' must be a string, got array"),
        ({"query": True}, "invalid_type", "query", "'query' must be a string, got boolean"),
        ({"query": ""}, "empty_query", "query", "'query' is empty"),
        ({"query": " \n"}, "empty_query", "query", "'query' is empty"),
        ({"query": "x" * 101}, "query_too_long", "query", "the limit is 100"),
        ({"query": "x", "mode": "later"}, "invalid_mode", "mode", "unknown mode 'later'"),
        ({"query": "x", "mode": 1}, "invalid_type", "mode", "'mode' must be a string, got number"),
        ({"query": "x", "workflow": 3}, "invalid_type", "workflow", "must be an object"),
        ({"query": "x", "workflow": []}, "invalid_type", "workflow", "got array"),
        ({"query": "x", "wait_s": "5"}, "invalid_type", "wait_s", "must be a number, got string"),
        ({"query": "x", "wait_s": True}, "invalid_type", "wait_s", "got boolean"),
        ({"query": "x", "wait_s": -1}, "invalid_wait", "wait_s", "between 0 and 300"),
        ({"query": "x", "wait_s": 300.5}, "invalid_wait", "wait_s", "between 0 and 300"),
    ],
)
def test_query_bodies_are_refused_with_the_field_named(
    body: dict[str, Any], code: str, field: str, message: str
) -> None:
    error = _refused(body)
    assert (error.status, error.code) == (400, code)
    assert error.details()["field"] == field
    assert message in str(error)


def test_every_unknown_field_is_named_even_behind_another_error() -> None:
    """msgspec stops at the first problem; the client still hears of every unknown field."""
    error = _refused({"query": 42, "zeta": 1, "mdoe": "async"})
    assert error.code == "unknown_field"
    assert error.details() == {"fields": ["mdoe", "zeta"]}
    assert "mdoe, zeta" in str(error) and "allowed: mode, query, wait_s, workflow" in (
        str(error)
    )


def test_a_good_body_decodes_to_its_type() -> None:
    req = parse_query_request(
        {"query": "q", "mode": "async", "workflow": {"nodes": []}, "wait_s": 2},
        max_query_chars=10,
    )
    assert req == QueryRequest(query="q", mode="async", workflow={"nodes": []}, wait_s=2.0)
    assert isinstance(req.wait_s, float)
    assert parse_query_request({"workflow": {}}, max_query_chars=1).query is None


def test_the_validate_body() -> None:
    assert parse_workflow_body({"workflow": {"nodes": []}}) == {"nodes": []}
    for body, code in (
        ({}, "missing_field"),
        ({"workflow": None}, "missing_field"),
        ({"workflow": "x"}, "invalid_type"),
        ({"workflow": {}, "mode": "sync"}, "unknown_field"),
    ):
        with pytest.raises(BadRequest) as caught:
            parse_workflow_body(body)
        assert caught.value.code == code, body


def test_schedule_bodies() -> None:
    ok = parse_schedule_request({"cron": "@hourly", "query": "q"}, max_query_chars=10)
    assert ok == ScheduleRequest(cron="@hourly", query="q")
    assert ok.misfire is Misfire.SKIP
    with pytest.raises(InvalidSchedule) as bad_misfire:
        parse_schedule_request(
            {"cron": "@hourly", "query": "q", "misfire": "sometimes"}, max_query_chars=10
        )
    assert bad_misfire.value.field == "misfire" and "'sometimes'" in str(bad_misfire.value)
    for body, code, field in (
        ({"query": "q"}, "missing_field", "cron"),
        ({"cron": None, "query": "q"}, "missing_field", "cron"),
        ({"cron": 5, "query": "q"}, "invalid_type", "cron"),
        ({"cron": "@hourly", "query": "q", "name": "n" * 201}, "invalid_type", "name"),
        ({"cron": "@hourly"}, "missing_field", "query"),
    ):
        with pytest.raises(BadRequest) as caught:
            parse_schedule_request(body, max_query_chars=10)
        assert (caught.value.code, caught.value.details()["field"]) == (code, field), body


class _Inner(msgspec.Struct, forbid_unknown_fields=True):
    count: int


class _Outer(msgspec.Struct, forbid_unknown_fields=True):
    inner: _Inner
    ratio: Annotated[float, msgspec.Meta(le=1)] = 0.0


class _Choice(msgspec.Struct):
    pick: Literal["a", "b"]


class _Checked(msgspec.Struct):
    value: int

    def __post_init__(self) -> None:
        if self.value == 13:
            raise ValueError("thirteen is not allowed")


@pytest.mark.parametrize(
    ("model", "body", "code", "field", "message"),
    [
        (_Outer, {"inner": {"count": "1"}}, "invalid_type", "inner.count", "an integer"),
        (_Outer, {"inner": {}}, "missing_field", "inner.count", "missing field 'inner.count'"),
        (_Outer, {"inner": {"count": 1, "x": 2}}, "unknown_field", None, "field(s): inner.x"),
        (_Outer, {"inner": {"count": 1}, "ratio": 2}, "invalid_value", "ratio", "<= 1"),
        (_Choice, {"pick": "c"}, "invalid_value", "pick", "not allowed here ('c')"),
        (_Choice, {"pick": "c" * 1000}, "invalid_value", "pick", "'" + "c" * 76 + "..."),
        (_Checked, {"value": 13}, "invalid_body", None, "thirteen is not allowed"),
    ],
)
def test_other_shapes_of_msgspec_errors(
    model: type[msgspec.Struct],
    body: dict[str, Any],
    code: str,
    field: str | None,
    message: str,
) -> None:
    """Nested fields are named by their path; a message we cannot read is passed on whole."""
    with pytest.raises(BadRequest) as caught:
        decode(body, model)
    assert caught.value.code == code
    assert (caught.value.details() or {}).get("field") == field
    assert message in str(caught.value)


def test_the_history_query_string() -> None:
    """Text values become typed ones; each bad one is an invalid_parameter naming it."""
    query = parse_history_query(
        MultiDict([("limit", "20"), ("status", "failed,cancelled"), ("limit", "7")]),
        tenant="t",
        all_tenants=False,
    )
    assert query.limit == 20  # a repeated parameter counts as its first value
    assert query.status == {"failed", "cancelled"}
    assert parse_history_query({}, tenant="t", all_tenants=False).limit == 50
    for params, code, name in (
        ({"limit": "0"}, "invalid_parameter", "limit"),
        ({"limit": "201"}, "invalid_parameter", "limit"),
        ({"limit": "many"}, "invalid_parameter", "limit"),
        ({"status": "done"}, "invalid_parameter", "status"),
        ({"since": "yesterday"}, "invalid_parameter", "since"),
    ):
        with pytest.raises(BadRequest) as caught:
            parse_history_query(params, tenant="t", all_tenants=False)
        assert (caught.value.code, caught.value.details()["parameter"]) == (code, name), params
    with pytest.raises(BadRequest) as unknown:
        parse_history_query({"sort": "x", "page": "2"}, tenant="t", all_tenants=False)
    assert unknown.value.code == "unknown_parameter"
    assert unknown.value.details() == {"parameters": ["page", "sort"]}
