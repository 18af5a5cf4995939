"""The agents layer's error tree: codes, messages and context the API shows."""

from __future__ import annotations

from typing import TypedDict

import pytest

from agents.errors import (
    AgentBadResponse,
    AgentConnectionError,
    AgentError,
    AgentHTTPError,
    AgentRejected,
    AgentTimeout,
    AgentUnavailable,
    UnknownAgent,
    body_excerpt,
)


class Context(TypedDict):
    agent: str
    workflow_id: str
    node_id: str


CTX: Context = {"agent": "data", "workflow_id": "wf-1", "node_id": "fetch"}

ERRORS: list[tuple[AgentError, str, str]] = [
    (UnknownAgent(agent="dta", known=["viz", "data"]), "unknown_agent",
     "unknown agent 'dta' (registered: data, viz)"),
    (AgentUnavailable(retry_after_s=12.34, **CTX), "agent_unavailable",
     "agent 'data' is unavailable: circuit breaker open, may be retried in 12.3 s"),
    (AgentTimeout(phase="read", timeout_s=30.0, **CTX), "agent_timeout",
     "agent 'data' timed out after 30.0 s (read timeout)"),
    (AgentTimeout(phase="deadline", timeout_s=None, **CTX), "agent_timeout",
     "agent 'data' timed out (deadline reached)"),
    (AgentConnectionError(reason="ConnectError: refused", **CTX), "agent_unreachable",
     "agent 'data' is unreachable: ConnectError: refused"),
    (AgentHTTPError(status=503, body=b"overloaded\n  try later", **CTX), "agent_http_error",
     "agent 'data' answered HTTP 503: overloaded try later"),
    (AgentRejected(status=422, body='{"error": "bad"}', **CTX), "agent_rejected",
     "agent 'data' rejected the request with HTTP 422: {\"error\": \"bad\"}"),
    (AgentBadResponse(reason="body is not JSON", body=b"<html>", **CTX), "agent_bad_response",
     "agent 'data' broke the response contract: body is not JSON"),
]  # fmt: skip


@pytest.mark.parametrize(("error", "code", "message"), ERRORS)
def test_code_and_message_name_the_agent_and_cause(
    error: AgentError, code: str, message: str
) -> None:
    """Each error has its stable code and a message naming the agent and the cause."""
    assert isinstance(error, AgentError)
    assert error.code == code
    assert str(error) == message


def test_codes_are_distinct() -> None:
    """No two error classes share a code the API shows."""
    classes = [type(e) for e, _, _ in ERRORS] + [AgentError]
    codes = {cls.code for cls in set(classes)}
    assert len(codes) == len(set(classes))


def test_rejected_is_an_http_error() -> None:
    """A 4xx rejection is still an HTTP error, carrying its status."""
    error = AgentRejected(status=404, **CTX)
    assert isinstance(error, AgentHTTPError)
    assert error.status == 404
    assert str(error) == "agent 'data' rejected the request with HTTP 404"


def test_attempts_are_settable_and_shown() -> None:
    """The client fills in the final attempt count; the message then says it."""
    error = AgentTimeout(phase="connect", timeout_s=5.0, **CTX)
    assert error.attempts == 0
    error.attempts = 3
    assert str(error).endswith("(connect timeout) (after 3 attempts)")
    assert error.details()["attempts"] == 3


def test_details_carry_the_context() -> None:
    """details() is the JSON-ready context: the common fields plus each class's own."""
    error = AgentHTTPError(status=429, retry_after_s=7.0, body=b"slow down", attempts=2, **CTX)
    assert error.details() == {
        "agent": "data",
        "workflow_id": "wf-1",
        "step_id": "fetch",
        "attempts": 2,
        "status": 429,
        "retry_after_s": 7.0,
        "body": "slow down",
    }
    assert UnknownAgent(agent="x", known=["b", "a"]).details()["known"] == ["a", "b"]


def test_context_is_keyword_only() -> None:
    """Context cannot be passed positionally, so it is never passed in the wrong order."""
    with pytest.raises(TypeError):
        AgentConnectionError("data", "refused")  # type: ignore[call-arg]


def test_body_excerpt_is_bounded_and_tolerates_bad_utf8() -> None:
    """Long bodies are cut with an ellipsis; undecodable bytes do not raise."""
    excerpt = body_excerpt(b"x" * 1000 + b"\xff")
    assert len(excerpt) == 200
    assert excerpt.endswith("…")
    assert body_excerpt(b"ok \xff") == "ok \ufffd"
