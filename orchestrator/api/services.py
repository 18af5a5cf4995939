"""What the routes need, built once per application and kept under one typed AppKey."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from agents.client import AgentClient
from circuit.sharing import BreakerSync
from orchestrator.dag.kinds import NodeKindRegistry
from orchestrator.dag.runner import BuiltinFallback
from orchestrator.dag.validate import CompiledWorkflow, compile_workflow
from orchestrator.engine import WorkflowOrchestrator
from orchestrator.metrics import WorkflowMetrics
from orchestrator.settings import Settings
from state.models import WorkflowState


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
    metrics: WorkflowMetrics
    # A stored workflow's compiled definition (the chain by name, a client's DAG from its
    # stored definition).
    resolve: Callable[[WorkflowState], CompiledWorkflow]
    # Whether traces are on (an incoming traceparent is then honoured).
    tracing: bool = False

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
