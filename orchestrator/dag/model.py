"""The workflow definition: one typed model (msgspec), decoded, checked and published.

These classes are the definition's only description. `parse.parse_definition`
decodes a submitted JSON object into them (types, bounds, patterns, required and
unknown fields all checked by msgspec as it builds the objects), and
`schema.definition_schema` generates the published JSON Schema from them.

A node is a `NodeDef` subclass per kind, tagged with the kind's name (msgspec's
`tag_field="kind"`): the common fields live here, each kind declares its own
fields on its subclass (`kinds/agent.py`: `AgentNode`), and the definition type
that decodes a registry's kinds is built from their union (`definition_type`).
Rules a field's type cannot say (a fallback has exactly one form) are checked in
`__post_init__`, and the same rule is written for the schema in
`json_schema_extra`, next to it.

Nothing here is compiled or checked against registries of agents or built-ins:
`compiler.compile_workflow` turns a definition into the `CompiledWorkflow` the DAG
engine executes.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Union

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from orchestrator.dag.triggers import TriggerRule, default_trigger

# Nodes of one workflow running at once: wide enough that a typical fan-out runs in one
# go, while each agent's own limit (AgentSpec.concurrency, 64) still bounds what one
# workflow can take from an agent. README "Defaults" has the measurements.
DEFAULT_MAX_PARALLEL = 32
DEFAULT_TIMEOUT_S = 120.0
DEFAULT_NAME = "workflow"

NODE_ID_PATTERN = "^[A-Za-z_][A-Za-z0-9_]{0,63}$"
NAME_PATTERN = "^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"

NodeId = Annotated[str, Meta(pattern=NODE_ID_PATTERN)]
# A dependency is any string up to a node id's length: one that names no node is
# reported as an unknown dependency ("node 'b' depends on 'x y', which is not a node"),
# which says more than a pattern mismatch, and a definition's ~20,000 dependencies are
# checked without a regex match each.
DependencyId = Annotated[str, Meta(min_length=1, max_length=64)]
# Agent, kind and built-in names.
Name = Annotated[str, Meta(pattern=NAME_PATTERN)]
Expression = Annotated[str, Meta(min_length=1, max_length=2000)]
DotPath = Annotated[str, Meta(min_length=1, max_length=500)]
Description = Annotated[str, Meta(max_length=2000)]
# Any JSON; strings may contain {{ dot.path }} (compiled by dag/templates.py).
TemplateValue = Annotated[
    Any,
    Meta(
        description="Any JSON; strings may contain {{ dot.path }}. A string that is one "
        "whole template keeps the referenced value's type."
    ),
]
Seconds = Annotated[float, Meta(gt=0, le=86_400)]


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


class Fallback(Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """What replaces a failed node's output: exactly one of another agent (`agent`,
    with an optional `input` template; default: the failed node's own rendered
    input), a static `value` (used as is), or a built-in function (`builtin`)."""

    agent: Name | UnsetType = UNSET
    input: TemplateValue | UnsetType = UNSET
    value: Any | UnsetType = UNSET
    builtin: Name | UnsetType = UNSET

    json_schema_extra: ClassVar[dict[str, Any]] = {
        "oneOf": [{"required": ["agent"]}, {"required": ["value"]}, {"required": ["builtin"]}],
        "dependentRequired": {"input": ["agent"]},
    }

    def __post_init__(self) -> None:
        forms = [f for f in ("agent", "value", "builtin") if getattr(self, f) is not UNSET]
        if len(forms) != 1:
            given = f" (got {', '.join(repr(f) for f in forms)})" if forms else ""
            raise ValueError(f"a fallback needs exactly one of 'agent', 'value', 'builtin'{given}")
        if self.input is not UNSET and self.agent is UNSET:
            raise ValueError("'input' goes with an 'agent' fallback only")

    @property
    def kind(self) -> FallbackKind:
        if self.agent is not UNSET:
            return FallbackKind.AGENT
        return FallbackKind.BUILTIN if self.builtin is not UNSET else FallbackKind.VALUE

    @property
    def target(self) -> str | None:
        """The agent's or the built-in's name (None for a static value)."""
        if self.agent is not UNSET:
            return self.agent
        return self.builtin if self.builtin is not UNSET else None


class Options(Struct, frozen=True, forbid_unknown_fields=True):
    """Workflow-wide options."""

    max_parallel: Annotated[int, Meta(ge=1, le=1000)] = DEFAULT_MAX_PARALLEL
    # Wall-clock budget of the whole workflow.
    timeout_s: Seconds = DEFAULT_TIMEOUT_S
    on_failure: OnFailure = OnFailure.STOP


class Edge(Struct, frozen=True, forbid_unknown_fields=True):
    """The nodes-and-edges form of visual editors; folded into the target's depends_on."""

    source: NodeId
    target: NodeId
    id: Annotated[str, Meta(max_length=200)] | None = None


