"""`agent`: a call to a registered agent (by name, never by URL) through the resilience stack."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, cast

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from orchestrator.dag.budget import NeedsOffload
from orchestrator.dag.errors import NodeError
from orchestrator.dag.kinds.base import BaseKind, Compiled, NodeContext, ProblemCollector
from orchestrator.dag.model import Name, NodeDef, TemplateValue
from orchestrator.dag.paths import json_type, with_article
from orchestrator.dag.templates import Template, TemplateError, compile_template


class RetryOverride(Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """The RetryConfig fields a node may override; the rest stay the agent's."""

    max_attempts: Annotated[int, Meta(ge=1, le=10)] | UnsetType = UNSET
    base_delay_s: Annotated[float, Meta(ge=0, le=60)] | UnsetType = UNSET
    max_delay_s: Annotated[float, Meta(ge=0, le=300)] | UnsetType = UNSET

    json_schema_extra: ClassVar[dict[str, Any]] = {"minProperties": 1}

    def __post_init__(self) -> None:
        if not self.overrides():
            raise ValueError("'retry' sets none of max_attempts, base_delay_s, max_delay_s")

    def overrides(self) -> dict[str, Any]:
        """The fields given, by name."""
        given: dict[str, Any] = msgspec.to_builtins(self)
        return given


class AgentNode(NodeDef, tag="agent", frozen=True):
    """A call to a registered agent (never a URL) through the resilience stack."""

    agent: Name
    input: Annotated[TemplateValue, Meta(description="The agent's input; default {}.")] = None
    retry: RetryOverride | None = None


# No `input`: the agent gets {}. Compiled once; templates are immutable.
_NO_INPUT = compile_template({})


@functools.lru_cache(maxsize=1024)
def _agent_set(agent: str) -> frozenset[str]:
    return frozenset((agent,))


@dataclass(frozen=True, slots=True)
class AgentParams(Compiled):
    agent: str = ""
    input: Template | None = None
    retry: Mapping[str, Any] | None = None


@functools.lru_cache(maxsize=1024)
def _plain_params(agent: str) -> AgentParams:
    return AgentParams(agents=_agent_set(agent), agent=agent, input=_NO_INPUT)


class AgentKind(BaseKind):
    """`{"kind": "agent", "agent": name, "input": template, "retry": {...}}`.

    The input renders to the object sent as the agent's `input`; the agent's `data`
    is the node's output. `retry` fields replace the agent's own retry policy fields
    for this node; the node's `timeout_s` bounds the whole call, retries included.
    """

    name = "agent"
    node_type = AgentNode

    def compile(self, node: NodeDef) -> AgentParams:
        typed = cast(AgentNode, node)
        agent, raw_input, retry = typed.agent, typed.input, typed.retry
        if raw_input is None and retry is None:
            # No input, no retry override: the same (immutable) params for every such
            # node calling this agent.
            return _plain_params(agent)
        template = _NO_INPUT
        if raw_input is not None:
            try:
                template = compile_template(raw_input)
            except TemplateError:
                collect = ProblemCollector(node)
                collect.template(raw_input, "input")
                collect.raise_if_any()
        # Positional: (references, agents, agent, input, retry), as declared.
        return AgentParams(
            template.references,
            _agent_set(agent),
            agent,
            template,
            retry.overrides() if retry is not None else None,
        )

    def run(self, node: NodeDef, ctx: NodeContext) -> Awaitable[Any]:
        # A plain function handing back the agent call's coroutine: the input renders
        # inline (NodeContext.inline) almost always, and a coroutine of this kind's own
        # around the call would be one more frame built and unwound per node.
        params = ctx.compiled
        assert isinstance(params, AgentParams)  # compile() made it (no typing.cast call)
        ctx.agent = agent = params.agent
        template = params.input
        assert template is not None
        try:
            payload = ctx.inline(functools.partial(ctx.render, template))
        except NeedsOffload:
            return self.offloaded(node, ctx, params)
        if type(payload) is dict:
            # The common case (`call`'s check, passed): what the template rendered.
            ctx.input = payload
            return ctx.call_agent(agent, payload, retry=params.retry)
        return self.call(node, ctx, params, payload)

    async def offloaded(self, node: NodeDef, ctx: NodeContext, params: AgentParams) -> Any:
        """The input too big to render inline: rendered off the loop (ctx.compute)."""
        template = params.input
        assert template is not None
        payload = await ctx.compute(functools.partial(ctx.render, template))
        return await self.call(node, ctx, params, payload)

    def call(
        self, node: NodeDef, ctx: NodeContext, params: AgentParams, payload: Any
    ) -> Awaitable[Any]:
        ctx.input = payload
        if not isinstance(payload, Mapping):
            raise NodeError(
                f"node {node.id!r}: input must render to an object, not "
                f"{with_article(json_type(payload))}",
                code="invalid_input",
                node_id=node.id,
                agent=params.agent,
            )
        # The node's timeout_s bounds the whole call, retries included: it reaches the
        # client as the deadline (NodeContext.deadline); each attempt keeps the agent's
        # own timeouts.
        return ctx.call_agent(params.agent, payload, retry=params.retry)
