"""What the routes need, built once per application and kept under one typed AppKey."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from agents.client import AgentClient
from circuit.sharing import BreakerSync
from orchestrator.api.requests import QueryRequest
from orchestrator.dag.kinds import NodeKindRegistry
from orchestrator.dag.runner import BuiltinFallback
from orchestrator.dag.validate import CompiledWorkflow, compile_workflow
from orchestrator.engine import WorkflowOrchestrator
from orchestrator.schedules import Scheduler
from orchestrator.settings import Settings


@dataclass(slots=True)
class Services:
    settings: Settings
    orchestrator: WorkflowOrchestrator
    client: AgentClient
    kinds: NodeKindRegistry
    builtins: Mapping[str, BuiltinFallback]
    chain: CompiledWorkflow
    # The deployment's view of the breakers and the ops actions on them.
    breakers: BreakerSync
    scheduler: Scheduler

    def prepare(
        self, req: QueryRequest, *, agents: Collection[str] | None = None
    ) -> tuple[CompiledWorkflow, dict[str, Any]]:
        """The workflow a query request runs (its DAG, or the chain) and its inputs.

        `agents` narrows the registry for a DAG (see `compile`); the chain is returned
        as is: check it with `disallowed_agents`.
        """
        if req.workflow is None:
            return self.chain, {"query": req.query}
        workflow = self.compile(req.workflow, agents=agents)
        inputs = dict(workflow.definition.inputs)
        if req.query is not None:
            inputs["query"] = req.query
        return workflow, inputs

    @staticmethod
    def disallowed_agents(
        workflow: CompiledWorkflow, agents: Collection[str] | None
    ) -> list[str]:
        """The agents `workflow` calls that are not in `agents` (None: every one allowed)."""
        if agents is None:
            return []
        needed = frozenset().union(*(node.compiled.agents for node in workflow.nodes.values()))
        return sorted(needed - frozenset(agents))

    def compile(self, raw: Any, *, agents: Collection[str] | None = None) -> CompiledWorkflow:
        """Parse and validate a client's definition against this service's agents and kinds.

        `agents` narrows the registry (a tenant restricted to some agents); an agent
        outside it is reported like an unknown one.
        """
        registered = list(self.client.registry)
        return compile_workflow(
            raw,
            agents=registered if agents is None else [a for a in registered if a in agents],
            kinds=self.kinds,
            builtins=list(self.builtins),
            max_nodes=self.settings.max_nodes,
        )


SERVICES: web.AppKey[Services] = web.AppKey("services", Services)
