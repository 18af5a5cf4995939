"""Heartbeat, lease expiry, reconcile, fencing and store outages in the engine, on a fake clock.

Two engines share one memory store (as two replicas share Redis) and one
`FakeClock`, which paces their loops and decides when leases expire: no real
time passes. Agents are fakes behind httpx.MockTransport that count calls and
hold the data step until the test lets it answer.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
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
from orchestrator.errors import WorkflowAlreadyFinished
from orchestrator.lifecycle import WorkflowOrchestrator
from state.memory import MemoryStateStore
from state.models import NodeStatus, WorkflowState, WorkflowStatus
from state.store import StateStoreError
from tests.chain_fixtures import compiled_chain, mock_agent_registry
from tests.fakes import FakeClock, settle

LEASE_S = 3.0
ANSWERS: dict[str, Any] = {
    "nlp": {"intent": {"metric": "revenue", "group_by": ["region"]}},
    "data": {"columns": ["region"], "rows": [{"region": "EMEA"}]},
    "viz": {"spec": {"mark": "bar"}},
}


class Agents:
    """Fake agents: count calls; the data agent answers only once `release_data` is set."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.release_data = asyncio.Event()
        self.data_waiting = asyncio.Event()

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        name = request.url.host.split(".")[0]
        self.calls[name] += 1
        if name == "data":
            self.data_waiting.set()
            await self.release_data.wait()
        body = orjson.dumps({"status": "success", "data": ANSWERS[name]})
        return httpx.Response(200, content=body)


class OutageStore(MemoryStateStore):
    """The memory store, with a switch that makes every call fail like an unreachable Redis,
    and a way to await a document the engines write behind (`stored`)."""

    def __init__(self, *, clock: FakeClock) -> None:
        super().__init__(clock=clock)
        self.down = False
        self.refused_while_down = 0
        # Set (and replaced) after every save: `stored` waits on saves, not on time.
        self._saved = asyncio.Event()

    async def stored(
        self, workflow_id: str, holds: Callable[[WorkflowState], bool]
    ) -> WorkflowState:
        """The stored document once a save made it satisfy `holds`. Transitions are written
        behind (ORCH_STATE_WRITE_DELAY_S, real time): a test that needs one in the store
        before the fake clock moves waits for it here."""
        while True:
            saved = self._saved
            state = await super().get(workflow_id)
            if state is not None and holds(state):
                return state
            await saved.wait()

    def _check(self, operation: str) -> None:
        if self.down:
            self.refused_while_down += 1
            raise StateStoreError("store down", backend="memory", operation=operation)

    async def save(
        self,
        state: WorkflowState,
        *,
        token: int | None = None,
        events: Sequence[Mapping[str, Any]] = (),
    ) -> bool:
        self._check("save")
        try:
            return await super().save(state, token=token, events=events)
        finally:
            saved, self._saved = self._saved, asyncio.Event()
            saved.set()

    async def get(self, workflow_id: str) -> WorkflowState | None:
        self._check("get")
        return await super().get(workflow_id)

    async def cancel_requested(self, workflow_id: str) -> bool:
        self._check("cancel_requested")
        return await super().cancel_requested(workflow_id)

    async def request_cancel(self, workflow_id: str) -> None:
        self._check("request_cancel")
        await super().request_cancel(workflow_id)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(clock: FakeClock) -> OutageStore:
    return OutageStore(clock=clock)


@pytest.fixture
def fake_agents() -> Agents:
    return Agents()


def nlp_done(state: WorkflowState) -> bool:
    nlp = state.steps.get("nlp")
    return nlp is not None and nlp.status is NodeStatus.COMPLETED


@pytest.fixture
async def http(fake_agents: Agents) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.MockTransport(fake_agents)) as client:
        yield client


@pytest.fixture
def registry() -> AgentRegistry:
    return mock_agent_registry()


@pytest.fixture
def chain(registry: AgentRegistry) -> CompiledWorkflow:
    return compiled_chain(registry)


