"""With Redis, a workflow waits on the store only where correctness needs it (issue 11).

Accepting it (lease claim, first document, history entry) is one
round trip; transitions are written behind; the terminal write is one round trip.
Agents are instant fakes (httpx MockTransport), the store a real Redis.
"""

from __future__ import annotations

import asyncio
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
from orchestrator.state_writer import StateWriter
from orchestrator.write_behind import WriteBehind
from state.models import WorkflowState, WorkflowStatus
from state.redis import RedisStateStore
from tests.chain_fixtures import compiled_chain, mock_agent_registry
from tests.redis_scripts import load_scripts

pytestmark = pytest.mark.redis

ANSWERS: dict[str, Any] = {
    "nlp": {"intent": {"metric": "revenue", "group_by": ["region"]}},
    "data": {"columns": ["region"], "rows": [{"region": "EMEA"}]},
    "viz": {"spec": {"mark": "bar"}},
}


def agent(request: httpx.Request) -> httpx.Response:
    name = request.url.host.split(".")[0]
    return httpx.Response(200, content=orjson.dumps({"status": "success", "data": ANSWERS[name]}))


@pytest.fixture
def registry() -> AgentRegistry:
    return mock_agent_registry()


@pytest.fixture
def chain(registry: AgentRegistry) -> CompiledWorkflow:
    return compiled_chain(registry)


@pytest.fixture
async def store(redis_url: str, redis_prefix: str) -> AsyncIterator[RedisStateStore]:
    store = RedisStateStore.from_url(redis_url, prefix=redis_prefix)
    yield store
    await store.close()


async def orchestrator_on(
    store: RedisStateStore, registry: AgentRegistry, http: httpx.AsyncClient, *, delay_s: float
) -> WorkflowOrchestrator:
    engine = DagEngine(
        agents=AgentClient(registry, HttpxTransport(http)),
        registry=registry,
        kinds=default_kinds(),
        builtins=BUILTIN_FALLBACKS,
    )
    orchestrator = WorkflowOrchestrator(
        store=store, dag_engine=engine, leases=store.leases(), write_delay_s=delay_s
    )
    await orchestrator.start()
    return orchestrator


async def test_accepting_a_workflow_waits_on_one_round_trip(
    store: RedisStateStore, registry: AgentRegistry, chain: CompiledWorkflow
) -> None:
    """submit() returns after one round trip: claim, document and index together (an id made
    at submit has no cancel flag to read)."""
    async with httpx.AsyncClient(transport=httpx.MockTransport(agent)) as http:
        orchestrator = await orchestrator_on(store, registry, http, delay_s=0.005)
        try:
            await load_scripts(store.client)
            before = store.round_trips
            state = await orchestrator.submit(chain, {"query": "revenue by region"})
            assert store.round_trips - before == 1
            done = await orchestrator.wait(state.workflow_id)
            assert done.status is WorkflowStatus.COMPLETED
        finally:
            await orchestrator.close()
    stored = await store.get(state.workflow_id)
    assert stored is not None and stored.status is WorkflowStatus.COMPLETED


async def test_a_run_within_the_write_delay_is_written_at_accept_and_end_only(
    store: RedisStateStore, registry: AgentRegistry, chain: CompiledWorkflow
) -> None:
    """Transitions are written behind: a chain that ends within the delay costs two
    document writes, and the terminal one is not held back by the delay (wait returns
    with the stored document terminal)."""
    async with httpx.AsyncClient(transport=httpx.MockTransport(agent)) as http:
        # A delay no test run reaches: only the terminal flush can write before it.
        orchestrator = await orchestrator_on(store, registry, http, delay_s=3600.0)
        try:
            saves = store.write_stats.saves
            state = await orchestrator.submit(chain, {"query": "revenue by region"})
            done = await orchestrator.wait(state.workflow_id)
            assert done.status is WorkflowStatus.COMPLETED
            assert store.write_stats.saves - saves == 2
            stored = await store.get(state.workflow_id)
            assert stored is not None and stored.status is WorkflowStatus.COMPLETED
            assert set(stored.steps) == {"nlp", "data", "viz"}
        finally:
            await orchestrator.close()


@pytest.mark.parametrize(("count", "round_trips"), [(20, 1), (300, 2)])
async def test_running_writes_due_together_share_one_round_trip(
    store: RedisStateStore, count: int, round_trips: int
) -> None:
    """Many workflows' transitions written behind at once reach Redis in one exchange, not
    one each (up to 256 of them: the rest in the next): under load the flusher keeps up,
    so status on any replica trails each workflow by about the delay."""
    await load_scripts(store.client)
    states = [
        WorkflowState(workflow_id=f"w{n}", definition_name="chain", inputs={})
        for n in range(count)
    ]
    for state in states:
        await store.accept(state)
    flusher, written, all_written = WriteBehind(), [], asyncio.Event()

    async def save(state: WorkflowState) -> bool:
        saved = await store.save(state)
        written.append(state.workflow_id)
        if len(written) == len(states):
            all_written.set()
        return saved

    writers = [StateWriter(save, state, flusher=flusher) for state in states]
    saves, trips = store.write_stats.saves, store.round_trips
    for state, writer in zip(states, writers, strict=True):
        state.status = WorkflowStatus.RUNNING
        writer.mark_dirty()  # all due at once (no delay)
    async with asyncio.timeout(10):  # a hang guard, not a timing claim
        await all_written.wait()
    assert store.write_stats.saves - saves == count
    assert store.round_trips - trips == round_trips
    for state in states:
        stored = await store.get(state.workflow_id)
        assert stored is not None and stored.status is WorkflowStatus.RUNNING
