"""The lifecycle on a store whose operations complete in their caller's turn (the memory
store: `completes_in_turn`) behaves as on one that suspends (any network store).

On an in-turn store the lifecycle awaits `accept` directly (no task carrying it through
a cancel of its caller) and yields no answer turns before a finished workflow's
housekeeping; on either, a workflow task whose body ran handles its own end (its done
callback only acts for a task cancelled before it first ran). Every test runs both ways:
the memory store as it is, and the same store declaring that it may suspend.
"""

from __future__ import annotations

import asyncio
import gc
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
from orchestrator.lifecycle import WorkflowOrchestrator, new_workflow_id
from state.history import HistoryQuery
from state.memory import MemoryStateStore
from state.models import WorkflowState, WorkflowStatus
from tests.chain_fixtures import compiled_chain, mock_agent_registry

ANSWERS: dict[str, Any] = {
    "nlp": {"intent": {"metric": "revenue", "group_by": ["region"]}},
    "data": {"columns": ["region"], "rows": [{"region": "EMEA"}]},
    "viz": {"spec": {"mark": "bar"}},
}
QUERY = {"query": "revenue by region"}


class SuspendingStore(MemoryStateStore):
    """The memory store, saying it may suspend: the lifecycle takes its general path
    (the accept in the workflow's own task, an answer turn before housekeeping)."""

    @property
    def completes_in_turn(self) -> bool:
        return False


class Gate:
    """Agents answer while `opened` is set (a test clears it to hold a node under way);
    `called` is set by every agent call."""

    def __init__(self) -> None:
        self.opened = asyncio.Event()
        self.opened.set()
        self.called = asyncio.Event()


@pytest.fixture
def gate() -> Gate:
    return Gate()


@pytest.fixture
async def http(gate: Gate) -> AsyncIterator[httpx.AsyncClient]:
    async def agent(request: httpx.Request) -> httpx.Response:
        gate.called.set()
        await gate.opened.wait()
        name = request.url.host.split(".")[0]
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


@pytest.fixture(
    params=[("in_turn", False), ("suspending", False), ("in_turn", True), ("suspending", True)],
    ids=["in_turn", "suspending", "in_turn-leases", "suspending-leases"],
)
async def engine(
    request: pytest.FixtureRequest, http: httpx.AsyncClient, registry: AgentRegistry
) -> AsyncIterator[tuple[WorkflowOrchestrator, MemoryStateStore]]:
    """A replica on either store, with leases (as the service runs) or without."""
    kind, leased = request.param
    store = MemoryStateStore() if kind == "in_turn" else SuspendingStore()
    assert store.completes_in_turn is (kind == "in_turn")
    runner = DagEngine(
        agents=AgentClient(registry, HttpxTransport(http)),
        registry=registry,
        kinds=default_kinds(),
        builtins=BUILTIN_FALLBACKS,
    )
    orchestrator = WorkflowOrchestrator(
        store=store, dag_engine=runner, leases=store.leases() if leased else None
    )
    await orchestrator.start()
    yield orchestrator, store
    await orchestrator.close()
    await store.close()


def _comparable(state: WorkflowState) -> dict[str, Any]:
    """The document without what differs between two runs (ids, clocks)."""
    doc = state.to_dict()
    for key in ("workflow_id", "owner", "created_at", "updated_at", "finished_at"):
        doc.pop(key, None)
    for step in doc["steps"].values():
        for key in ("started_at", "finished_at", "duration_ms", "latency_ms"):
            step.pop(key, None)
    return doc


async def _event_types(store: MemoryStateStore, workflow_id: str) -> list[str]:
    return [event["type"] for _, event in await store.events_since(workflow_id)]


async def test_a_waited_workflow_ends_with_the_same_document_events_and_metrics(
    engine: tuple[WorkflowOrchestrator, MemoryStateStore], chain: CompiledWorkflow
) -> None:
    """Submit, wait: the answer, the stored document, the event log and the metrics are
    those of the general path; the workflow leaves the running index."""
    orchestrator, store = engine
    state = await orchestrator.submit(chain, QUERY)
    assert state.status is WorkflowStatus.PENDING
    assert state.workflow_id in orchestrator.running
    done = await orchestrator.wait(state.workflow_id)
    assert done.status is WorkflowStatus.COMPLETED
    stored = await store.get(state.workflow_id)
    assert stored is not None
    assert _comparable(stored) == _comparable(done)
    assert set(done.steps) == {"nlp", "data", "viz"}
    await orchestrator.close()  # the housekeeping (last events) is done by now either way
    assert orchestrator.running == {}
    types = await _event_types(store, state.workflow_id)
    assert types[0] == "workflow.running" and types[-1] == "workflow.completed"
    assert types.count("step.completed") == 3
    snapshot = orchestrator.metrics.snapshot()["workflows"]
    assert snapshot["by_status"]["completed"] == 1
    # With leases, the finished workflow's lease was released: anyone may take it now.
    assert await store.leases().claim(state.workflow_id, "another", lease_s=30.0) is not None


