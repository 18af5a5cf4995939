"""Errors of the agents layer: everything that can go wrong calling an agent.

```
AgentError                      code "agent_error"        base; nothing above catches httpx
├── UnknownAgent                "unknown_agent"           name not in the registry; nothing sent
├── AgentUnavailable            "agent_unavailable"       its breaker is open; nothing sent
├── AgentTimeout                "agent_timeout"           connect/read/write/pool timeout, the
│                                                         per-attempt cap, or the deadline
├── AgentConnectionError        "agent_unreachable"       refused, reset, DNS, protocol error
├── AgentHTTPError              "agent_http_error"        5xx or 429: the agent could not serve
│   └── AgentRejected           "agent_rejected"          other 4xx: alive, but the request was bad
├── AgentBadResponse            "agent_bad_response"      answer breaks the agent contract
│   └── AgentResponseTooLarge   "agent_response_too_large" body over the agent's
│                                                         max_response_bytes (cut off)
└── AgentTaskFailed             "agent_task_failed"       an A2A task ended failed, rejected or
    │                                                     canceled, or JSON-RPC said error
    └── AgentNeedsInput         "agent_needs_input"       an A2A task wants input or auth: no
                                                          retry can help
```

Every error carries its context as keyword-only attributes: `agent`, `workflow_id`,
`node_id` and `attempts` (how many attempts reached the agent; `AgentClient` sets the
final count before the error leaves it). `code` is a stable snake_case string shown by
the API; `details()` is the JSON-ready context the API shows next to it.

Transports (agents/transport.py) translate their library's errors into the small
`TransportError` tree, once each; `AgentClient` (agents/client.py) is the only place
those and the circuit's errors become these, raised `from` the original cause.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar, Literal

# Which limit ran out. "deadline" and "bulkhead" are the caller's budget running out,
# not the agent being slow; AgentClient neither retries them nor counts them against
# the agent's breaker.
TimeoutPhase = Literal["connect", "read", "write", "pool", "attempt", "deadline", "bulkhead"]

_EXCERPT_CHARS = 200


def body_excerpt(body: bytes | str, limit: int = _EXCERPT_CHARS) -> str:
    """The first `limit` characters of a response body, whitespace collapsed, for messages."""
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class AgentError(Exception):
    """Base of every error raised while calling an agent."""

    code: ClassVar[str] = "agent_error"

    def __init__(
        self,
        message: str,
        *,
        agent: str,
        workflow_id: str | None = None,
        node_id: str | None = None,
        attempts: int = 0,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.agent = agent
        self.workflow_id = workflow_id
        self.node_id = node_id
        self.attempts = attempts

    def __str__(self) -> str:
        if self.attempts > 1:
            return f"{self.message} (after {self.attempts} attempts)"
        return self.message

    def details(self) -> dict[str, Any]:
        """JSON-ready context for the API's error body."""
        return {
            "agent": self.agent,
            "workflow_id": self.workflow_id,
            "step_id": self.node_id,
            "attempts": self.attempts,
        }


class UnknownAgent(AgentError):
    """The name is not in the registry. Only registered URLs are ever called."""

    code: ClassVar[str] = "unknown_agent"

    def __init__(
        self,
        *,
        agent: str,
        known: Iterable[str] = (),
        workflow_id: str | None = None,
        node_id: str | None = None,
    ) -> None:
        self.known = sorted(known)
        registered = ", ".join(self.known) or "none"
        super().__init__(
            f"unknown agent {agent!r} (registered: {registered})",
            agent=agent,
            workflow_id=workflow_id,
            node_id=node_id,
        )

    def details(self) -> dict[str, Any]:
        return {**super().details(), "known": self.known}


class AgentUnavailable(AgentError):
    """The agent's circuit breaker refused the call: nothing was sent to the agent."""

    code: ClassVar[str] = "agent_unavailable"

    def __init__(
        self,
        *,
        agent: str,
        retry_after_s: float,
        workflow_id: str | None = None,
        node_id: str | None = None,
        attempts: int = 0,
    ) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(
            f"agent {agent!r} is unavailable: circuit breaker open, "
            f"may be retried in {retry_after_s:.1f} s",
            agent=agent,
            workflow_id=workflow_id,
            node_id=node_id,
            attempts=attempts,
        )

    def details(self) -> dict[str, Any]:
        return {**super().details(), "retry_after_s": self.retry_after_s}


class AgentTimeout(AgentError):
    """An attempt ran out of time; `phase` says which limit, `timeout_s` how long it was."""

    code: ClassVar[str] = "agent_timeout"

    def __init__(
        self,
        *,
        agent: str,
        phase: TimeoutPhase,
        timeout_s: float | None,
        workflow_id: str | None = None,
        node_id: str | None = None,
        attempts: int = 0,
    ) -> None:
        self.phase: TimeoutPhase = phase
        self.timeout_s = timeout_s
        after = f" after {timeout_s:.1f} s" if timeout_s is not None else ""
        cause = {
            "attempt": "per-attempt time limit",
            "deadline": "deadline reached",
            "bulkhead": "deadline reached waiting for a concurrency slot",
        }.get(phase, f"{phase} timeout")
        super().__init__(
            f"agent {agent!r} timed out{after} ({cause})",
            agent=agent,
            workflow_id=workflow_id,
            node_id=node_id,
            attempts=attempts,
        )

    def details(self) -> dict[str, Any]:
        return {**super().details(), "phase": self.phase, "timeout_s": self.timeout_s}


