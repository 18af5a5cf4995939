"""`agent`: a call to a registered agent (by name, never by URL) through the resilience stack."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from orchestrator.dag.errors import NodeError
from orchestrator.dag.kinds.base import BaseKind, Compiled, NodeContext, ProblemCollector
from orchestrator.dag.model import NodeDef
from orchestrator.dag.paths import json_type, with_article
from orchestrator.dag.schema import builtin_params_schema
from orchestrator.dag.templates import Template, TemplateError, compile_template

# The RetryConfig fields a node may override; the rest stay the agent's.
RETRY_OVERRIDES = frozenset({"max_attempts", "base_delay_s", "max_delay_s"})


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
    params_schema: Mapping[str, Any] = builtin_params_schema("agent")

    def compile(self, node: NodeDef) -> AgentParams:
        params = node.params
        agent = params.get("agent")
        raw_input = params.get("input")
        retry = params.get("retry")
        if raw_input is None and retry is None and type(agent) is str and agent:
            # No input, no retry override: the same (immutable) params for every such
            # node calling this agent.
            return _plain_params(agent)
        template: Template | None = _NO_INPUT
        if raw_input is not None:
            try:
                template = compile_template(raw_input)
            except TemplateError:
                template = None
        retry_ok = retry is None or (isinstance(retry, Mapping) and set(retry) <= RETRY_OVERRIDES)
        if template is None or not retry_ok or not isinstance(agent, str) or not agent:
            self._refuse(node)
        assert template is not None and isinstance(agent, str)
        # Positional: (references, agents, agent, input, retry), as declared.
        return AgentParams(
            template.references, _agent_set(agent), agent, template, dict(retry) if retry else None
        )

    @staticmethod
    def _refuse(node: NodeDef) -> None:
        """Collect every problem of the params and raise (the slow path, errors only)."""
        collect = ProblemCollector(node)
        params = node.params
        agent = params.get("agent")
        if not isinstance(agent, str) or not agent:
            collect.add("invalid_value", "'agent' must name a registered agent", "agent")
        if params.get("input") is not None:
            collect.template(params["input"], "input")
        retry = params.get("retry")
        if retry is not None and not (isinstance(retry, Mapping) and set(retry) <= RETRY_OVERRIDES):
            collect.add(
                "invalid_value",
                f"'retry' may only set {', '.join(sorted(RETRY_OVERRIDES))}",
                "retry",
            )
        collect.raise_if_any()

    async def run(self, node: NodeDef, ctx: NodeContext) -> Any:
        params = cast(AgentParams, ctx.compiled)
        assert params.input is not None
        ctx.agent = params.agent
        template = params.input
        payload = await ctx.compute(lambda: ctx.render(template))
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
