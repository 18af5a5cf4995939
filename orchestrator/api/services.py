"""What the routes need, built once per application and kept under one typed AppKey."""

from __future__ import annotations

from collections.abc import Mapping
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

    def prepare(self, req: QueryRequest) -> tuple[CompiledWorkflow, dict[str, Any]]:
        """The workflow a query request runs (its DAG, or the chain) and its inputs."""
        if req.workflow is None:
            return self.chain, {"query": req.query}
        workflow = self.compile(req.workflow)
        inputs = dict(workflow.definition.inputs)
        if req.query is not None:
            inputs["query"] = req.query
        return workflow, inputs

    def compile(self, raw: Any) -> CompiledWorkflow:
        """Parse and validate a client's definition against this service's agents and kinds."""
        return compile_workflow(
            raw,
            agents=list(self.client.registry),
            kinds=self.kinds,
            builtins=list(self.builtins),
            max_nodes=self.settings.max_nodes,
        )


SERVICES: web.AppKey[Services] = web.AppKey("services", Services)
