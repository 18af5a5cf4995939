"""The typed, immutable form of a workflow definition (what `parse_definition` returns).

A definition is data only: nothing here is compiled or checked against registries.
`compiler.compile_workflow` turns it into a `CompiledWorkflow` the DAG engine executes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from orchestrator.dag.triggers import TriggerRule, default_trigger

# Fields every node may carry, whatever its kind; the rest are the kind's params.
COMMON_NODE_FIELDS: frozenset[str] = frozenset(
    {
        "id",
        "kind",
        "description",
        "depends_on",
        "when",
        "on_failure",
        "fallback",
        "timeout_s",
        "estimate_ms",
        "trigger",
    }
)

# Nodes of one workflow running at once: wide enough that a typical fan-out runs in one
# go, while each agent's own limit (AgentSpec.concurrency, 64) still bounds what one
# workflow can take from an agent. README "Defaults" has the measurements.
DEFAULT_MAX_PARALLEL = 32
DEFAULT_TIMEOUT_S = 120.0


class OnFailure(StrEnum):
    """What a node's failure does to the workflow."""

    # Cancel every running node and fail the workflow.
    STOP = "stop"
    # Mark the node failed, skip its dependents, end the workflow degraded.
    CONTINUE = "continue"


class FallbackKind(StrEnum):
    AGENT = "agent"
    VALUE = "value"
    BUILTIN = "builtin"


@dataclass(frozen=True, slots=True)
class FallbackDef:
    """What replaces a failed node's output: another agent, a static value, or a built-in.

    `target` is the agent name or built-in name (None for a static value); `input` is
    the agent fallback's input template (None: the node's own rendered input);
    `value` is the static value.
    """

    kind: FallbackKind
    target: str | None = None
    input: Any = None
    value: Any = None


@dataclass(frozen=True, slots=True)
class WorkflowOptions:
    max_parallel: int = DEFAULT_MAX_PARALLEL
    # Wall-clock budget of the whole workflow; None: unbounded.
    timeout_s: float | None = DEFAULT_TIMEOUT_S
    on_failure: OnFailure = OnFailure.STOP


def _frozen(mapping: Mapping[str, Any] | None = None) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True, slots=True)
class NodeDef:
    """One node. `params` holds the kind-specific fields exactly as submitted.

    `on_failure` None means "the workflow's options.on_failure"; `estimate_ms` is an
    optional duration hint used only to weigh the plan's critical path; `trigger`
    None means the default rule for its number of dependencies (dag/triggers.py).
    """

    id: str
    kind: str
    depends_on: tuple[str, ...] = ()
    when: str | None = None
    on_failure: OnFailure | None = None
    fallback: FallbackDef | None = None
    timeout_s: float | None = None
    estimate_ms: float | None = None
    description: str | None = None
    params: Mapping[str, Any] = field(default_factory=_frozen)
    trigger: TriggerRule | None = None

    def effective_trigger(self) -> TriggerRule:
        return self.trigger if self.trigger is not None else default_trigger(len(self.depends_on))

    def effective_on_failure(self, options: WorkflowOptions) -> OnFailure:
        return self.on_failure if self.on_failure is not None else options.on_failure


@dataclass(frozen=True, slots=True)
class WorkflowDef:
    """A whole definition; `nodes` keeps submission order, `depends_on` is normalised
    (edges of the nodes-and-edges form folded in)."""

    name: str
    nodes: tuple[NodeDef, ...]
    inputs: Mapping[str, Any] = field(default_factory=_frozen)
    options: WorkflowOptions = field(default_factory=WorkflowOptions)
    output: Any | None = None
    description: str | None = None

    def node_ids(self) -> list[str]:
        return [n.id for n in self.nodes]


def frozen_mapping(mapping: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """A read-only copy of `mapping` (shallow), for model fields."""
    return _frozen(mapping)
