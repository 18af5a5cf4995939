"""A run started while its accept is in flight (`overlap_accept`, the service on Redis).

The accept is a round trip to the store; the run's set-up overlaps it. These tests
hold the accept open (or make it fail) on a memory store and check that the run is
gated, not started: no agent is called and nothing reaches the store until the
accept is taken, and a refused accept leaves no trace at all, as without the overlap.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest

from agents.client import AgentClient
from agents.registry import AgentRegistry
from agents.transport_httpx import HttpxTransport
from orchestrator.builtins import BUILTIN_FALLBACKS
from orchestrator.dag.compiler import CompiledWorkflow
from orchestrator.dag.engine import DagEngine
from orchestrator.dag.kinds import default_kinds
from orchestrator.lifecycle import WorkflowOrchestrator
from state.memory import MemoryStateStore
from state.models import WorkflowState, WorkflowStatus
from state.store import StateStoreError
from tests.chain_fixtures import compiled_chain, mock_agent_registry
from tests.fakes import settle

ANSWERS: dict[str, Any] = {
    "nlp": {"intent": {"metric": "revenue", "group_by": ["region"]}},
    "data": {"columns": ["region"], "rows": [{"region": "EMEA"}]},
    "viz": {"spec": {"mark": "bar"}},
}


class HeldAccept(MemoryStateStore):
    """The memory store, whose accept waits for `release` and then takes the workflow,
    or fails like an unreachable Redis when `refuse` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.refuse = False
        self.arrived = asyncio.Event()
        self.saves = 0
        self.appends = 0

    async def accept(self, state: WorkflowState, *, lease_s: float | None = None) -> int | None:
        self.arrived.set()
        await self.release.wait()
        if self.refuse:
            raise StateStoreError("store down", backend="memory", operation="accept")
        return await super().accept(state, lease_s=lease_s)

    async def save(self, state: WorkflowState, *, token: int | None = None) -> bool:
        self.saves += 1
        return await super().save(state, token=token)

    async def append_events(self, workflow_id: str, events: Any) -> int:
        self.appends += 1
        return await super().append_events(workflow_id, events)


@pytest.fixture
def calls() -> Counter[str]:
    return Counter()


@pytest.fixture
async def http(calls: Counter[str]) -> AsyncIterator[httpx.AsyncClient]:
    async def agent(request: httpx.Request) -> httpx.Response:
        name = request.url.host.split(".")[0]
        calls[name] += 1
        body = orjson.dumps({"status": "success", "data": ANSWERS[name]})
        return httpx.Response(200, content=body)

    async with httpx.AsyncClient(transport=httpx.MockTransport(agent)) as client:
        yield client


@pytest.fixture
def registry() -> AgentRegistry:
    return mock_agent_registry()


@pytest.fixture
def chain(registry: AgentRegistry) -> CompiledWorkflow:
    return compiled_chain(registry)


@pytest.fixture
async def store() -> AsyncIterator[HeldAccept]:
    held = HeldAccept()
    yield held
    held.release.set()
    await held.close()


@pytest.fixture
async def orchestrator(
    http: httpx.AsyncClient, registry: AgentRegistry, store: HeldAccept
) -> AsyncIterator[WorkflowOrchestrator]:
    engine = WorkflowOrchestrator(
        store=store,
        dag_engine=DagEngine(
            agents=AgentClient(registry, HttpxTransport(http)),
            registry=registry,
            kinds=default_kinds(),
            builtins=BUILTIN_FALLBACKS,
        ),
        leases=store.leases(),
        lease_s=30.0,
        overlap_accept=True,
    )
    await engine.start()
    yield engine
    await engine.close()


def _started(engine: WorkflowOrchestrator) -> float:
    return sum(sample.value for sample in engine.metrics.started.collect()[0].samples
               if sample.name.endswith("_total"))