@pytest.fixture
async def make_engine(
    http: httpx.AsyncClient,
    registry: AgentRegistry,
    store: OutageStore,
    clock: FakeClock,
    chain: CompiledWorkflow,
) -> AsyncIterator[Any]:
    made: list[WorkflowOrchestrator] = []

    def make(replica_id: str) -> WorkflowOrchestrator:
        runner = DagEngine(
            agents=AgentClient(registry, HttpxTransport(http)),
            registry=registry,
            kinds=default_kinds(),
            builtins=BUILTIN_FALLBACKS,
        )
        engine = WorkflowOrchestrator(
            store=store,
            dag_engine=runner,
            replica_id=replica_id,
            leases=store.leases(),
            lease_s=LEASE_S,
            resolve=lambda _: chain,
            clock=clock,
            shutdown_grace_s=0.5,
        )
        made.append(engine)
        return engine

    yield make
    store.down = False
    for engine in made:
        await engine.close()
    await store.close()


async def test_the_heartbeat_keeps_a_running_workflows_lease(
    make_engine: Any, chain: CompiledWorkflow, clock: FakeClock, fake_agents: Agents
) -> None:
    """While its owner beats every lease_s / 3, no other replica finds an orphan."""
    owner, other = make_engine("owner"), make_engine("other")
    await owner.start()
    state = await owner.submit(chain, {"query": "revenue by region"})
    await fake_agents.data_waiting.wait()

    for _ in range(9):  # three lease periods
        await clock.tick(LEASE_S / 3)
        assert await other.reconcile() == []
    assert state.workflow_id in owner.running
    fake_agents.release_data.set()
    finished = await owner.wait(state.workflow_id)
    assert finished.status is WorkflowStatus.COMPLETED


async def test_a_silent_owners_workflow_is_resumed_after_its_lease(
    make_engine: Any,
    chain: CompiledWorkflow,
    clock: FakeClock,
    fake_agents: Agents,
    store: OutageStore,
) -> None:
    """No heartbeat (the owner froze): just before lease_s nothing happens; after, the
    other replica's reconciler resumes it, keeping the completed NLP step."""
    frozen, survivor = make_engine("frozen"), make_engine("survivor")
    state = await frozen.submit(chain, {"query": "revenue by region"})  # frozen never beats
    await fake_agents.data_waiting.wait()
    await store.stored(state.workflow_id, nlp_done)  # written behind: it froze after that
    await survivor.start()  # reconciles at once, then every lease_s / 2
    await settle()
    assert survivor.running == {}

    await clock.tick(LEASE_S / 2)
    assert survivor.running == {}  # the lease has not expired yet
    await clock.tick(LEASE_S / 2 + 0.01)
    assert state.workflow_id in survivor.running

    fake_agents.release_data.set()
    done = await survivor.wait(state.workflow_id)
    assert done.status is WorkflowStatus.COMPLETED
    assert done.owner == "survivor"
    assert fake_agents.calls["nlp"] == 1  # completed before the freeze: kept


async def test_a_frozen_owner_that_comes_back_starts_nothing_and_writes_nothing(
    make_engine: Any,
    chain: CompiledWorkflow,
    clock: FakeClock,
    fake_agents: Agents,
    store: OutageStore,
) -> None:
    """Fencing: the old owner's data answer arrives after the takeover; it does not start
    viz (the new owner does) and its writes are refused, so the new owner's state stands."""
    frozen, survivor = make_engine("frozen"), make_engine("survivor")
    state = await frozen.submit(chain, {"query": "revenue by region"})
    await fake_agents.data_waiting.wait()
    await store.stored(state.workflow_id, nlp_done)  # written behind: it froze after that
    clock.advance(LEASE_S + 0.01)
    assert await survivor.reconcile() == [state.workflow_id]

    fake_agents.release_data.set()  # both data calls answer: the frozen one's first
    done = await survivor.wait(state.workflow_id)

    assert done.status is WorkflowStatus.COMPLETED
    assert fake_agents.calls == Counter({"nlp": 1, "data": 2, "viz": 1})
    await settle()
    assert frozen.running == {}
    stored = await store.get(state.workflow_id)
    assert stored is not None and stored.owner == "survivor"
    assert stored.status is WorkflowStatus.COMPLETED
    assert frozen.metrics.snapshot()["workflows"]["finished"] == 0


