"""The typed workflow document carries every field of the state, as the API always served it."""

from __future__ import annotations

from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.api import replies
from orchestrator.chain import CHAIN_NAME
from state.models import (
    NodeFailure,
    NodeRun,
    NodeStatus,
    WorkflowError,
    WorkflowState,
    WorkflowStatus,
)
from tests.strategies import json_values


def _state(name: str) -> WorkflowState:
    return WorkflowState(
        workflow_id="w1",
        definition_name=name,
        status=WorkflowStatus.DEGRADED,
        inputs={"query": "q"},
        steps={
            "nlp": NodeRun(
                "nlp", "agent", agent="nlp", status=NodeStatus.COMPLETED, attempts=1,
                started_at=10.0, finished_at=10.25, output={"intent": {"kind": "top"}},
                fallback="nlp_unavailable",
            ),
            "viz": NodeRun(
                "viz", "agent", agent="viz", status=NodeStatus.FAILED, attempts=3,
                started_at=10.3, finished_at=11.0,
                error=NodeFailure("agent_error", "boom", agent="viz", attempts=3, input={"a": 1}),
            ),
            "later": NodeRun("later", "transform"),
        },
        result={"intent": {"kind": "top"}, "data": [[1]], "chart": None},
        error=WorkflowError("step_failed", "viz failed", step_id="viz", agent="viz"),
        created_at=10.0,
        updated_at=11.0,
        finished_at=11.5,
        owner="r1",
        definition={"nodes": []} if name != CHAIN_NAME else None,
        tenant="t",
        submit_key="k",
    )


def _served(reply: msgspec.Struct) -> dict[str, Any]:
    body: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(reply))
    return body


def test_the_document_is_the_state_plus_its_duration() -> None:
    state = _state("report")
    assert _served(replies.Workflow.of(state)) == {**state.to_dict(), "duration_ms": 1500.0}


def test_the_chain_lifts_intent_data_and_chart() -> None:
    state = _state(CHAIN_NAME)
    body = _served(replies.Workflow.of(state))
    assert (body["intent"], body["data"], body["chart"]) == ({"kind": "top"}, [[1]], None)
    assert "intent" not in _served(replies.Workflow.of(_state("report")))


def test_cancel_and_pause_answers_say_so() -> None:
    state = _state("report")
    assert _served(replies.Cancelled.of(state, cancel_requested=True))["cancel_requested"]
    assert _served(replies.Paused.of(state, pause_requested=True))["pause_requested"]


def test_an_unfinished_workflow_has_no_duration() -> None:
    state = WorkflowState(workflow_id="w2", definition_name="d", created_at=1.0, updated_at=1.0)
    body = _served(replies.Workflow.of(state))
    assert body["duration_ms"] is None and body["finished_at"] is None and body["steps"] == {}


# What a step's output or a workflow's result can hold (plain JSON, as stored).
_json = json_values(st.text(max_size=4))


@settings(max_examples=300, deadline=None)
@given(result=st.dictionaries(st.sampled_from(["intent", "data", "chart", "other"]), _json))
def test_the_chains_answer_is_the_bytes_of_its_values_written_out(result: dict[str, Any]) -> None:
    """The chain's result and lifted fields, each encoded once (msgspec.Raw), are written
    byte for byte as the values themselves would be."""
    state = _state(CHAIN_NAME)
    state.result = result
    reply = replies.Workflow.of(state)
    plain = msgspec.structs.replace(
        reply,
        result=result,
        intent=result.get("intent"),
        data=result.get("data"),
        chart=result.get("chart"),
    )
    assert msgspec.json.encode(reply) == msgspec.json.encode(plain)
