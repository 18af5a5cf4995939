"""What the routes need, built once per application and kept under one typed AppKey."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from agents.client import AgentClient
from circuit.cap import CapTimer
from circuit.sharing import BreakerSync
from orchestrator.api.bodies import QueryRequest, ScheduleRequest
from orchestrator.api.errors import Unprocessable
from orchestrator.dag.budget import measure
from orchestrator.dag.cache import CompileCache
from orchestrator.dag.compiler import CompiledWorkflow, compile_workflow
from orchestrator.dag.engine import BuiltinFallback
from orchestrator.dag.kinds import NodeKindRegistry
from orchestrator.lifecycle import WorkflowOrchestrator
from orchestrator.metrics import WorkflowMetrics
from orchestrator.schedules import Scheduler
from orchestrator.settings import Settings
from state.models import WorkflowState

# Definitions up to this size (measure(): string characters plus items) are checked on
# the event loop: ~1 ms at most, cheaper than a thread hop.
_INLINE_DEFINITION_SIZE = 32 * 1024


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
    scheduler: Scheduler
    # Whether traces are on (an incoming traceparent is then honoured).
    tracing: bool = False
    compiled: CompileCache = field(init=False)
    # The limits of sync queries' waits, on one timer of the loop (circuit.cap): an
    # asyncio.timeout per request armed and cancelled a loop timer of its own each time.
    sync_waits: CapTimer = field(init=False, default_factory=CapTimer)

    def __post_init__(self) -> None:
        self.compiled = CompileCache(self._compile)

    async def prepare(
        self, req: QueryRequest | ScheduleRequest, *, agents: Collection[str] | None = None
    ) -> tuple[CompiledWorkflow, dict[str, Any]]:
        """The workflow a query request runs (its DAG, or the chain) and its inputs.

        `agents` narrows the registry for a DAG (see `compile`); the chain is returned
        as is: check it with `disallowed_agents`.
        """
        if req.workflow is None:
            return self.chain, {"query": req.query}
        workflow = await self.compile_off_loop(req.workflow, agents=agents)
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

    async def compile_off_loop(
        self, raw: Any, *, agents: Collection[str] | None = None
    ) -> CompiledWorkflow:
        """`compile`, in a worker thread when the definition is big, bounded in time.

        Checking a definition is CPU work linear in its size (up to max_nodes nodes and
        the body limit); a small one is checked at once, a big one off the event loop
        so other requests keep being answered, and one that takes longer than
        ORCH_COMPILE_TIMEOUT_S is refused (422 `definition_too_complex`).
        """
        if measure(raw, _INLINE_DEFINITION_SIZE) <= _INLINE_DEFINITION_SIZE:
            return self.compile(raw, agents=agents)
        work = asyncio.get_running_loop().run_in_executor(
            None, functools.partial(self.compile, raw, agents=agents)
        )
        try:
            async with asyncio.timeout(self.settings.compile_timeout_s):
                return await work
        except TimeoutError:
            raise Unprocessable(
                f"checking the definition took longer than {self.settings.compile_timeout_s:g} s",
                code="definition_too_complex",
                details={"timeout_s": self.settings.compile_timeout_s},
            ) from None

    def compile(self, raw: Any, *, agents: Collection[str] | None = None) -> CompiledWorkflow:
        """Parse and validate a client's definition against this service's agents and kinds.

        `agents` narrows the registry (a tenant restricted to some agents); an agent
        outside it is reported like an unknown one. The same definition with the same
        agents is compiled once (orchestrator/dag/cache.py).
        """
        allowed = None if agents is None else tuple(sorted(set(agents)))
        return self.compiled.get(raw, allowed)

    def _compile(self, raw: Any, agents: tuple[str, ...] | None) -> CompiledWorkflow:
        registered = list(self.client.registry)
        return compile_workflow(
            raw,
            agents=registered if agents is None else [a for a in registered if a in agents],
            kinds=self.kinds,
            builtins=list(self.builtins),
            max_nodes=self.settings.max_nodes,
        )


SERVICES: web.AppKey[Services] = web.AppKey("services", Services)