async def test_a_lost_lease_found_by_the_heartbeat_stops_the_workflow(
    make_engine: Any, chain: CompiledWorkflow, clock: FakeClock, fake_agents: Agents,
    store: OutageStore,
) -> None:
    """The heartbeat learns another replica holds the lease: the workflow stops here."""
    owner, thief = make_engine("owner"), make_engine("thief")
    await owner.start()
    state = await owner.submit(chain, {"query": "revenue by region"})
    await fake_agents.data_waiting.wait()
    await store.stored(state.workflow_id, nlp_done)  # written behind
    clock.advance(LEASE_S + 0.01)  # owner's heartbeat is due but has not run yet
    assert await thief.reconcile() == [state.workflow_id]
    # The thief's resumed document is written behind too: await it, then let the owner's
    # heartbeat run; the owner stops and writes nothing over it (its token is stale).
    await store.stored(state.workflow_id, lambda s: s.owner == "thief")
    await clock.tick(0)
    await settle()
    assert state.workflow_id not in owner.running
    stored = await store.get(state.workflow_id)
    assert stored is not None and stored.owner == "thief"
    fake_agents.release_data.set()
    assert (await thief.wait(state.workflow_id)).status is WorkflowStatus.COMPLETED


async def test_writes_during_a_store_outage_are_retried_until_it_returns(
    make_engine: Any,
    chain: CompiledWorkflow,
    clock: FakeClock,
    fake_agents: Agents,
    store: OutageStore,
) -> None:
    """The store goes away mid-run: the workflow finishes, its terminal write is kept and
    retried with backoff, status answers from memory, and the write lands after."""
    owner = make_engine("owner")
    await owner.start()
    state = await owner.submit(chain, {"query": "revenue by region"})
    await fake_agents.data_waiting.wait()
    store.down = True
    fake_agents.release_data.set()

    finished = await owner.wait(state.workflow_id)  # known in memory, write pending
    assert finished.status is WorkflowStatus.COMPLETED
    assert (await owner.status(state.workflow_id)).status is WorkflowStatus.COMPLETED
    for _ in range(20):  # a long outage: many backoff rounds, nothing dropped
        await clock.tick(2.0)
    assert store.refused_while_down > 10
    assert state.workflow_id in owner.running  # still owes its write

    store.down = False
    await clock.tick(2.0)
    await settle()
    stored = await store.get(state.workflow_id)
    assert stored is not None and stored.status is WorkflowStatus.COMPLETED
    assert stored.steps["viz"].status is NodeStatus.COMPLETED
    assert owner.running == {}
    assert await store.leases().orphans() == []


async def test_status_of_a_workflow_this_replica_does_not_hold_is_an_error_in_an_outage(
    make_engine: Any, store: OutageStore
) -> None:
    owner = make_engine("owner")
    store.down = True
    with pytest.raises(StateStoreError):
        await owner.status("unknown")


async def test_cancel_waits_for_the_owners_finish_notification(
    make_engine: Any, chain: CompiledWorkflow, fake_agents: Agents
) -> None:
    """A cancel sent to a replica that does not run the workflow returns the cancelled
    document once the owner's terminal write is published; a second cancel is a no-op."""
    owner, other = make_engine("owner"), make_engine("other")
    await owner.start()
    await other.start()
    state = await owner.submit(chain, {"query": "revenue by region"})
    await fake_agents.data_waiting.wait()

    cancelled = await other.cancel(state.workflow_id)

    assert cancelled.status is WorkflowStatus.CANCELLED
    assert cancelled.owner == "owner"
    again = await other.cancel(state.workflow_id)
    assert again.status is WorkflowStatus.CANCELLED
    assert again.finished_at == cancelled.finished_at


