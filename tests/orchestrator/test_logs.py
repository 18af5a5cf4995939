"""Logs: one naming style across the code, readable console lines on request."""

from __future__ import annotations

import ast
import contextvars
import functools
import re
from pathlib import Path

import orjson
import pytest
import structlog

from agents.observe import attempt_of, log_attempt, log_node
from orchestrator.logs import configure_logging
from orchestrator.settings import ConfigError, Settings

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("orchestrator", "agents", "circuit", "state")
# `<subject>_<what happened>`: workflow_finished, agent_retry, lease_lost.
EVENT = re.compile(r"[a-z][a-z0-9]*(_[a-z0-9]+)+")
_LEVELS = {"debug", "info", "warning", "error", "exception", "critical", "msg"}
# The one logger name, and the ones it replaced (which must not come back).
_LOGGER_NAMES = {"log", "logger", "_log", "_logger", "LOG", "LOGGER"}


def test_console_format_gives_readable_lines(capsys: pytest.CaptureFixture[str]) -> None:
    """ORCH_LOG_FORMAT=console renders `event key=value` lines; JSON stays the default."""
    assert Settings.from_env({}).log_format == "json"
    assert Settings.from_env({"ORCH_LOG_FORMAT": "console"}).log_format == "console"
    with pytest.raises(ConfigError):
        Settings.from_env({"ORCH_LOG_FORMAT": "xml"})
    before = structlog.get_config()
    try:
        configure_logging("info", "console")
        structlog.get_logger("test.console").info("workflow_finished", status="completed")
        line = capsys.readouterr().err
        assert "workflow_finished" in line and "status=completed" in line
        assert not line.lstrip().startswith("{")
        configure_logging("info", "json")
        structlog.get_logger("test.json").info("workflow_finished", status="completed")
        assert capsys.readouterr().err.lstrip().startswith('{"status":"completed"')
    finally:
        structlog.configure(**before)  # the suite's own (tests/conftest.py)


def test_lines_logged_in_a_node_carry_its_node_agent_and_attempt(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The service's set-up merges the node context (set by the DAG engine and the agent
    client) into every line inside it; a key the call passes wins; none outside a node."""
    before = structlog.get_config()

    def in_node() -> None:
        node = ("viz", "viz")
        log_node.set(node)
        log_attempt.set((node, 2))
        logger = structlog.get_logger("test.node")
        logger.info("agent_call_failed", error="agent_timeout")
        logger.info("node_failed", attempt=3)

    try:
        configure_logging("info", "json")
        contextvars.copy_context().run(in_node)
        structlog.get_logger("test.node").info("workflow_finished")
        lines = [orjson.loads(line) for line in capsys.readouterr().err.splitlines()]
    finally:
        structlog.configure(**before)
    assert [(e.get("node"), e.get("agent"), e.get("attempt")) for e in lines] == [
        ("viz", "viz", 2),
        ("viz", "viz", 3),
        (None, None, None),
    ]


@functools.cache
def _sources() -> list[tuple[str, ast.Module]]:
    return [
        (str(path.relative_to(ROOT)), ast.parse(path.read_text(encoding="utf-8")))
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
    ]


def _log_calls(tree: ast.Module) -> list[tuple[ast.Call, list[ast.AST]]]:
    """Every `log.<level>(...)` call, with the functions it sits in (innermost last)."""
    found: list[tuple[ast.Call, list[ast.AST]]] = []

    def visit(node: ast.AST, scopes: list[ast.AST]) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            scopes = [*scopes, node]
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in _LEVELS
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id in _LOGGER_NAMES
        ):
            found.append((node, scopes))
        for child in ast.iter_child_nodes(node):
            visit(child, scopes)

    visit(tree, [])
    return found


def _event_names(tree: ast.Module, event: ast.expr, scopes: list[ast.AST]) -> list[str | None]:
    """The names an event argument can take: a literal, or a parameter of the enclosing
    function whose callers in the module all pass literals (followed through such helpers).
    None stands for anything else (an f-string, a computed name)."""
    if isinstance(event, ast.Constant) and isinstance(event.value, str):
        return [event.value]
    if not (isinstance(event, ast.Name) and scopes):
        return [None]
    function = scopes[-1]
    assert isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef)
    params = [a.arg for a in (*function.args.posonlyargs, *function.args.args)]
    if event.id not in params:
        return [None]
    position = params.index(event.id)
    names: list[str | None] = []
    for caller, caller_scopes in _calls_to(tree, function.name):
        given = [k.value for k in caller.keywords if k.arg == event.id]
        if position < len(caller.args):
            given.append(caller.args[position])
        names += [n for g in given for n in _event_names(tree, g, caller_scopes)] or [None]
    return names or [None]


def _calls_to(tree: ast.Module, name: str) -> list[tuple[ast.Call, list[ast.AST]]]:
    found: list[tuple[ast.Call, list[ast.AST]]] = []

    def visit(node: ast.AST, scopes: list[ast.AST]) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            scopes = [*scopes, node]
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == name:
            found.append((node, scopes))
        for child in ast.iter_child_nodes(node):
            visit(child, scopes)

    visit(tree, [])
    return found


def _called(call: ast.Call) -> str | None:
    """The called function's own name (`get_logger` for `structlog.get_logger(...)`)."""
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return call.func.id if isinstance(call.func, ast.Name) else None


