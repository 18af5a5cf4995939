"""Logs: one naming style across the code, readable console lines on request."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import structlog

from orchestrator.logs import configure_logging
from orchestrator.settings import ConfigError, Settings

ROOT = Path(__file__).resolve().parents[2]
SNAKE = re.compile(r"[a-z][a-z0-9]*(_[a-z0-9]+)*")
_LEVELS = {"debug", "info", "warning", "error", "exception", "critical"}


def test_console_format_gives_readable_lines(capsys: pytest.CaptureFixture[str]) -> None:
    """ORCH_LOG_FORMAT=console renders `event key=value` lines; JSON stays the default."""
    assert Settings.from_env({}).log_format == "json"
    assert Settings.from_env({"ORCH_LOG_FORMAT": "console"}).log_format == "console"
    with pytest.raises(ConfigError):
        Settings.from_env({"ORCH_LOG_FORMAT": "xml"})
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
        structlog.reset_defaults()


def test_every_log_event_name_is_snake_case() -> None:
    """One naming style: `log.info("workflow_finished", ...)`, never "Workflow finished."."""
    names: list[tuple[str, str]] = []
    for package in ("orchestrator", "agents", "circuit", "state"):
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr in _LEVELS
                    and isinstance(node.func.value, ast.Name)
                    and node.func.value.id in {"log", "logger"}
                    and node.args
                    and isinstance(node.args[0], ast.Constant)
                    and isinstance(node.args[0].value, str)
                ):
                    names.append((str(path.relative_to(ROOT)), node.args[0].value))
    assert len(names) > 20
    bad = [(where, name) for where, name in names if not SNAKE.fullmatch(name)]
    assert bad == []
