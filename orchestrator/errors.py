"""The orchestrator's errors: one tree, and the HTTP answer each branch gets.

```
OrchestratorError                 root of every error orchestrator/ raises
├── RequestError                  the API answers it as it is: status, code, details(), headers()
│   ├── ApiError                  api/errors.py: the HTTP layer's; a raise site may pick the code
│   │   ├── BadRequest            400 malformed_json, missing_field, … (code from the raise site)
│   │   ├── Unauthorized          401 unauthorized, invalid_key (WWW-Authenticate)
│   │   ├── Forbidden             403 forbidden, agent_not_allowed
│   │   ├── NotFound              404 not_found, agent_not_found
│   │   ├── RequestTimeout        408 request_timeout
│   │   ├── UnsupportedMediaType  415 unsupported_media_type, unsupported_content_encoding
│   │   ├── Unprocessable         422 definition_too_complex (code from the raise site)
│   │   ├── TooManyRequests       429 rate_limited, too_many_workflows, tenant_quota_exceeded
│   │   └── TooManyStreams        api/events.py: 503 too_many_streams (Retry-After)
│   ├── WorkflowNotFound          404 workflow_not_found (also another tenant's workflow)
│   ├── WorkflowAlreadyFinished   409 workflow_finished (details: the terminal status)
│   ├── IdempotencyKeyInProgress  409 idempotency_key_in_progress (Retry-After)
│   ├── IdempotencyKeyReused      422 idempotency_key_reused
│   ├── ScheduleNotFound          404 schedule_not_found (also another tenant's schedule)
│   ├── InvalidSchedule           422 invalid_schedule (details: the field); a ValueError
│   ├── DefinitionError           dag/errors.py: 422 invalid_workflow (every problem); a ValueError
│   ├── InvalidCursor             400 invalid_cursor, wraps state.history.BadCursor
│   ├── StateStoreUnavailable     503 state_store_unavailable, wraps state.store.StateStoreError
│   └── BreakerBoardUnavailable   503 breaker_board_unavailable, wraps circuit's BreakerBoardError
├── NodeError                     dag/errors.py: a node failed; `code` is the node's error type
│   └── NodeTimeout               node_timeout: the node's own timeout_s ran out
├── EvaluationError               a client's expression, template or value broke a rule; the
│   │                             engine records it as the node's error (a Problem when compiling)
│   ├── ExpressionError           dag/expressions.py; a ValueError
│   ├── TemplateError             dag/templates.py; a ValueError
│   ├── PathError                 dag/paths.py; a LookupError
│   ├── BudgetExceeded            dag/budget.py; a ValueError
│   └── UnstorableValue           dag/values.py; a ValueError; `code` is the node's error type
├── EvaluationInterrupted         control flow from a budget to the node kind spending it
│   ├── EvaluationStopped         dag/budget.py: stopped, the node was cancelled or timed out
│   └── NeedsOffload              dag/budget.py: the inline slice ran out, redo it off the loop
└── StartupError                  the service must not start so: the CLI prints it, exits 2
    ├── ConfigError               settings_values.py: the environment or config file; a ValueError
    ├── AccessConfigError         access/config.py: an [access]/[tenants] value; a ValueError
    ├── UnsafeExposure            access/exposure.py: no API key, on a non-loopback address
    └── EventLoopUnavailable      loop.py: uvloop asked for, not installed; a RuntimeError
```

How the API answers (orchestrator/api/errors.py, one middleware walking the MRO):

- a `RequestError` is answered with its `status` and `code`, `str(exc)` as the message,
  `details()` as the details and `headers()` added to the response;
- the lower layers' errors that can reach a route are translated by `translate()` below,
  the one place they become ours (raised `from` the original): `state.store.StateStoreError`
  -> `StateStoreUnavailable`, `circuit.errors.BreakerBoardError` -> `BreakerBoardUnavailable`,
  `state.history.BadCursor` -> `InvalidCursor`;
- everything else is a bug if it gets there, and is a 500 `internal_error` whose message
  says nothing of it (the traceback goes to the log): the other branches of this tree (a
  node's failure is recorded on the node, a start-up error stops the CLI), and the lower
  layers' errors that are caught below the API (`agents.errors.AgentError` by the node
  kinds, `agents.transport.TransportError` and `circuit.errors.CircuitOpenError` by
  `AgentClient`, `state.store.LeaseLost` by the lifecycle).

A class lives in the module its line names, else in its parent's. `tests/orchestrator/
test_errors.py` checks this drawing against the classes, and `tests/orchestrator/api/
test_errors.py` sends every class (and every raise site of the HTTP layer's) through the
middleware and checks the answer is a status and code that the README's error table and
the OpenAPI document both list.

Outside the tree, on purpose: private control-flow exceptions that never leave their
module (a test checks no other module names them) — dag/engine.py's `_Paused`,
`_TimedOut`, `_OutputError`, `_StopWorkflow`, dag/expressions.py's `_Refused`, `_TooBig`
and dag/values.py's `_NotPlain`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from circuit.errors import BreakerBoardError
from state.history import BadCursor
from state.models import WorkflowStatus
from state.store import StateStoreError

# What a client is told to wait before retrying when a dependency is away or busy.
RETRY_AFTER_S = 1


class OrchestratorError(Exception):
    """Root of every error the orchestrator package raises."""


class RequestError(OrchestratorError):
    """An error the API answers as it is: `status`, `code`, the message, details and headers.

    `code` is a stable snake_case string documented in the README's error table and the
    OpenAPI document; a subclass sets it (and `status`), and `ApiError` lets the raise
    site choose it. `retry_after_s`, when set, becomes a `Retry-After` header.
    """

    status: ClassVar[int] = 400
    code: str = "bad_request"
    retry_after_s: ClassVar[int | None] = None

    def details(self) -> Any:
        """JSON-ready context for the error body's `details` (None: nothing to add)."""
        return None

    def headers(self) -> Mapping[str, str]:
        """Headers the response carries (`Retry-After` when `retry_after_s` is set)."""
        if self.retry_after_s is None:
            return {}
        return {"Retry-After": str(self.retry_after_s)}