def test_every_module_logs_through_one_logger_named_log() -> None:
    """`log = structlog.get_logger(__name__)`: one name, one kind of logger, no stdlib loggers."""
    loggers: list[str] = []
    bad: list[str] = []
    for where, tree in _sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and _called(node) == "getLogger":
                bad.append(f"{where}: stdlib logger")
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
                if _called(node.value) != "get_logger":
                    continue
                line = f"{where}: {ast.unparse(node)}"
                loggers.append(line)
                if line.split(": ", 1)[1] != "log = structlog.get_logger(__name__)":
                    bad.append(line)
            if isinstance(node, ast.Name) and node.id in _LOGGER_NAMES - {"log"}:
                bad.append(f"{where}:{node.lineno}: {node.id}")
    assert len(loggers) > 10
    assert bad == []


def test_every_log_event_is_a_snake_case_subject_and_happening() -> None:
    """One event style: `log.info("workflow_finished", workflow_id=...)`: a constant name of
    at least two snake_case words (what, then what happened), data in fields, never in the
    name, and no "step" field (the code's word is "node")."""
    names: list[tuple[str, str | None]] = []
    bad: list[str] = []
    for where, tree in _sources():
        for call, scopes in _log_calls(tree):
            here = f"{where}:{call.lineno}"
            if len(call.args) != 1:
                bad.append(f"{here}: {len(call.args)} positional arguments")
                continue
            names += [(here, name) for name in _event_names(tree, call.args[0], scopes)]
            fields = {k.arg for k in call.keywords if k.arg is not None}
            if fields & {"step", "step_id"}:
                bad.append(f"{here}: field {sorted(fields & {'step', 'step_id'})}")
    assert len(names) > 50
    bad += [f"{where}: {name!r}" for where, name in names if not EVENT.fullmatch(name or "")]
    assert bad == []


def test_the_event_style_check_catches_what_it_forbids() -> None:
    """The checks above are not vacuous: each bad form in a sample module is reported."""
    tree = ast.parse(
        "def audit(request, event):\n"
        "    log.warning(event, who=request)\n"
        "def a(request):\n"
        '    audit(request, "breaker_forced_open")\n'
        '    audit(request, f"breaker {request}")\n'
        '    log.info("Workflow finished.")\n'
    )
    found = [
        name
        for call, scopes in _log_calls(tree)
        for name in _event_names(tree, call.args[0], scopes)
    ]
    assert found == ["breaker_forced_open", None, "Workflow finished."]
    assert [n for n in found if EVENT.fullmatch(n or "")] == ["breaker_forced_open"]


def test_an_attempt_is_told_only_in_the_node_that_made_it() -> None:
    """A chain's nodes run one after another in one task with no reset of the attempt:
    the next node's lines say attempt 0 until its own; outside any node, an attempt made
    there (a call without the engine) is told, and a node's is not."""

    def lines() -> list[object]:
        told: list[object] = []
        first = ("a", "nlp")
        log_node.set(first)
        told.append(attempt_of(log_node.get()))  # none made yet
        log_attempt.set((log_node.get(), 2))
        told.append(attempt_of(log_node.get()))
        log_node.set(("b", "nlp"))  # the next node, same task
        told.append(attempt_of(log_node.get()))
        log_node.set(None)  # back in the workflow's own code
        told.append(attempt_of(log_node.get()))
        log_attempt.set((None, 1))  # a call made outside any node
        told.append(attempt_of(log_node.get()))
        return told

    assert contextvars.copy_context().run(lines) == [0, 2, 0, None, 1]
