"""How often and in what order the engine writes a workflow's document (chain over fake agents)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Mapping, Sequence
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
from state.cancellations import WorkflowIdStream
from state.memory import MemoryStateStore
from state.models import WorkflowState, WorkflowStatus
from tests.chain_fixtures import compiled_chain, mock_agent_registry

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
        # The event types each terminal save carried, and how many appends came apart.
        self.carried: list[list[str]] = []
        # ... and the event types each running save carried.
        self.carried_running: list[list[str]] = []
        self.appends = 0
        self.all_cancelled = all_cancelled
        self.flag_reads = 0

    @property
    def completes_in_turn(self) -> bool:
        return False  # its saves yield to the loop

    async def save(
        self,
        state: WorkflowState,
        *,
        token: int | None = None,
        events: Sequence[Mapping[str, Any]] = (),
    ) -> bool:
        self.saved.append(state.status)
        carried = self.carried if state.status.is_terminal else self.carried_running
        carried.append([e["type"] for e in events])
        written = await super().save(state, token=token, events=events)
        await asyncio.sleep(0)
        return written

    async def accept(self, state: WorkflowState, *, lease_s: float | None = None) -> int | None:
        # The first document, written by the accept (which no longer goes through `save`).
        self.saved.append(state.status)
        token = await super().accept(state, lease_s=lease_s)
        await asyncio.sleep(0)
        return token

    async def append_events(self, workflow_id: str, events: Sequence[Mapping[str, Any]]) -> int:
        self.appends += 1
        return await super().append_events(workflow_id, events)

    async def cancel_requested(self, workflow_id: str) -> bool:
        self.flag_reads += 1
        return self.all_cancelled or await super().cancel_requested(workflow_id)


class _HandledQueue(asyncio.Queue[str | None]):
    """A subscription's queue that knows which ids its reader is done with: the reader
    comes back for the next one only after it handled the last."""

    def __init__(self) -> None:
        super().__init__()
        self.handled: set[str] = set()
        self._last: str | None = None
        self._changed = asyncio.Event()

    async def get(self) -> str | None:
        if self._last is not None:
            self.handled.add(self._last)
            self._changed.set()
        self._last = await super().get()
        return self._last

    async def until_handled(self, workflow_id: str) -> None:
        while workflow_id not in self.handled:
            self._changed.clear()
            await self._changed.wait()


class CancelledWhileAcceptedStore(RecordingStore):
    """Requests a cancel of each workflow it accepts once it is stored, and answers the
    accept only after the orchestrator's listener handled that cancel's message: a
    client that found the id (in the history) cancelled it before `submit` returned."""

    async def subscribe_cancellations(self, owner: str | None = None) -> WorkflowIdStream:
        inner = await super().subscribe_cancellations(owner)
        self.queue = queue = _HandledQueue()

        async def pump() -> None:
            async for workflow_id in inner:
                queue.put_nowait(workflow_id)

        pumping = asyncio.create_task(pump())

        async def release() -> None:
            await inner.aclose()
            await pumping

        return WorkflowIdStream(queue, release)

    async def accept(self, state: WorkflowState, *, lease_s: float | None = None) -> int | None:
        token = await super().accept(state, lease_s=lease_s)
        await self.request_cancel(state.workflow_id)
        await self.queue.until_handled(state.workflow_id)
        return token


def agent(request: httpx.Request) -> httpx.Response:
    name = request.url.host.split(".")[0]
    return httpx.Response(200, content=orjson.dumps({"status": "success", "data": ANSWERS[name]}))


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.MockTransport(agent)) as client:
        yield client


@pytest.fixture
def registry() -> AgentRegistry:
    return mock_agent_registry()


@pytest.fixture
def chain(registry: AgentRegistry) -> CompiledWorkflow:
    return compiled_chain(registry)


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


async def started_on(
    store: RecordingStore,
    registry: AgentRegistry,
    http: httpx.AsyncClient,
    *,
    write_delay_s: float,
) -> WorkflowOrchestrator:
    """An orchestrator on `store`, its agents answered through `http`, started."""
    runner = DagEngine(
        agents=AgentClient(registry, HttpxTransport(http)),
        registry=registry,
        kinds=default_kinds(),
        builtins=BUILTIN_FALLBACKS,
    )
    orchestrator = WorkflowOrchestrator(store=store, dag_engine=runner, write_delay_s=write_delay_s)
    await orchestrator.start()
    return orchestrator


async def test_the_terminal_write_carries_the_runs_last_events(
    http: httpx.AsyncClient, registry: AgentRegistry, chain: CompiledWorkflow
) -> None:
    """A workflow that ends within the write-behind delay appends no events of its own:
    every event of its run goes with its terminal document (one store operation, after
    the document), in order, the terminal event last."""
    store = RecordingStore()
    orchestrator = await started_on(store, registry, http, write_delay_s=3600.0)
    state = await orchestrator.submit(chain, {"query": "revenue by region"})
    await orchestrator.wait(state.workflow_id)
    await orchestrator.close()  # (its housekeeping done)
    logged = [e["type"] for _, e in await store.events_since(state.workflow_id)]
    assert store.carried == [logged]
    assert store.appends == 0
    assert logged[0] == "workflow.running" and logged[-1] == "workflow.completed"
    assert logged.count("step.completed") == len(chain.nodes)


class HeldRunningStore(RecordingStore):
    """Sets `running_saved` on every running save."""

    def __init__(self) -> None:
        super().__init__()
        self.running_saved = asyncio.Event()

    async def save(
        self,
        state: WorkflowState,
        *,
        token: int | None = None,
        events: Sequence[Mapping[str, Any]] = (),
    ) -> bool:
        written = await super().save(state, token=token, events=events)
        if not state.status.is_terminal:
            self.running_saved.set()
        return written


async def test_running_writes_carry_the_events_told_with_them(
    registry: AgentRegistry, chain: CompiledWorkflow
) -> None:
    """A running document write carries the events told since the last (one store
    operation for both, on Redis one script): the run appends none of its own, and every
    event reaches the store once, in order."""
    release = asyncio.Event()

    async def held_data_agent(request: httpx.Request) -> httpx.Response:
        if request.url.host.startswith("data"):
            await release.wait()  # the workflow is mid-run until the test lets it go on
        return agent(request)

    store = HeldRunningStore()
    async with httpx.AsyncClient(transport=httpx.MockTransport(held_data_agent)) as http:
        orchestrator = await started_on(store, registry, http, write_delay_s=0.0)
        state = await orchestrator.submit(chain, {"query": "revenue by region"})
        async with asyncio.timeout(10):  # a hang guard, not a timing claim
            await store.running_saved.wait()
        assert store.carried_running[0][0] == "workflow.running"
        assert "step.started" in store.carried_running[0]
        release.set()
        await orchestrator.wait(state.workflow_id)
        await orchestrator.close()
    logged = [e["type"] for _, e in await store.events_since(state.workflow_id)]
    assert store.appends == 0
    assert [t for batch in store.carried_running for t in batch] + store.carried[0] == logged
    assert logged[0] == "workflow.running" and logged[-1] == "workflow.completed"
    assert logged.count("step.completed") == len(chain.nodes)


@pytest.mark.parametrize("store", [True], indirect=True)
async def test_a_cancel_before_the_runner_starts_is_written_once(
    engine: tuple[WorkflowOrchestrator, RecordingStore], chain: CompiledWorkflow
) -> None:
    """A workflow whose cancel flag is set when it starts is written cancelled, once.

    Only an id named before its accept can have a flag standing: an Idempotency-Key's
    (reserved first, so another request may learn and cancel it)."""
    orchestrator, store = engine
    state, existed = await orchestrator.submit_once(
        "key-1", "digest", chain, {"query": "revenue by region"}
    )
    assert not existed
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


async def test_a_workflow_whose_id_is_made_at_submit_reads_no_cancel_flag_to_start(
    engine: tuple[WorkflowOrchestrator, RecordingStore], chain: CompiledWorkflow
) -> None:
    """Nobody can have cancelled an id before its accept made it known: its accept is
    the only store operation before it runs (with Redis: one command fewer)."""
    orchestrator, store = engine
    state = await orchestrator.submit(chain, {"query": "revenue by region"})
    done = await orchestrator.wait(state.workflow_id)
    assert done.status is WorkflowStatus.COMPLETED
    assert store.flag_reads == 0


async def test_a_cancel_heard_while_the_accept_is_answered_still_stops_the_workflow(
    http: httpx.AsyncClient, registry: AgentRegistry, chain: CompiledWorkflow
) -> None:
    """The message of a cancel that lands once the workflow is stored but before its task
    exists is not dropped: the workflow ends cancelled, its agents never called."""
    store = CancelledWhileAcceptedStore()
    called: list[str] = []

    def counting_agent(request: httpx.Request) -> httpx.Response:
        called.append(request.url.host)
        return agent(request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(counting_agent)) as client:
        runner = DagEngine(
            agents=AgentClient(registry, HttpxTransport(client)),
            registry=registry,
            kinds=default_kinds(),
            builtins=BUILTIN_FALLBACKS,
        )
        orchestrator = WorkflowOrchestrator(store=store, dag_engine=runner)
        await orchestrator.start()
        try:
            state = await orchestrator.submit(chain, {"query": "revenue by region"})
            done = await orchestrator.wait(state.workflow_id)
        finally:
            await orchestrator.close()
            await store.close()
    assert done.status is WorkflowStatus.CANCELLED
    assert called == []
    assert store.saved[-1] is WorkflowStatus.CANCELLED


async def test_a_cancelled_wait_leaves_the_workflow_and_other_waits_alone(
    engine: tuple[WorkflowOrchestrator, RecordingStore], chain: CompiledWorkflow
) -> None:
    """Each caller of `wait` has its own wait: a client that goes away (its wait is
    cancelled) stops neither the workflow nor another caller's wait."""
    orchestrator, store = engine
    state = await orchestrator.submit(chain, {"query": "revenue by region"})
    gone = asyncio.create_task(orchestrator.wait(state.workflow_id))
    kept = asyncio.create_task(orchestrator.wait(state.workflow_id))
    await asyncio.sleep(0)  # both are waiting
    gone.cancel()
    done = await kept
    assert gone.cancelled()
    assert done.status is WorkflowStatus.COMPLETED
    # A wait after the end answers at once.
    assert (await orchestrator.wait(state.workflow_id)).status is WorkflowStatus.COMPLETED


async def test_a_workflow_nobody_waits_for_still_appends_its_terminal_event(
    engine: tuple[WorkflowOrchestrator, RecordingStore], chain: CompiledWorkflow
) -> None:
    """With no caller waiting (an async query), the housekeeping after the end is not
    held back for an answer, and still happens: every event, the terminal one last."""
    orchestrator, store = engine
    state = await orchestrator.submit(chain, {"query": "revenue by region"})
    stream = await store.subscribe_events(state.workflow_id)
    seen = dict(await store.events_since(state.workflow_id))  # sequence -> event
    if not any(e["type"] == "workflow.completed" for e in seen.values()):
        async for sequence, event in stream:
            seen[sequence] = event
            if event["type"] == "workflow.completed":
                break
    await stream.aclose()
    types = [seen[n]["type"] for n in sorted(seen)]
    assert types[0] == "workflow.running" and types[-1] == "workflow.completed"
    assert types.count("step.completed") == 3


def test_workflow_ids_are_32_lowercase_hex_digits_and_unique() -> None:
    """The form ids had as uuid4().hex (clients and logs see it), never repeated."""
    ids = {new_workflow_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
