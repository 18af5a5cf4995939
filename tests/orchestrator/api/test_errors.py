"""The error middleware answers every exception class with a documented status and code.

"Every class": the orchestrator's tree, and every exception class of the layers below
(agents/, circuit/, state/) whether or not it should ever get to a route. "Documented":
the status and code are in the README's error table and in the OpenAPI document.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from structlog.testing import capture_logs

import agents
import circuit
import state
from agents.a2a import A2AProtocolError
from agents.errors import (
    AgentBadResponse,
    AgentConnectionError,
    AgentError,
    AgentHTTPError,
    AgentNeedsInput,
    AgentRejected,
    AgentResponseTooLarge,
    AgentTaskFailed,
    AgentTimeout,
    AgentUnavailable,
    UnknownAgent,
)
from agents.transport import (
    ResponseTooLarge,
    TransportConnectionError,
    TransportError,
    TransportTimeout,
)
from circuit.errors import BreakerBoardError, CircuitError, CircuitOpenError
from orchestrator.access.config import AccessConfigError
from orchestrator.access.exposure import UnsafeExposure
from orchestrator.api.errors import INTERNAL_ERROR_MESSAGE, ApiError, error_answer
from orchestrator.api.middleware import Handler
from orchestrator.api.openapi import openapi_document
from orchestrator.dag.budget import BudgetExceeded, EvaluationStopped, NeedsOffload
from orchestrator.dag.errors import DefinitionError, NodeError, NodeTimeout, Problem
from orchestrator.dag.expressions import ExpressionError
from orchestrator.dag.paths import PathError
from orchestrator.dag.templates import TemplateError
from orchestrator.dag.values import UnstorableValue
from orchestrator.errors import (
    BreakerBoardUnavailable,
    EvaluationError,
    EvaluationInterrupted,
    IdempotencyKeyInProgress,
    IdempotencyKeyReused,
    InvalidCursor,
    InvalidSchedule,
    OrchestratorError,
    RequestError,
    ScheduleNotFound,
    StartupError,
    StateStoreUnavailable,
    WorkflowAlreadyFinished,
    WorkflowNotFound,
)
from orchestrator.loop import EventLoopUnavailable
from orchestrator.settings import ConfigError
from state.errors import StateError
from state.history import BadCursor
from state.models import WorkflowStatus
from state.store import LeaseLost, StateStoreError
from tests.orchestrator.error_tree import ROOT, exception_classes, subtree

ClientFactory = Callable[..., Any]

# In every message a class is built with, so a 500 that leaks it is caught.
SECRET = "s3cr3t-internal-detail"

# One instance of every class. A class added to a tree without an entry here fails
# test_every_class_has_a_sample. None: an abstract base no code constructs (checked).
SAMPLES: dict[type[BaseException], Callable[[], BaseException] | None] = {
    # The orchestrator's tree.
    OrchestratorError: lambda: OrchestratorError(SECRET),
    RequestError: None,
    ApiError: None,
    WorkflowNotFound: lambda: WorkflowNotFound("wf-1"),
    WorkflowAlreadyFinished: lambda: WorkflowAlreadyFinished(
        "wf-1", status=WorkflowStatus.COMPLETED
    ),
    IdempotencyKeyReused: lambda: IdempotencyKeyReused("k", workflow_id="wf-1"),
    IdempotencyKeyInProgress: lambda: IdempotencyKeyInProgress("k", workflow_id="wf-1"),
    ScheduleNotFound: lambda: ScheduleNotFound("s-1"),
    InvalidSchedule: lambda: InvalidSchedule("bad cron", field="cron"),
    DefinitionError: lambda: DefinitionError([Problem("cycle", "a -> a", "a")]),
    InvalidCursor: lambda: InvalidCursor("not a cursor"),
    StateStoreUnavailable: lambda: StateStoreUnavailable(backend="redis", operation="get"),
    BreakerBoardUnavailable: lambda: BreakerBoardUnavailable(backend="redis", operation="force"),
    NodeError: lambda: NodeError(SECRET, code="expression_error", node_id="a"),
    NodeTimeout: lambda: NodeTimeout(node_id=SECRET, timeout_s=1.0),
    EvaluationError: lambda: EvaluationError(SECRET),
    ExpressionError: lambda: ExpressionError(SECRET, expr="x"),
    TemplateError: lambda: TemplateError(SECRET, template="{{x}}"),
    PathError: lambda: PathError(SECRET, path="a.b"),
    BudgetExceeded: lambda: BudgetExceeded(resource="operations", scope="node", limit=1),
    UnstorableValue: lambda: UnstorableValue(SECRET, code="not_json"),
    EvaluationInterrupted: lambda: EvaluationInterrupted(SECRET),
    EvaluationStopped: lambda: EvaluationStopped(SECRET),
    NeedsOffload: lambda: NeedsOffload(SECRET),
    StartupError: lambda: StartupError(SECRET),
    ConfigError: lambda: ConfigError(SECRET, source="env", key="ORCH_PORT"),
    AccessConfigError: lambda: AccessConfigError(SECRET, key="access.keys"),
    UnsafeExposure: lambda: UnsafeExposure(SECRET),
    EventLoopUnavailable: lambda: EventLoopUnavailable(SECRET),
    # state/
    StateError: lambda: StateError(SECRET),
    StateStoreError: lambda: StateStoreError(SECRET, backend="redis", operation="get"),
    LeaseLost: lambda: LeaseLost(SECRET, token=2),
    BadCursor: lambda: BadCursor(SECRET),
    # circuit/
    CircuitError: lambda: CircuitError(SECRET),
    CircuitOpenError: lambda: CircuitOpenError(SECRET, name="nlp", retry_after_s=1.0),
    BreakerBoardError: lambda: BreakerBoardError(SECRET, backend="redis", operation="force"),
    # agents/
    AgentError: lambda: AgentError(SECRET, agent="nlp"),
    UnknownAgent: lambda: UnknownAgent(agent=SECRET),
    AgentUnavailable: lambda: AgentUnavailable(agent=SECRET, retry_after_s=1.0),
    AgentTimeout: lambda: AgentTimeout(agent=SECRET, phase="read", timeout_s=1.0),
    AgentConnectionError: lambda: AgentConnectionError(agent="nlp", reason=SECRET),
    AgentHTTPError: lambda: AgentHTTPError(agent="nlp", status=502, body=SECRET),
    AgentRejected: lambda: AgentRejected(agent="nlp", status=400, body=SECRET),
    AgentBadResponse: lambda: AgentBadResponse(agent="nlp", reason=SECRET),
    AgentResponseTooLarge: lambda: AgentResponseTooLarge(agent=SECRET, limit=10),
    AgentTaskFailed: lambda: AgentTaskFailed(agent="nlp", state="failed", reason=SECRET),
    AgentNeedsInput: lambda: AgentNeedsInput(agent="nlp", state="input-required", reason=SECRET),
    A2AProtocolError: lambda: A2AProtocolError(SECRET),
    TransportError: lambda: TransportError(SECRET),
    TransportTimeout: lambda: TransportTimeout("read", 1.0),
    TransportConnectionError: lambda: TransportConnectionError(SECRET),
    ResponseTooLarge: lambda: ResponseTooLarge(10),
}

# The lower layers' errors that reach routes, and what the API answers; every other
# error of theirs is caught below the API, so reaching it is a bug: a 500.
LOWER_LAYER_ANSWERS: dict[type[BaseException], tuple[int, str]] = {
    StateStoreError: (503, "state_store_unavailable"),
    BreakerBoardError: (503, "breaker_board_unavailable"),
    BadCursor: (400, "invalid_cursor"),
}
INTERNAL = (500, "internal_error")


def _every_class() -> list[type[BaseException]]:
    classes: list[type[BaseException]] = list(subtree(OrchestratorError))
    for package in (agents, circuit, state):
        classes += [
            cls
            for cls in exception_classes(package)
            # agents.reference: the reference agents are services of their own.
            if not cls.__name__.startswith("_") and not cls.__module__.startswith("agents.refer")
        ]
    return classes


# --- what is documented -------------------------------------------------------------


def _readme_pairs() -> set[tuple[int, str]]:
    """(status, code) from the README's error table (the one after "Errors are always JSON")."""
    text = (ROOT / "README.md").read_text()
    table = text.split("Errors are always JSON", 1)[1].split("\n\n", 2)[1]
    pairs = set()
    for row in table.splitlines():
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        statuses = [int(s) for s in re.findall(r"\b[1-5]\d\d\b", cells[0])]
        for status in statuses:
            pairs |= {(status, code) for code in re.findall(r"`([a-z_]+)`", cells[1])}
    assert pairs, "the README's error table was not found"
    return pairs


