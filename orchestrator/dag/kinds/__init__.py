"""Node kinds: the registry and the built-in kinds (agent, condition, transform,
aggregate, validate). Code outside the engine adds kinds with `register`."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from orchestrator.dag.kinds.agent import AgentKind
from orchestrator.dag.kinds.aggregate import AggregateKind
from orchestrator.dag.kinds.base import (
    AgentCaller,
    AgentCallResult,
    BaseKind,
    Compiled,
    NodeContext,
    NodeKind,
    ProblemCollector,
)
from orchestrator.dag.kinds.condition import ConditionKind
from orchestrator.dag.kinds.transform import TransformKind
from orchestrator.dag.kinds.validate import ValidateKind

__all__ = [
    "AgentCallResult",
    "AgentCaller",
    "BaseKind",
    "Compiled",
    "NodeContext",
    "NodeKind",
    "NodeKindRegistry",
    "ProblemCollector",
    "default_kinds",
]


class NodeKindRegistry:
    """The node kinds a definition may use, by name."""

    def __init__(self, kinds: list[NodeKind] | tuple[NodeKind, ...] = ()) -> None:
        self._kinds: dict[str, NodeKind] = {}
        for kind in kinds:
            self.register(kind)

    def register(self, kind: NodeKind, *, replace: bool = False) -> None:
        """Add a kind; ValueError if its name is taken (unless `replace`)."""
        if not replace and kind.name in self._kinds:
            raise ValueError(f"node kind {kind.name!r} is already registered")
        self._kinds[kind.name] = kind

    def get(self, name: str) -> NodeKind | None:
        return self._kinds.get(name)

    def __getitem__(self, name: str) -> NodeKind:
        return self._kinds[name]

    def __contains__(self, name: object) -> bool:
        return name in self._kinds

    def __iter__(self) -> Iterator[str]:
        return iter(self._kinds)

    def __len__(self) -> int:
        return len(self._kinds)

    def params_schemas(self) -> list[tuple[str, Mapping[str, Any]]]:
        """(name, params schema) for every kind, in registration order."""
        return [(name, kind.params_schema) for name, kind in self._kinds.items()]


def default_kinds() -> NodeKindRegistry:
    """A new registry holding the built-in kinds; register more on it freely."""
    return NodeKindRegistry(
        [AgentKind(), ConditionKind(), TransformKind(), AggregateKind(), ValidateKind()]
    )