class WorkflowNotFound(RequestError):
    status, code = 404, "workflow_not_found"

    def __init__(self, workflow_id: str) -> None:
        super().__init__(f"no workflow {workflow_id!r} (unknown, or its state has expired)")
        self.workflow_id = workflow_id

    def details(self) -> dict[str, Any]:
        return {"workflow_id": self.workflow_id}


class WorkflowAlreadyFinished(RequestError):
    status, code = 409, "workflow_finished"

    def __init__(self, workflow_id: str, *, status: WorkflowStatus) -> None:
        super().__init__(f"workflow {workflow_id!r} already finished with status {status.value!r}")
        self.workflow_id = workflow_id
        # Not `status`: that is the HTTP status every RequestError carries.
        self.workflow_status = status

    def details(self) -> dict[str, Any]:
        return {"workflow_id": self.workflow_id, "status": self.workflow_status.value}


class IdempotencyKeyReused(RequestError):
    """The same Idempotency-Key came with a different request: refused, nothing run."""

    status, code = 422, "idempotency_key_reused"

    def __init__(self, key: str, *, workflow_id: str) -> None:
        super().__init__(
            f"Idempotency-Key {key!r} was used for a different request (workflow {workflow_id!r})"
        )
        self.key = key
        self.workflow_id = workflow_id

    def details(self) -> dict[str, Any]:
        return {"idempotency_key": self.key, "workflow_id": self.workflow_id}


class IdempotencyKeyInProgress(RequestError):
    """The key's first request is still being accepted (on this or another replica)."""

    status, code = 409, "idempotency_key_in_progress"
    retry_after_s = RETRY_AFTER_S

    def __init__(self, key: str, *, workflow_id: str) -> None:
        super().__init__(f"Idempotency-Key {key!r}: the first request is still being accepted")
        self.key = key
        self.workflow_id = workflow_id

    def details(self) -> dict[str, Any]:
        return {"idempotency_key": self.key, "workflow_id": self.workflow_id}


class ScheduleNotFound(RequestError):
    status, code = 404, "schedule_not_found"

    def __init__(self, schedule_id: str) -> None:
        super().__init__(f"no schedule {schedule_id!r}")
        self.schedule_id = schedule_id

    def details(self) -> dict[str, Any]:
        return {"schedule_id": self.schedule_id}


class InvalidSchedule(RequestError, ValueError):
    """A cron expression, time zone or misfire policy that cannot be used (`field` says which)."""

    status, code = 422, "invalid_schedule"

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field

    def details(self) -> dict[str, Any]:
        return {"field": self.field}


class InvalidCursor(RequestError):
    """A history cursor that is not one this service made (wraps state.history.BadCursor)."""

    status, code = 400, "invalid_cursor"


class StateStoreUnavailable(RequestError):
    """The state store could not be reached or could not keep up (wraps StateStoreError)."""

    status, code = 503, "state_store_unavailable"
    retry_after_s = RETRY_AFTER_S

    def __init__(self, *, backend: str, operation: str) -> None:
        super().__init__("the state store is unreachable or overloaded; retry shortly")
        self.backend = backend
        self.operation = operation

    def details(self) -> dict[str, Any]:
        return {"backend": self.backend, "operation": self.operation}


class BreakerBoardUnavailable(RequestError):
    """An ops action on a shared breaker could not be recorded: nothing was changed."""

    status, code = 503, "breaker_board_unavailable"
    retry_after_s = RETRY_AFTER_S

    def __init__(self, *, backend: str, operation: str) -> None:
        super().__init__(
            f"the shared breaker board ({backend}) is not reachable; nothing was changed"
        )
        self.backend = backend
        self.operation = operation

    def details(self) -> dict[str, Any]:
        return {"backend": self.backend, "operation": self.operation}


class EvaluationError(OrchestratorError):
    """A client's expression, template or value broke a rule (see the subclasses)."""


class EvaluationInterrupted(OrchestratorError):
    """An evaluation was cut short on purpose; the code that started it handles it."""


class StartupError(OrchestratorError):
    """The service must not start as configured; the message says what to change."""


def translate(exc: BaseException) -> BaseException:
    """A lower layer's error that can reach a route, as ours (`from` it); others unchanged.

    The one place state/ and circuit/ errors become the orchestrator's (see the module
    docstring for the ones that are caught below the API instead).
    """
    ours: RequestError
    if isinstance(exc, StateStoreError):
        ours = StateStoreUnavailable(backend=exc.backend, operation=exc.operation)
    elif isinstance(exc, BreakerBoardError):
        ours = BreakerBoardUnavailable(backend=exc.backend, operation=exc.operation)
    elif isinstance(exc, BadCursor):
        ours = InvalidCursor(str(exc))
    else:
        return exc
    ours.__cause__ = exc
    return ours