class AgentConnectionError(AgentError):
    """The agent could not be reached or the connection broke (refused, reset, DNS...)."""

    code: ClassVar[str] = "agent_unreachable"

    def __init__(
        self,
        *,
        agent: str,
        reason: str,
        workflow_id: str | None = None,
        node_id: str | None = None,
        attempts: int = 0,
    ) -> None:
        self.reason = reason
        super().__init__(
            f"agent {agent!r} is unreachable: {reason}",
            agent=agent,
            workflow_id=workflow_id,
            node_id=node_id,
            attempts=attempts,
        )

    def details(self) -> dict[str, Any]:
        return {**super().details(), "reason": self.reason}


class AgentHTTPError(AgentError):
    """The agent answered 5xx or 429: it could not serve the request now (retryable)."""

    code: ClassVar[str] = "agent_http_error"

    def __init__(
        self,
        *,
        agent: str,
        status: int,
        body: bytes | str = b"",
        retry_after_s: float | None = None,
        workflow_id: str | None = None,
        node_id: str | None = None,
        attempts: int = 0,
    ) -> None:
        self.status = status
        self.retry_after_s = retry_after_s
        self.body_excerpt = body_excerpt(body)
        super().__init__(
            self._describe(agent),
            agent=agent,
            workflow_id=workflow_id,
            node_id=node_id,
            attempts=attempts,
        )

    def _describe(self, agent: str) -> str:
        tail = f": {self.body_excerpt}" if self.body_excerpt else ""
        return f"agent {agent!r} answered HTTP {self.status}{tail}"

    def details(self) -> dict[str, Any]:
        return {
            **super().details(),
            "status": self.status,
            "retry_after_s": self.retry_after_s,
            "body": self.body_excerpt,
        }


class AgentRejected(AgentHTTPError):
    """The agent answered a 4xx other than 429: it is alive, our request was bad.

    Never retried and never counted against the agent's breaker.
    """

    code: ClassVar[str] = "agent_rejected"

    def _describe(self, agent: str) -> str:
        tail = f": {self.body_excerpt}" if self.body_excerpt else ""
        return f"agent {agent!r} rejected the request with HTTP {self.status}{tail}"


class AgentBadResponse(AgentError):
    """The answer breaks the agent contract: not JSON, not an object, status != "success",
    or `data` is not an object. Counted against the breaker; never retried."""

    code: ClassVar[str] = "agent_bad_response"

    def __init__(
        self,
        *,
        agent: str,
        reason: str,
        body: bytes | str = b"",
        status: int | None = None,
        workflow_id: str | None = None,
        node_id: str | None = None,
        attempts: int = 0,
    ) -> None:
        self.reason = reason
        self.status = status
        self.body_excerpt = body_excerpt(body)
        super().__init__(
            f"agent {agent!r} broke the response contract: {reason}",
            agent=agent,
            workflow_id=workflow_id,
            node_id=node_id,
            attempts=attempts,
        )

    def details(self) -> dict[str, Any]:
        return {
            **super().details(),
            "reason": self.reason,
            "status": self.status,
            "body": self.body_excerpt,
        }


class AgentResponseTooLarge(AgentBadResponse):
    """The answer's body was bigger than the agent's `max_response_bytes`.

    Read as a stream and abandoned at the limit (bodies are asked for and read
    uncompressed, so nothing inflates them), so a huge or endless answer costs at most
    the limit in memory; the connection is dropped, not drained.
    """

    code: ClassVar[str] = "agent_response_too_large"

    def __init__(
        self,
        *,
        agent: str,
        limit: int,
        status: int | None = None,
        workflow_id: str | None = None,
        node_id: str | None = None,
        attempts: int = 0,
    ) -> None:
        self.limit = limit
        super().__init__(
            agent=agent,
            reason=f"the answer is larger than {limit} bytes",
            status=status,
            workflow_id=workflow_id,
            node_id=node_id,
            attempts=attempts,
        )

    def details(self) -> dict[str, Any]:
        return {**super().details(), "limit_bytes": self.limit}


class AgentTaskFailed(AgentError):
    """An A2A agent answered, and its task ended without a result: `state` is "failed",
    "rejected", "canceled" or "error" (a JSON-RPC error object). Never retried: the
    same messageId would get the same task back. Counts against the breaker unless
    the agent refused the request (rejected, or a JSON-RPC error other than internal).
    """

    code: ClassVar[str] = "agent_task_failed"

    def __init__(
        self,
        *,
        agent: str,
        state: str,
        reason: str = "",
        task_id: str | None = None,
        agent_fault: bool = True,
        workflow_id: str | None = None,
        node_id: str | None = None,
        attempts: int = 0,
    ) -> None:
        self.state = state
        self.reason = reason
        self.task_id = task_id
        self.agent_fault = agent_fault
        tail = f": {body_excerpt(reason)}" if reason else ""
        super().__init__(
            self._describe(agent, state) + tail,
            agent=agent,
            workflow_id=workflow_id,
            node_id=node_id,
            attempts=attempts,
        )

    def _describe(self, agent: str, state: str) -> str:
        return f"agent {agent!r}: A2A task ended {state}"

    def details(self) -> dict[str, Any]:
        return {
            **super().details(),
            "state": self.state,
            "task_id": self.task_id,
            "reason": body_excerpt(self.reason),
        }


class AgentNeedsInput(AgentTaskFailed):
    """The A2A task stopped in input-required or auth-required: the agent wants a
    conversation this service does not hold. Not retried, not a breaker failure."""

    code: ClassVar[str] = "agent_needs_input"

    def _describe(self, agent: str, state: str) -> str:
        return f"agent {agent!r} needs more than one message ({state}); the step cannot go on"