def _openapi_pairs() -> set[tuple[int, str]]:
    pairs = set()
    for operations in openapi_document()["paths"].values():
        for op in operations.values():
            for status, response in op["responses"].items():
                schema = response.get("content", {}).get("application/json", {}).get("schema", {})
                for part in schema.get("allOf", []):
                    codes = part.get("properties", {}).get("error", {}).get("properties", {})
                    for code in codes.get("code", {}).get("enum", []):
                        pairs.add((int(status), code))
    return pairs


README = _readme_pairs()
OPENAPI = _openapi_pairs()


# --- where the HTTP layer picks a code ------------------------------------------------


@dataclass(frozen=True)
class RaiseSite:
    cls: type[ApiError]
    code: str
    where: str
    retry_after: bool  # the raise site or the class sets Retry-After


def _literal(node: ast.expr | None) -> Any:
    return node.value if isinstance(node, ast.Constant) else None


def _calls() -> Iterator[tuple[str, ast.Call]]:
    for path in sorted((ROOT / "orchestrator").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                name = node.func.id if isinstance(node.func, ast.Name) else None
                if name is None and isinstance(node.func, ast.Attribute):
                    name = node.func.attr
                if name is not None:
                    yield f"{path.relative_to(ROOT)}:{node.lineno} {name}", node


def _api_error_sites() -> list[RaiseSite]:
    """Every construction of an ApiError subclass in orchestrator/, with the code it gets."""
    classes = {cls.__name__: cls for cls in subtree(ApiError)}
    sites = []
    for where, call in _calls():
        cls = classes.get(where.rsplit(" ", 1)[1])
        if cls is None:
            continue
        given = {k.arg: k.value for k in call.keywords}
        code = _literal(given["code"]) if "code" in given else cls.code
        assert isinstance(code, str), f"{where}: give the code as a literal, so it can be checked"
        headers = given.get("headers")
        retry_after = cls.retry_after_s is not None or (
            isinstance(headers, ast.Dict) and "Retry-After" in map(_literal, headers.keys)
        )
        sites.append(RaiseSite(cls, code, where, retry_after))
    return sites


def _direct_responses() -> list[tuple[str, int, str]]:
    """JSON errors written without an exception: error_response(...) and the head deadline's."""
    found = []
    for where, call in _calls():
        if where.startswith("orchestrator/api/errors.py"):
            continue  # the middleware's own, checked through the classes
        if where.endswith((" error_response", " _reject")):
            status, code = (_literal(a) for a in call.args[:2])
            assert isinstance(status, int) and isinstance(code, str), f"{where}: use literals"
            found.append((where, status, code))
    return found


SITES = _api_error_sites()


# --- the cases ----------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    make: Callable[[], BaseException]
    expected: tuple[int, str]


def _expected(cls: type[BaseException]) -> tuple[int, str]:
    if issubclass(cls, RequestError):
        return cls.status, cls.code
    for ancestor in cls.__mro__:
        if ancestor in LOWER_LAYER_ANSWERS:
            return LOWER_LAYER_ANSWERS[ancestor]
    return INTERNAL


def _cases() -> list[Case]:
    cases = []
    for cls in _every_class():
        make = SAMPLES.get(cls)
        if make is None or issubclass(cls, ApiError):
            continue  # abstract bases (checked below); ApiError classes: per raise site
        cases.append(Case(f"{cls.__module__}.{cls.__name__}", make, _expected(cls)))
    for site in SITES:

        def make(site: RaiseSite = site) -> BaseException:
            return site.cls("a message", code=site.code)

        cases.append(Case(f"{site.where} {site.code}", make, (site.cls.status, site.code)))
    for exc, expected in (
        (web.HTTPNotFound(), (404, "not_found")),
        (web.HTTPMethodNotAllowed("PATCH", ["GET"]), (405, "method_not_allowed")),
        (web.HTTPRequestEntityTooLarge(1, 2), (413, "payload_too_large")),
        (KeyError(SECRET), INTERNAL),
        (RuntimeError(SECRET), INTERNAL),
    ):

        def make_foreign(exc: BaseException = exc) -> BaseException:
            return exc

        cases.append(Case(f"foreign {type(exc).__name__}", make_foreign, expected))
    return cases


CASES = _cases()


async def _answer(aiohttp_client: ClientFactory, exc: BaseException) -> Any:
    async def handler(request: web.Request) -> web.Response:
        raise exc

    # The error mapping alone, as the service's middleware (api/middleware.py) runs it.
    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except Exception as caught:
            return error_answer(request, caught)

    app = web.Application(middlewares=[errors])
    app.router.add_get("/raise", handler)
    client: TestClient[web.Request, web.Application] = await aiohttp_client(app)
    return await client.get("/raise")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_every_error_gets_its_documented_answer(
    aiohttp_client: ClientFactory, case: Case
) -> None:
    """The middleware answers with the expected status and code, both documented."""
    with capture_logs() as logs:
        response = await _answer(aiohttp_client, case.make())
    text = await response.text()
    assert response.content_type == "application/json", text
    body = await response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    assert (response.status, body["error"]["code"]) == case.expected
    assert "Traceback" not in text
    assert case.expected in README, f"{case.expected} is not in the README's error table"
    # aiohttp's own 404/405 are about routes that do not exist: only the README has them.
    if not case.id.startswith(("foreign HTTPNotFound", "foreign HTTPMethodNotAllowed")):
        assert case.expected in OPENAPI, f"{case.expected} is not in the OpenAPI document"
    events = {entry["event"]: entry for entry in logs}
    if case.expected == INTERNAL:
        assert body["error"]["message"] == INTERNAL_ERROR_MESSAGE
        assert SECRET not in text
        assert events["unhandled_error"]["exc_info"] is True  # the traceback goes to the log
    if response.status == 503:
        assert response.headers["Retry-After"].isdigit()
        assert events["dependency_unavailable"]["code"] == case.expected[1]


def test_every_class_has_a_sample() -> None:
    """A new exception class anywhere in the trees needs a sample here, so it is checked."""
    # ApiError's subclasses are sampled at each of their raise sites instead.
    every = {cls for cls in _every_class() if cls is ApiError or not issubclass(cls, ApiError)}
    assert every - SAMPLES.keys() == set(), "add these to SAMPLES"
    assert SAMPLES.keys() - every == set(), "these are no longer exception classes"


def test_abstract_bases_are_never_raised_themselves() -> None:
    """A class sampled as None is only a base: no code in orchestrator/ constructs it."""
    abstract = {cls.__name__ for cls, make in SAMPLES.items() if make is None}
    constructed = {where.rsplit(" ", 1)[1] for where, _ in _calls()}
    assert abstract & constructed == set()


def test_every_http_layer_error_class_is_raised_somewhere() -> None:
    """Each concrete ApiError class has a raise site (else it is dead, and its code untested)."""
    raised = {site.cls for site in SITES}
    assert set(subtree(ApiError)) - {ApiError} - raised == set()


def test_errors_written_directly_are_documented() -> None:
    """The few JSON errors written without an exception use documented codes too."""
    found = _direct_responses()
    assert found, "the scan found none: it is broken"
    for where, status, code in found:
        assert (status, code) in README, where
        if " error_response" in where:
            assert (status, code) in OPENAPI, where


def test_every_429_and_503_says_when_to_retry() -> None:
    """The HTTP layer's 429s and 503s carry Retry-After, as the OpenAPI document says."""
    for site in SITES:
        if site.cls.status in (429, 503):
            assert site.retry_after, site.where


def test_the_openapi_document_promises_no_code_nothing_answers() -> None:
    """Every (status, code) the OpenAPI document lists is answered somewhere in the code."""
    answered = {case.expected for case in CASES}
    answered |= {(status, code) for _, status, code in _direct_responses()}
    assert OPENAPI - answered == set()
