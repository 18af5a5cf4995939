"""orchestrator/ has one error tree, the one its errors module draws."""

from __future__ import annotations

import re

import pytest

import orchestrator
from circuit.errors import BreakerBoardError, CircuitOpenError
from orchestrator.errors import (
    BreakerBoardUnavailable,
    EvaluationInterrupted,
    InvalidCursor,
    OrchestratorError,
    RequestError,
    StateStoreUnavailable,
    translate,
)
from state.history import BadCursor
from state.store import LeaseLost, StateStoreError
from tests.orchestrator.error_tree import (
    ROOT,
    drawn_tree,
    exception_classes,
    private_outside_the_tree,
    subtree,
)

_WHERE = re.compile(r"^([\w/]+\.py)[:;]")


def _parent(cls: type[BaseException]) -> str | None:
    parents = [b for b in cls.__bases__ if issubclass(b, OrchestratorError)]
    assert len(parents) <= 1, f"{cls.__name__} has two places in the tree: {parents}"
    return parents[0].__name__ if parents else None


def test_the_drawing_is_the_tree() -> None:
    """Every class in the tree is drawn under its real parent, and nothing else is drawn."""
    drawn = {name: parent for name, (parent, _) in drawn_tree().items()}
    real = {cls.__name__: _parent(cls) for cls in subtree(OrchestratorError)}
    assert len(real) == len(subtree(OrchestratorError)), "two classes of the tree share a name"
    assert drawn == real


def test_the_drawing_says_where_each_class_lives() -> None:
    """A class lives in the module its line names, else in its parent's (the root's: errors.py)."""
    classes = {cls.__name__: cls for cls in subtree(OrchestratorError)}
    modules: dict[str | None, str] = {None: "orchestrator.errors"}
    for name, (parent, text) in drawn_tree().items():  # parents come before their children
        where = _WHERE.match(text)
        modules[name] = (
            "orchestrator." + where[1].removesuffix(".py").replace("/", ".")
            if where
            else modules[parent]
        )
        assert classes[name].__module__ == modules[name], name


def test_every_exception_class_in_orchestrator_is_in_the_tree() -> None:
    """Public exception classes have the one root; private ones are listed and stay home."""
    outside = private_outside_the_tree()
    found_private = set()
    for cls in exception_classes(orchestrator):
        if not cls.__name__.startswith("_"):
            assert issubclass(cls, OrchestratorError), f"{cls.__module__}.{cls.__name__}"
            continue
        found_private.add(cls.__name__)
        assert cls.__name__ in outside, f"{cls.__module__}.{cls.__name__} is not in the docstring"
        home = ROOT / (cls.__module__.replace(".", "/") + ".py")
        for path in (ROOT / "orchestrator").rglob("*.py"):
            if path not in (home, ROOT / "orchestrator" / "errors.py"):
                text = path.read_text()
                assert not re.search(rf"\b{cls.__name__}\b", text), f"{cls.__name__} in {path}"
    assert found_private == outside, "the docstring lists a private class that is gone"


def test_evaluation_interruptions_never_leave_dag() -> None:
    """EvaluationInterrupted is control flow inside orchestrator/dag/, as the drawing says."""
    names = [cls.__name__ for cls in subtree(EvaluationInterrupted)]
    for path in (ROOT / "orchestrator").rglob("*.py"):
        if "dag" not in path.relative_to(ROOT).parts and path != ROOT / "orchestrator/errors.py":
            text = path.read_text()
            assert not [n for n in names if re.search(rf"\b{n}\b", text)], path


def test_request_errors_say_how_the_api_answers() -> None:
    """Every RequestError has a 4xx/5xx status and a snake_case code of its own class."""
    for cls in subtree(RequestError):
        assert 400 <= cls.status <= 599, cls
        assert re.fullmatch(r"[a-z][a-z_]*[a-z]", cls.code), cls


@pytest.mark.parametrize(
    ("lower", "ours", "status", "code"),
    [
        (
            StateStoreError("down", backend="redis", operation="get"),
            StateStoreUnavailable,
            503,
            "state_store_unavailable",
        ),
        (
            BreakerBoardError("down", backend="redis", operation="force"),
            BreakerBoardUnavailable,
            503,
            "breaker_board_unavailable",
        ),
        (BadCursor("not a cursor"), InvalidCursor, 400, "invalid_cursor"),
    ],
)
def test_translate_makes_lower_layer_errors_ours(
    lower: Exception, ours: type[RequestError], status: int, code: str
) -> None:
    """The errors of state/ and circuit/ that reach routes become ours, from the original."""
    translated = translate(lower)
    assert type(translated) is ours
    assert isinstance(translated, RequestError)
    assert (translated.status, translated.code) == (status, code)
    assert translated.__cause__ is lower


def test_translate_leaves_other_errors_alone() -> None:
    """Errors caught below the API, and foreign ones, are not translated."""
    for exc in (
        LeaseLost("w", token=3),
        CircuitOpenError("open", name="nlp", retry_after_s=1.0),
        KeyError("x"),
    ):
        assert translate(exc) is exc