async def test_an_idempotent_submit_with_a_standing_cancel_ends_cancelled_unrun(
    engine: tuple[WorkflowOrchestrator, MemoryStateStore], chain: CompiledWorkflow
) -> None:
    """A key's workflow id is named before its accept, so a cancel may stand already: its
    flag is read with the accept and the workflow ends cancelled, no step run."""
    orchestrator, store = engine
    workflow_id = new_workflow_id()
    await store.request_cancel(workflow_id)  # a client that learnt the key's id cancels it
    state = await orchestrator.submit(chain, QUERY, workflow_id=workflow_id, submit_key="key-1")
    done = await orchestrator.wait(state.workflow_id)
    assert done.status is WorkflowStatus.CANCELLED
    assert not done.steps
    stored = await store.get(state.workflow_id)
    assert stored is not None and stored.status is WorkflowStatus.CANCELLED


async def test_a_caller_cancelled_at_submit_leaves_no_workflow_unfinished(
    engine: tuple[WorkflowOrchestrator, MemoryStateStore], chain: CompiledWorkflow
) -> None:
    """A request handler cancelled (its client went away) while it submits: whatever the
    store took reaches a terminal state, nothing stays pending."""
    orchestrator, store = engine
    submitted: list[str] = []

    async def handler() -> None:
        state = await orchestrator.submit(chain, QUERY)
        submitted.append(state.workflow_id)
        await asyncio.Event().wait()  # the handler then waits for something else

    task = asyncio.create_task(handler())
    await asyncio.sleep(0)  # the handler has started its submit
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await orchestrator.close()  # every accepted workflow ends, its writes are made
    page = await store.history(HistoryQuery(limit=100))
    assert page.entries, "the accept was taken"
    for entry in page.entries:
        stored = await store.get(entry.workflow_id)
        assert stored is not None and stored.status.is_terminal, stored
    assert orchestrator.running == {}


async def test_a_task_cancelled_before_its_body_ran_is_written_cancelled(
    engine: tuple[WorkflowOrchestrator, MemoryStateStore], chain: CompiledWorkflow
) -> None:
    """The done callback kept for a task cancelled before it first ran still writes its
    end (the body that handles it otherwise never ran)."""
    orchestrator, store = engine
    state = await orchestrator.submit(chain, QUERY)
    done = await orchestrator.cancel(state.workflow_id)  # same turn: the body never ran
    assert done.status is WorkflowStatus.CANCELLED
    await orchestrator.close()
    stored = await store.get(state.workflow_id)
    assert stored is not None and stored.status is WorkflowStatus.CANCELLED
    assert orchestrator.running == {}
    assert orchestrator.metrics.snapshot()["workflows"]["by_status"]["cancelled"] == 1


async def test_a_workflow_cancelled_while_it_runs_ends_cancelled_and_leaves_the_index(
    engine: tuple[WorkflowOrchestrator, MemoryStateStore],
    chain: CompiledWorkflow,
    gate: Gate,
) -> None:
    """A cancel that reaches a body already running ends it in that body (no done
    callback needed): cancelled, written, off the running index."""
    orchestrator, store = engine
    gate.opened.clear()  # the first node's agent call stays under way
    state = await orchestrator.submit(chain, QUERY)
    await gate.called.wait()  # the body runs: its first node is under way
    done = await orchestrator.cancel(state.workflow_id)
    assert done.status is WorkflowStatus.CANCELLED
    await orchestrator.close()
    stored = await store.get(state.workflow_id)
    assert stored is not None and stored.status is WorkflowStatus.CANCELLED
    assert orchestrator.running == {}
    types = await _event_types(store, state.workflow_id)
    assert types[-1] == "workflow.cancelled"


async def test_a_finished_workflow_is_freed_by_reference_counting_alone(
    engine: tuple[WorkflowOrchestrator, MemoryStateStore], chain: CompiledWorkflow
) -> None:
    """Nothing of a finished workflow is left in a reference cycle: its state and steps go
    as soon as it ends, not at the collector's next pass (a cycle per workflow kept every
    finished one alive until then, and made each pass longer)."""
    orchestrator, _ = engine
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)  # what a pass finds unreachable is kept in gc.garbage
    try:
        for _ in range(5):
            state = await orchestrator.submit(chain, QUERY)
            await orchestrator.wait(state.workflow_id)
        await orchestrator.close()  # every workflow's housekeeping is done
        gc.collect()
        cycled = [o for o in gc.garbage if isinstance(o, WorkflowState)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert cycled == []
