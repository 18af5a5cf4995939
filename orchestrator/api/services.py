"""What the routes need, built once per application and kept under one typed AppKey."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from agents.client import AgentClient
from orchestrator.dag.cache import CompileCache
from orchestrator.dag.kinds import NodeKindRegistry
from orchestrator.dag.runner import BuiltinFallback
from orchestrator.dag.validate import CompiledWorkflow, compile_workflow
from orchestrator.engine import WorkflowOrchestrator
from orchestrator.settings import Settings


@dataclass(slots=True)
class Services:
    settings: Settings
    orchestrator: WorkflowOrchestrator
    client: AgentClient
    kinds: NodeKindRegistry
    builtins: Mapping[str, BuiltinFallback]
    chain: CompiledWorkflow
    compiled: CompileCache = field(init=False)

    def __post_init__(self) -> None:
        self.compiled = CompileCache(self._compile)

    def compile(self, raw: Any) -> CompiledWorkflow:
        """Parse and validate a client's definition against this service's agents and kinds.

        The same definition is compiled once (orchestrator/dag/cache.py).
        """
        return self.compiled.get(raw)

    def _compile(self, raw: Any) -> CompiledWorkflow:
        return compile_workflow(
            raw,
            agents=list(self.client.registry),
            kinds=self.kinds,
            builtins=list(self.builtins),
            max_nodes=self.settings.max_nodes,
        )


SERVICES: web.AppKey[Services] = web.AppKey("services", Services)