class NodeDef(Struct, frozen=True, forbid_unknown_fields=True, tag_field="kind", kw_only=True):
    """The fields every node carries, whatever its kind; a kind subclasses it with
    `tag=<kind name>` and adds its own fields.

    `on_failure` None means "the workflow's options.on_failure"; `estimate_ms` is an
    optional duration hint used only to weigh the plan's critical path; `trigger`
    None means the default rule for its number of dependencies (dag/triggers.py).
    """

    id: NodeId
    description: Description | None = None
    depends_on: tuple[DependencyId, ...] = ()
    when: (
        Annotated[
            Expression,
            Meta(description="Run only if this expression is true; otherwise the node is skipped."),
        ]
        | None
    ) = None
    on_failure: OnFailure | None = None
    fallback: Fallback | None = None
    timeout_s: Seconds | None = None
    estimate_ms: (
        Annotated[
            float, Meta(ge=0, description="Expected duration; weighs the plan's critical path.")
        ]
        | None
    ) = None
    trigger: (
        Annotated[
            TriggerRule,
            Meta(
                description="When the node runs, given how its dependencies ended (success, "
                "failed with on_failure continue, skipped). Default: all_success with one "
                "dependency, none_failed_min_one_success with several. Dependencies that "
                "did not succeed read as null."
            ),
        ]
        | None
    ) = None

    # Extra JSON Schema keywords for this class's entry in the published schema, for
    # rules `__post_init__` checks that the field types cannot say.
    json_schema_extra: ClassVar[dict[str, Any]] = {}

    @property
    def kind(self) -> str:
        """The node's kind: its class's tag."""
        return str(type(self).__struct_config__.tag)

    def effective_trigger(self) -> TriggerRule:
        return self.trigger if self.trigger is not None else default_trigger(len(self.depends_on))

    def effective_on_failure(self, options: Options) -> OnFailure:
        return self.on_failure if self.on_failure is not None else options.on_failure


class UnreadNode(NodeDef, frozen=True):
    """A node that could not be decoded (its problems are reported): kept with its id,
    kind and dependencies so the graph checks still see it; never compiled or run."""

    raw_kind: str = ""

    @property
    def kind(self) -> str:
        return self.raw_kind


class WorkflowDef(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A whole definition, as submitted. After parsing, `nodes` keeps submission order,
    `edges` are folded into each target's `depends_on` (and emptied)."""

    nodes: Annotated[tuple[NodeDef, ...], Meta(min_length=1)]
    name: Annotated[str, Meta(min_length=1, max_length=200)] = DEFAULT_NAME
    description: Description | None = None
    inputs: Annotated[
        Mapping[str, Any],
        Meta(
            description="Default inputs; the request's inputs override them. Templates "
            "read them as {{ inputs.<name> }}."
        ),
    ] = msgspec.field(default_factory=dict)
    options: Options = Options()
    edges: tuple[Edge, ...] = ()
    output: (
        Annotated[
            Any,
            Meta(
                description="A template (any JSON, {{ path }} strings resolved) rendered "
                "into the result; missing values become null. Default: {sink node id: "
                "its output}."
            ),
        ]
        | None
    ) = None


@functools.cache
def definition_type(node_types: tuple[type[NodeDef], ...]) -> type[WorkflowDef]:
    """The WorkflowDef subclass whose nodes decode as one of `node_types` (by `kind`)."""
    node: Any = Union[node_types]  # noqa: UP007 - a union built at run time
    model = msgspec.defstruct(
        "WorkflowDefinition",
        [("nodes", Annotated[tuple[node, ...], Meta(min_length=1)])],
        bases=(WorkflowDef,),
        module=__name__,
        frozen=True,
        forbid_unknown_fields=True,
        kw_only=True,
    )
    assert issubclass(model, WorkflowDef)
    return model
