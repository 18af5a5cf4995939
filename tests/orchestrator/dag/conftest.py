"""Fakes and factories for the DAG engine tests: a scripted AgentCaller, registries,
and a helper that runs a definition and keeps every recorded transition."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from agents.errors import AgentError
from agents.registry import AgentRegistry, AgentSpec
from circuit.config import RetryConfig
from orchestrator.dag.compiler import CompiledWorkflow, compile_workflow
from orchestrator.dag.engine import BuiltinFallback, DagEngine
from state.models import WorkflowState

AGENTS = ("nlp", "data", "viz", "a", "b", "c", "slow", "fast", "backup")


@dataclass(frozen=True)
class Result:
    data: dict[str, Any]
    attempts: int = 1


@dataclass
class Call:
    agent: str
    payload: dict[str, Any]
    node_id: str
    workflow_id: str
    retry: RetryConfig | None
    timeout_s: float | None
    deadline: float | None


Behaviour = dict[str, Any] | AgentError | Callable[[Mapping[str, Any]], Any]


@dataclass
class FakeAgents:
    """An AgentCaller whose answers are scripted per step id (or per agent).

    A behaviour is a dict (returned as data), an AgentError (raised), or a function of
    the payload (its result returned, or raised if it is an exception). `gate(step)`
    makes that step's call wait for an Event; `started[step]` is set as a call begins.
    Other calls give the loop one turn, as a call over the network would, except the
    steps in `never_wait` (they answer without waiting, like an instant in-process
    agent). Unscripted calls echo: {"echo": payload, "agent": name}.
    """

    behaviours: dict[str, Behaviour] = field(default_factory=dict)
    gates: dict[str, asyncio.Event] = field(default_factory=dict)
    started: dict[str, asyncio.Event] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    order: list[str] = field(default_factory=list)
    in_flight: int = 0
    peak: int = 0
    cancelled: list[str] = field(default_factory=list)
    attempts: dict[str, int] = field(default_factory=dict)
    never_wait: set[str] = field(default_factory=set)

    def gate(self, node: str) -> asyncio.Event:
        return self.gates.setdefault(node, asyncio.Event())

    def started_event(self, node: str) -> asyncio.Event:
        return self.started.setdefault(node, asyncio.Event())

    async def call(
        self,
        agent: str,
        payload: Mapping[str, Any],
        *,
        workflow_id: str,
        node_id: str,
        retry: RetryConfig | None = None,
        timeout_s: float | None = None,
        deadline: float | None = None,
    ) -> Result:
        self.calls.append(
            Call(agent, dict(payload), node_id, workflow_id, retry, timeout_s, deadline)
        )
        self.order.append(node_id)
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        self.started_event(node_id).set()
        try:
            if node_id in self.gates:
                await self.gates[node_id].wait()
            elif node_id not in self.never_wait:
                await asyncio.sleep(0)
            behaviour = self.behaviours.get(f"{node_id}@{agent}")
            if behaviour is None:
                behaviour = self.behaviours.get(node_id, self.behaviours.get(agent))
            attempts = self.attempts.get(node_id, 1)
            if behaviour is None:
                return Result({"echo": dict(payload), "agent": agent}, attempts)
            if isinstance(behaviour, AgentError):
                raise behaviour
            if callable(behaviour):
                value = behaviour(payload)
                if isinstance(value, BaseException):
                    raise value
                return Result(value, attempts)
            return Result(dict(behaviour), attempts)
        except asyncio.CancelledError:
            self.cancelled.append(node_id)
            raise
        finally:
            self.in_flight -= 1


@pytest.fixture
def registry() -> AgentRegistry:
    return AgentRegistry(
        [
            AgentSpec(
                name=name,
                url=f"http://127.0.0.1:1/{name}",
                retry=RetryConfig(max_attempts=3, base_delay_s=1.0, max_delay_s=30.0),
            )
            for name in AGENTS
        ]
    )


@pytest.fixture
def fake() -> FakeAgents:
    return FakeAgents()


_ids = itertools.count(1)


def compile_def(raw: Any, *, builtins: Iterable[str] = ()) -> CompiledWorkflow:
    return compile_workflow(raw, agents=set(AGENTS), builtins=set(builtins))


@dataclass
class Run:
    """A finished (or interrupted) run: the final state and every transition seen."""

    state: WorkflowState
    snapshots: list[dict[str, Any]]

    def node(self, node_id: str) -> Any:
        return self.state.steps[node_id]

    def statuses(self) -> dict[str, str]:
        return {k: s.status.value for k, s in self.state.steps.items()}


def new_state(name: str = "wf", inputs: dict[str, Any] | None = None) -> WorkflowState:
    return WorkflowState(
        workflow_id=f"wf-{next(_ids)}", definition_name=name, inputs=dict(inputs or {})
    )


class Harness:
    def __init__(self, fake: FakeAgents, registry: AgentRegistry) -> None:
        self.fake = fake
        self.registry = registry

    def runner(self, builtins: Mapping[str, BuiltinFallback] | None = None) -> DagEngine:
        return DagEngine(agents=self.fake, registry=self.registry, builtins=builtins)

    async def run(
        self,
        raw: Any,
        *,
        inputs: dict[str, Any] | None = None,
        builtins: Mapping[str, BuiltinFallback] | None = None,
        state: WorkflowState | None = None,
    ) -> Run:
        compiled = compile_def(raw, builtins=builtins or {})
        state = state or new_state(compiled.name, inputs)
        snapshots: list[dict[str, Any]] = []

        async def on_transition(s: WorkflowState) -> None:
            snapshots.append(s.to_dict())

        await self.runner(builtins).run(compiled, state, on_transition=on_transition)
        return Run(state, snapshots)

    def start(
        self,
        raw: Any,
        *,
        builtins: Mapping[str, BuiltinFallback] | None = None,
    ) -> tuple[asyncio.Task[None], Run]:
        compiled = compile_def(raw, builtins=builtins or {})
        state = new_state(compiled.name)
        run = Run(state, [])

        async def on_transition(s: WorkflowState) -> None:
            run.snapshots.append(s.to_dict())

        task = asyncio.create_task(
            self.runner(builtins).run(compiled, state, on_transition=on_transition)
        )
        return task, run


@pytest.fixture
def harness(fake: FakeAgents, registry: AgentRegistry) -> Harness:
    return Harness(fake, registry)


def agent(node_id: str, agent_name: str | None = None, **extra: Any) -> dict[str, Any]:
    """An agent node dict: agent defaults to the node id if it is a known agent, else 'a'."""
    name = agent_name or (node_id if node_id in AGENTS else "a")
    return {"id": node_id, "kind": "agent", "agent": name, **extra}
