"""`agent`: a call to a registered agent (by name, never by URL) through the resilience stack."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from orchestrator.dag.errors import NodeError
from orchestrator.dag.kinds.base import BaseKind, Compiled, NodeContext, ProblemCollector
from orchestrator.dag.model import NodeDef
from orchestrator.dag.paths import json_type, with_article
from orchestrator.dag.schema import builtin_params_schema
from orchestrator.dag.templates import Template

# The RetryConfig fields a node may override; the rest stay the agent's.
RETRY_OVERRIDES = frozenset({"max_attempts", "base_delay_s", "max_delay_s"})


@dataclass(frozen=True, slots=True)
class AgentParams(Compiled):
    agent: str = ""
    input: Template | None = None
    retry: Mapping[str, Any] | None = None


class AgentKind(BaseKind):
    """`{"kind": "agent", "agent": name, "input": template, "retry": {...}}`.

    The input renders to the object sent as the agent's `input`; the agent's `data`
    is the node's output. `retry` fields replace the agent's own retry policy fields
    for this node; the node's `timeout_s` bounds the whole call, retries included.
    """

    name = "agent"
    params_schema: Mapping[str, Any] = builtin_params_schema("agent")
    fan_in = False

    def compile(self, node: NodeDef) -> AgentParams:
        collect = ProblemCollector(node)
        agent = node.params.get("agent")
        if not isinstance(agent, str) or not agent:
            collect.add("invalid_value", "'agent' must name a registered agent", "agent")
        template = collect.template(node.params.get("input", {}), "input")
        retry = node.params.get("retry")
        if retry is not None and not (isinstance(retry, Mapping) and set(retry) <= RETRY_OVERRIDES):
            collect.add(
                "invalid_value",
                f"'retry' may only set {', '.join(sorted(RETRY_OVERRIDES))}",
                "retry",
            )
        collect.raise_if_any()
        assert template is not None and isinstance(agent, str)
        return AgentParams(
            references=template.references,
            agents=frozenset({agent}),
            agent=agent,
            input=template,
            retry=dict(retry) if retry else None,
        )

    async def run(self, node: NodeDef, ctx: NodeContext) -> Any:
        params = cast(AgentParams, ctx.compiled)
        assert params.input is not None
        ctx.agent = params.agent
        payload = ctx.render(params.input)
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
        return await ctx.call_agent(params.agent, payload, retry=params.retry)