async def test_the_run_is_prepared_during_its_accept_but_gated_until_it_is_taken(
    orchestrator: WorkflowOrchestrator,
    store: HeldAccept,
    chain: CompiledWorkflow,
    calls: Counter[str],
) -> None:
    """While the accept is in flight the run has started (its set-up is done: it is
    running in memory) but no agent was called and nothing was written; once the store
    takes it, it runs to the end as any workflow does."""
    submitting = asyncio.create_task(orchestrator.submit(chain, {"query": "revenue by region"}))
    await store.arrived.wait()
    await settle()
    (workflow_id,) = orchestrator.running
    assert orchestrator.running[workflow_id].status is WorkflowStatus.RUNNING  # set up already
    assert not submitting.done()
    assert calls == Counter()
    assert (store.saves, store.appends) == (0, 0)
    assert await store.get(workflow_id) is None
    assert _started(orchestrator) == 0

    store.release.set()
    state = await submitting
    done = await orchestrator.wait(state.workflow_id)
    assert done.status is WorkflowStatus.COMPLETED
    assert calls == Counter({"nlp": 1, "data": 1, "viz": 1})
    stored = await store.get(workflow_id)
    assert stored is not None and stored.status is WorkflowStatus.COMPLETED
    assert _started(orchestrator) == 1
    await settle()
    logged = await store.events_since(workflow_id)
    assert logged[-1][1]["type"] == "workflow.completed"


@pytest.mark.parametrize("write_delay_s", [0.0, 0.005])
async def test_a_refused_accept_leaves_no_trace(
    http: httpx.AsyncClient,
    registry: AgentRegistry,
    store: HeldAccept,
    chain: CompiledWorkflow,
    calls: Counter[str],
    write_delay_s: float,
) -> None:
    """The caller gets the accept's error; the run, whose transitions were already queued
    for writing, stops before its first node: no agent call, no document, no event, no
    lease, not counted as started, not running."""
    engine = WorkflowOrchestrator(
        store=store,
        dag_engine=DagEngine(
            agents=AgentClient(registry, HttpxTransport(http)),
            registry=registry,
            kinds=default_kinds(),
            builtins=BUILTIN_FALLBACKS,
        ),
        leases=store.leases(),
        lease_s=30.0,
        overlap_accept=True,
        write_delay_s=write_delay_s,
    )
    await engine.start()
    try:
        store.refuse = True
        submitting = asyncio.create_task(engine.submit(chain, {"query": "revenue by region"}))
        await store.arrived.wait()
        await settle()
        (workflow_id,) = engine.running
        (run,) = [t for t in asyncio.all_tasks() if t.get_name() == f"workflow-{workflow_id}"]
        await asyncio.sleep(write_delay_s * 2)  # the queued writes are due meanwhile
        store.release.set()
        with pytest.raises(StateStoreError):
            await submitting
        await asyncio.wait([run])
        assert engine.running == {}
        await asyncio.sleep(write_delay_s * 2)
        await settle()
        assert calls == Counter()
        assert (store.saves, store.appends) == (0, 0)
        assert await store.get(workflow_id) is None
        assert await store.events_since(workflow_id) == []
        assert await store.leases().orphans(lease_s=0.0) == []
        assert _started(engine) == 0
    finally:
        await engine.close()


async def test_a_caller_that_stops_waiting_leaves_the_accepted_run_running(
    orchestrator: WorkflowOrchestrator,
    store: HeldAccept,
    chain: CompiledWorkflow,
    calls: Counter[str],
) -> None:
    """A submit cancelled while its accept is in flight (a client that hung up): the
    accept still lands, and the workflow it accepted runs to the end."""
    submitting = asyncio.create_task(orchestrator.submit(chain, {"query": "revenue by region"}))
    await store.arrived.wait()
    await settle()
    (workflow_id,) = orchestrator.running
    submitting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await submitting
    store.release.set()
    done = await orchestrator.wait(workflow_id)
    assert done.status is WorkflowStatus.COMPLETED
    assert calls == Counter({"nlp": 1, "data": 1, "viz": 1})
    stored = await store.get(workflow_id)
    assert stored is not None and stored.status is WorkflowStatus.COMPLETED
