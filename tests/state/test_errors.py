"""The state layer has one error tree, rooted at StateError."""

from __future__ import annotations

import state
from state.errors import StateError
from tests.orchestrator.error_tree import exception_classes


def test_every_state_error_is_a_state_error() -> None:
    """Every exception class state/ defines is under StateError (so callers catch one root)."""
    classes = exception_classes(state)
    assert StateError in classes
    for cls in classes:
        assert issubclass(cls, StateError), f"{cls.__module__}.{cls.__name__}"
