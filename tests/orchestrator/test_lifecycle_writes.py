"""How often and in what order the engine writes a workflow's document (chain over fake agents)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest

from agents.client import AgentClient
from agents.registry import AgentRegistry
from agents.transport_httpx import HttpxTransport
from orchestrator.builtins import BUILTIN_FALLBACKS
from orchestrator.chain import CHAIN_DEFINITION
from orchestrator.dag.compiler import CompiledWorkflow, compile_workflow
from orchestrator.dag.engine import DagEngine
from orchestrator.dag.kinds import default_kinds
from orchestrator.lifecycle import WorkflowOrchestrator
from orchestrator.settings import default_registry
from state.memory import MemoryStateStore
from state.models import WorkflowState, WorkflowStatus

ANSWERS: dict[str, Any] = {
    "nlp": {"intent": {"metric": "revenue", "group_by": ["region"]}},
    "data": {"columns": ["region"], "rows": [{"region": "EMEA"}]},
    "viz": {"spec": {"mark": "bar"}},
}


class RecordingStore(MemoryStateStore):
    """The memory store, recording the status of every document it is asked to save.

    A save yields to the event loop after storing, like a network store awaiting its
    reply, so transitions can happen while a write is in flight.

    With `all_cancelled`, every workflow's cancel flag reads as set, as when a cancel
    was requested before its task first ran.
    """

    def __init__(self, *, all_cancelled: bool = False) -> None:
        super().__init__()
        self.saved: list[WorkflowStatus] = []
        self.all_cancelled = all_cancelled

    async def save(self, state: WorkflowState, *, token: int | None = None) -> bool:
        self.saved.append(state.status)
        written = await super().save(state, token=token)
        await asyncio.sleep(0)
        return written

    async def cancel_requested(self, workflow_id: str) -> bool:
        return self.all_cancelled or await super().cancel_requested(workflow_id)


def agent(request: httpx.Request) -> httpx.Response:
    name = request.url.host.split(".")[0]
    return httpx.Response(200, content=orjson.dumps({"status": "success", "data": ANSWERS[name]}))


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.MockTransport(agent)) as client:
        yield client


@pytest.fixture
def registry() -> AgentRegistry:
    return AgentRegistry(
        [
            dataclasses.replace(spec, url=f"http://{spec.name}.agent.test")
            for spec in default_registry().values()
        ]
    )


@pytest.fixture
def chain(registry: AgentRegistry) -> CompiledWorkflow:
    return compile_workflow(
        CHAIN_DEFINITION,
        agents=list(registry),
        kinds=default_kinds(),
        builtins=list(BUILTIN_FALLBACKS),
    )


@pytest.fixture
def store(request: pytest.FixtureRequest) -> RecordingStore:
    return RecordingStore(all_cancelled=getattr(request, "param", False))


@pytest.fixture
async def engine(
    http: httpx.AsyncClient, registry: AgentRegistry, store: RecordingStore
) -> AsyncIterator[tuple[WorkflowOrchestrator, RecordingStore]]:
    runner = DagEngine(
        agents=AgentClient(registry, HttpxTransport(http)),
        registry=registry,
        kinds=default_kinds(),
        builtins=BUILTIN_FALLBACKS,
    )
    orchestrator = WorkflowOrchestrator(store=store, dag_engine=runner)
    await orchestrator.start()
    yield orchestrator, store
    await orchestrator.close()
    await store.close()


async def test_a_finished_workflow_is_written_terminal_exactly_once(
    engine: tuple[WorkflowOrchestrator, RecordingStore], chain: CompiledWorkflow
) -> None:
    """The terminal document is written once, last, and is what the store returns."""
    orchestrator, store = engine
    state = await orchestrator.submit(chain, {"query": "revenue by region"})
    done = await orchestrator.wait(state.workflow_id)
    assert done.status is WorkflowStatus.COMPLETED
    assert store.saved[0] is WorkflowStatus.PENDING
    assert [s for s in store.saved if s.is_terminal] == [WorkflowStatus.COMPLETED]
    assert store.saved[-1] is WorkflowStatus.COMPLETED
    stored = await store.get(state.workflow_id)
    assert stored is not None
    assert {**stored.to_dict(), "updated_at": None} == {**done.to_dict(), "updated_at": None}


@pytest.mark.parametrize("store", [True], indirect=True)
async def test_a_cancel_before_the_runner_starts_is_written_once(
    engine: tuple[WorkflowOrchestrator, RecordingStore], chain: CompiledWorkflow
) -> None:
    """A workflow whose cancel flag is set when it starts is written cancelled, once."""
    orchestrator, store = engine
    state = await orchestrator.submit(chain, {"query": "revenue by region"})
    done = await orchestrator.wait(state.workflow_id)
    assert done.status is WorkflowStatus.CANCELLED
    assert not done.steps  # the runner never started
    assert store.saved == [WorkflowStatus.PENDING, WorkflowStatus.CANCELLED]
    stored = await store.get(state.workflow_id)
    assert stored is not None and stored.status is WorkflowStatus.CANCELLED


async def test_a_cancel_in_the_same_turn_as_submit_still_ends_cancelled(
    engine: tuple[WorkflowOrchestrator, RecordingStore], chain: CompiledWorkflow
) -> None:
    """A task cancelled before its body ever ran still leaves a terminal document behind."""
    orchestrator, store = engine
    state = await orchestrator.submit(chain, {"query": "revenue by region"})
    # No suspension between: the memory store answers cancel's reads at once, so the task
    # is cancelled before its body ever runs.
    done = await orchestrator.cancel(state.workflow_id)
    assert done.status is WorkflowStatus.CANCELLED
    await orchestrator.close()  # waits for the owed write
    stored = await store.get(state.workflow_id)
    assert stored is not None and stored.status is WorkflowStatus.CANCELLED
    assert orchestrator.metrics.snapshot()["workflows"]["by_status"]["cancelled"] == 1