async def test_cancel_of_a_workflow_that_ended_otherwise_still_raises(
    make_engine: Any, chain: CompiledWorkflow, fake_agents: Agents
) -> None:
    owner = make_engine("owner")
    await owner.start()
    fake_agents.release_data.set()
    state = await owner.submit(chain, {"query": "revenue by region"})
    await owner.wait(state.workflow_id)
    with pytest.raises(WorkflowAlreadyFinished) as caught:
        await owner.cancel(state.workflow_id)
    assert caught.value.workflow_status is WorkflowStatus.COMPLETED


async def test_no_waiter_is_left_behind(
    make_engine: Any, chain: CompiledWorkflow, fake_agents: Agents
) -> None:
    owner, other = make_engine("owner"), make_engine("other")
    await owner.start()
    await other.start()
    state = await owner.submit(chain, {"query": "x"})
    await fake_agents.data_waiting.wait()
    await asyncio.gather(other.cancel(state.workflow_id), other.cancel(state.workflow_id))
    assert other._finish_waiters == {}


async def test_a_workflow_running_here_can_be_cancelled_while_the_store_is_away(
    make_engine: Any, chain: CompiledWorkflow, clock: FakeClock, fake_agents: Agents,
    store: OutageStore,
) -> None:
    """The owner stops it at once; the cancelled document is stored when the store is back."""
    owner = make_engine("owner")
    await owner.start()
    state = await owner.submit(chain, {"query": "revenue by region"})
    await fake_agents.data_waiting.wait()
    store.down = True

    cancelled = await owner.cancel(state.workflow_id)

    assert cancelled.status is WorkflowStatus.CANCELLED
    store.down = False
    await clock.tick(2.0)
    await settle()
    stored = await store.get(state.workflow_id)
    assert stored is not None and stored.status is WorkflowStatus.CANCELLED


class SlowAcceptStore(OutageStore):
    """Holds every accept until `release_accept` is set, as a Redis round trip would."""

    def __init__(self, *, clock: FakeClock) -> None:
        super().__init__(clock=clock)
        self.accepting: list[str] = []
        self.accept_entered = asyncio.Event()
        self.release_accept = asyncio.Event()

    @property
    def completes_in_turn(self) -> bool:
        return False  # its accepts wait

    async def accept(self, state: WorkflowState, *, lease_s: float | None = None) -> int | None:
        self.accepting.append(state.workflow_id)
        self.accept_entered.set()
        await self.release_accept.wait()
        return await super().accept(state, lease_s=lease_s)


def engine_on(
    store: MemoryStateStore,
    http: httpx.AsyncClient,
    registry: AgentRegistry,
    clock: FakeClock,
    *,
    shutdown_grace_s: float = 0.5,
) -> WorkflowOrchestrator:
    """One replica ("r1") with leases on `store`, agents answered through `http`."""
    return WorkflowOrchestrator(
        store=store,
        dag_engine=DagEngine(
            agents=AgentClient(registry, HttpxTransport(http)),
            registry=registry,
            kinds=default_kinds(),
            builtins=BUILTIN_FALLBACKS,
        ),
        replica_id="r1",
        leases=store.leases(),
        lease_s=LEASE_S,
        clock=clock,
        shutdown_grace_s=shutdown_grace_s,
    )


