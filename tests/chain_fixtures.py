"""The built-in chain over mock agents (`http://<name>.agent.test`, answered by an
httpx.MockTransport in each test module): the registry and compiled chain that the
lifecycle and Redis latency-path tests build their orchestrators from."""

from __future__ import annotations

import dataclasses

from agents.registry import AgentRegistry
from orchestrator.builtins import BUILTIN_FALLBACKS
from orchestrator.chain import CHAIN_DEFINITION
from orchestrator.dag.compiler import CompiledWorkflow, compile_workflow
from orchestrator.dag.kinds import default_kinds
from orchestrator.settings import default_registry


def mock_agent_registry() -> AgentRegistry:
    """The default agents, each at `http://<name>.agent.test`."""
    return AgentRegistry(
        [
            dataclasses.replace(spec, url=f"http://{spec.name}.agent.test")
            for spec in default_registry().values()
        ]
    )


def compiled_chain(registry: AgentRegistry) -> CompiledWorkflow:
    return compile_workflow(
        CHAIN_DEFINITION,
        agents=list(registry),
        kinds=default_kinds(),
        builtins=list(BUILTIN_FALLBACKS),
    )
