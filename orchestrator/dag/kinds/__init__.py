"""Node kinds: the registry and the built-in kinds (agent, condition, transform,
aggregate, validate). Code outside the engine adds kinds with `register`, or
through `create_app(settings, kinds=[...])`."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

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
from orchestrator.dag.model import NodeDef, WorkflowDef, definition_type

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

    def __init__(self, kinds: Iterable[NodeKind] = ()) -> None:
        self._kinds: dict[str, NodeKind] = {}
        for kind in kinds:
            self.register(kind)

    def register(self, kind: NodeKind, *, replace: bool = False) -> None:
        """Add a kind; ValueError if its name is taken (unless `replace`), or if its
        `node_type` is not a NodeDef subclass tagged with its name."""
        if not replace and kind.name in self._kinds:
            raise ValueError(f"node kind {kind.name!r} is already registered")
        node_type = kind.node_type
        if not (isinstance(node_type, type) and issubclass(node_type, NodeDef)):
            raise ValueError(f"node kind {kind.name!r}: node_type must be a NodeDef subclass")
        tag = node_type.__struct_config__.tag
        if tag != kind.name:
            raise ValueError(
                f"node kind {kind.name!r}: its node_type {node_type.__name__} is tagged "
                f"{tag!r}; declare it as `class {node_type.__name__}(NodeDef, "
                f"tag={kind.name!r})`"
            )
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

    def node_types(self) -> tuple[type[NodeDef], ...]:
        """Every kind's node model, in registration order."""
        return tuple(kind.node_type for kind in self._kinds.values())

    def definition_type(self) -> type[WorkflowDef]:
        """The definition model whose nodes are these kinds (cached per set of kinds)."""
        return definition_type(self.node_types())


def default_kinds(extra: Iterable[NodeKind] = ()) -> NodeKindRegistry:
    """A new registry holding the built-in kinds and `extra`; register more freely."""
    return NodeKindRegistry(
        [AgentKind(), ConditionKind(), TransformKind(), AggregateKind(), ValidateKind(), *extra]
    )