@pytest.mark.parametrize("idempotent", [False, True])
async def test_an_accept_that_lands_after_its_caller_was_cancelled_ends_the_workflow_cancelled(
    http: httpx.AsyncClient,
    registry: AgentRegistry,
    clock: FakeClock,
    chain: CompiledWorkflow,
    fake_agents: Agents,
    idempotent: bool,
) -> None:
    """A client that goes away while its accept is on the wire (aiohttp cancels the
    handler): the store takes the workflow all the same. It must still end, and end
    cancelled without calling an agent, not stay pending until its TTL."""
    store = SlowAcceptStore(clock=clock)
    engine = engine_on(store, http, registry, clock)
    try:
        submit: Coroutine[Any, Any, object] = (
            engine.submit_once("key-1", "digest", chain, {"query": "q"})
            if idempotent
            else engine.submit(chain, {"query": "q"})
        )
        caller = asyncio.create_task(submit)
        await store.accept_entered.wait()
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        store.release_accept.set()  # the write lands after its caller gave up
        [workflow_id] = store.accepting
        await settle()  # the accept's reply comes back
        async with asyncio.timeout(30):  # a hang guard, not a timing claim
            done = await engine.wait(workflow_id)
        assert done.status is WorkflowStatus.CANCELLED
        stored = await store.get(workflow_id)
        assert stored is not None and stored.status is WorkflowStatus.CANCELLED
        assert sum(fake_agents.calls.values()) == 0
        assert await store.leases().orphans(lease_s=LEASE_S) == []
    finally:
        await engine.close()
        await store.close()


class CancelOnAcceptStore(OutageStore):
    """Cancels `caller` right as an accept lands: before the caller could resume."""

    caller: asyncio.Task[Any] | None = None

    def __init__(self, *, clock: FakeClock) -> None:
        super().__init__(clock=clock)
        self.accepted: list[str] = []

    @property
    def completes_in_turn(self) -> bool:
        return False

    async def accept(self, state: WorkflowState, *, lease_s: float | None = None) -> int | None:
        token = await super().accept(state, lease_s=lease_s)
        self.accepted.append(state.workflow_id)
        assert self.caller is not None
        # Runs in the loop's next turn, ahead of whatever the accept's answer wakes.
        asyncio.get_running_loop().call_soon(self.caller.cancel)
        return token


async def test_a_caller_cancelled_as_its_accept_lands_gets_its_workflow_ended_cancelled(
    http: httpx.AsyncClient,
    registry: AgentRegistry,
    clock: FakeClock,
    chain: CompiledWorkflow,
    fake_agents: Agents,
) -> None:
    """The accept landed, but its caller is cancelled before it resumes (nobody is told
    the id): the workflow ends cancelled without calling an agent, as mid-accept."""
    store = CancelOnAcceptStore(clock=clock)
    engine = engine_on(store, http, registry, clock)
    try:
        store.caller = caller = asyncio.create_task(engine.submit(chain, {"query": "q"}))
        with pytest.raises(asyncio.CancelledError):
            await caller
        [workflow_id] = store.accepted
        async with asyncio.timeout(30):  # a hang guard, not a timing claim
            done = await engine.wait(workflow_id)
        assert done.status is WorkflowStatus.CANCELLED
        await settle()
        stored = await store.get(workflow_id)
        assert stored is not None and stored.status is WorkflowStatus.CANCELLED
        assert sum(fake_agents.calls.values()) == 0
    finally:
        await engine.close()
        await store.close()


async def test_close_waits_for_an_accept_whose_caller_was_cancelled(
    http: httpx.AsyncClient, registry: AgentRegistry, clock: FakeClock, chain: CompiledWorkflow
) -> None:
    """A shutdown that cancels a request mid-accept (aiohttp cancels open handlers) does
    not return before that accept has answered: a landed one is then ended, not left."""
    store = SlowAcceptStore(clock=clock)
    # A long grace: a hang guard, not a timing claim.
    engine = engine_on(store, http, registry, clock, shutdown_grace_s=30)
    try:
        caller = asyncio.create_task(engine.submit(chain, {"query": "q"}))
        await store.accept_entered.wait()
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        closing = asyncio.create_task(engine.close())
        await settle()
        assert not closing.done()  # still waiting for the accept's answer
        store.release_accept.set()
        await closing
        await settle()
        [workflow_id] = store.accepting
        stored = await store.get(workflow_id)
        assert stored is not None and stored.status is WorkflowStatus.CANCELLED
    finally:
        await store.close()
