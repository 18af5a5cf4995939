"""The event-log part of the StateStore contract (state/store.py), run against every backend."""

from __future__ import annotations

import asyncio

import pytest

from state.events import EventStream, StoredEvent
from state.models import NodeRun, WorkflowStatus
from state.store import StateStore
from tests.state.conftest import Backend, make_state, new_id

# Generous: a hang fails, a slow (loaded) machine does not; 5 s was too tight under load.
EVENT_TIMEOUT_S = 30.0


async def next_event(stream: EventStream) -> StoredEvent:
    async with asyncio.timeout(EVENT_TIMEOUT_S):
        return await anext(stream)


async def test_events_are_numbered_in_order_per_workflow(store: StateStore) -> None:
    """Each workflow's events get 1, 2, 3...; another workflow counts on its own."""
    a, b = new_id(), new_id()
    assert await store.append_event(a, {"type": "x", "n": 1}) == 1
    assert await store.append_event(b, {"type": "y"}) == 1
    assert await store.append_event(a, {"type": "x", "n": 2}) == 2

    assert await store.events_since(a) == [(1, {"type": "x", "n": 1}), (2, {"type": "x", "n": 2})]
    assert await store.events_since(a, 1) == [(2, {"type": "x", "n": 2})]
    assert await store.events_since(a, 2) == []
    assert await store.events_since(b) == [(1, {"type": "y"})]
    assert await store.events_since(new_id()) == []


async def test_a_subscriber_gets_live_events_with_their_numbers(store: StateStore) -> None:
    """Events appended after subscribing arrive in order with the numbers the log has."""
    workflow_id = new_id()
    await store.append_event(workflow_id, {"before": True})
    async with await store.subscribe_events(workflow_id) as stream:
        await store.append_event(new_id(), {"other": "workflow"})
        await store.append_event(workflow_id, {"n": 2})
        await store.append_event(workflow_id, {"n": 3})
        assert await next_event(stream) == (2, {"n": 2})
        assert await next_event(stream) == (3, {"n": 3})


async def test_a_peer_replica_sees_the_events(backend: Backend) -> None:
    """Events appended through one replica's store reach a subscriber on another's."""
    store = await backend.new()
    peer = await backend.peer(store)
    workflow_id = new_id()
    async with await peer.subscribe_events(workflow_id) as stream:
        seq = await store.append_event(workflow_id, {"type": "step", "status": "running"})
        assert await next_event(stream) == (seq, {"type": "step", "status": "running"})
    assert await peer.events_since(workflow_id) == [(1, {"type": "step", "status": "running"})]


async def test_subscribing_then_reading_the_log_misses_nothing(store: StateStore) -> None:
    """Subscribe, append, read the log: every event is seen at least once, by its number."""
    workflow_id = new_id()
    await store.append_event(workflow_id, {"n": 1})
    async with await store.subscribe_events(workflow_id) as stream:
        await store.append_event(workflow_id, {"n": 2})
        backlog = await store.events_since(workflow_id, 0)
        live = await next_event(stream)
    seen = {seq for seq, _ in backlog} | {live[0]}
    assert seen == {1, 2}


async def test_the_event_log_expires_with_the_workflow(backend: Backend) -> None:
    """The log lives as long as the document: a save refreshes it, and it goes with it."""
    store = await backend.new(ttl_s=60)
    state = make_state()
    await store.append_event(state.workflow_id, {"n": 1})
    await backend.elapse(store, state.workflow_id, 30)
    await store.save(state)  # refreshes every key of the workflow, the log too
    await backend.elapse(store, state.workflow_id, 45)
    assert await store.events_since(state.workflow_id) == [(1, {"n": 1})]
    await backend.elapse(store, state.workflow_id, 30)
    assert await store.get(state.workflow_id) is None
    assert await store.events_since(state.workflow_id) == []


async def test_closing_the_store_ends_event_streams(backend: Backend) -> None:
    """A subscriber's iteration ends when its store closes."""
    store = await backend.new()
    stream = await store.subscribe_events(new_id())
    await store.close()
    async with asyncio.timeout(EVENT_TIMEOUT_S):
        assert [event async for event in stream] == []


async def test_aclose_releases_a_never_iterated_stream(store: StateStore) -> None:
    """Closing a stream that was never read stops it; a later event goes nowhere."""
    workflow_id = new_id()
    stream = await store.subscribe_events(workflow_id)
    await stream.aclose()
    await stream.aclose()  # idempotent
    await store.append_event(workflow_id, {"n": 1})
    assert [event async for event in stream] == []


async def test_a_terminal_document_does_not_stop_events(store: StateStore) -> None:
    """The log is independent of the document's finality: the terminal event comes after it."""
    state = make_state(status=WorkflowStatus.COMPLETED)
    await store.save(state)
    assert await store.append_event(state.workflow_id, {"status": "completed"}) == 1


async def test_several_events_are_appended_in_order_in_one_operation(store: StateStore) -> None:
    """append_events numbers a batch consecutively after what the log holds, keeps its
    order, and a subscriber gets each with its number."""
    workflow_id = new_id()
    await store.append_event(workflow_id, {"n": 1})
    batch = [{"n": n} for n in range(2, 6)]
    async with await store.subscribe_events(workflow_id) as stream:
        assert await store.append_events(workflow_id, batch) == 5
        assert [await next_event(stream) for _ in batch] == [
            (n, {"n": n}) for n in range(2, 6)
        ]
    assert await store.events_since(workflow_id, 1) == [(n, {"n": n}) for n in range(2, 6)]


async def test_a_batch_larger_than_a_script_chunk_keeps_every_event(store: StateStore) -> None:
    """2,500 events in one append (a wide fan-out's turn): all logged, numbered in order."""
    workflow_id = new_id()
    assert await store.append_events(workflow_id, [{"i": i} for i in range(2500)]) == 2500
    logged = await store.events_since(workflow_id)
    assert logged == [(i + 1, {"i": i}) for i in range(2500)]


async def test_an_empty_batch_is_refused(store: StateStore) -> None:
    workflow_id = new_id()
    with pytest.raises(ValueError):
        await store.append_events(workflow_id, [])
    assert await store.events_since(workflow_id) == []


async def test_reading_from_any_number_gives_the_same_tail_whatever_the_batches(
    store: StateStore,
) -> None:
    """Events appended one by one and in batches of several sizes read back the same from
    every point, within a batch or at its edges, and past the end."""
    workflow_id = new_id()
    sizes = [1, 3, 1, 5, 2, 1, 4]
    n = 0
    for size in sizes:
        batch = [{"n": n + i + 1} for i in range(size)]
        n = await store.append_events(workflow_id, batch)
    every = [(i, {"n": i}) for i in range(1, n + 1)]
    assert n == sum(sizes)
    for after in range(n + 2):
        assert await store.events_since(workflow_id, after) == every[after:]


async def test_a_terminal_write_appends_the_events_it_carries_after_its_document(
    backend: Backend,
) -> None:
    """`save(events=...)` appends them after the document in one operation, numbered after
    the log's; a subscriber (on any replica) told of them finds the document written."""
    store = await backend.new()
    peer = await backend.peer(store)
    state = make_state(status=WorkflowStatus.RUNNING)
    assert await store.save(state)
    await store.append_event(state.workflow_id, {"n": 1})
    state.status = WorkflowStatus.COMPLETED
    async with await peer.subscribe_events(state.workflow_id) as stream:
        assert await store.save(state, events=[{"n": 2}, {"type": "workflow.completed"}])
        assert await next_event(stream) == (2, {"n": 2})
        stored = await peer.get(state.workflow_id)
        assert stored is not None and stored.status is WorkflowStatus.COMPLETED
        assert await next_event(stream) == (3, {"type": "workflow.completed"})
    assert await store.events_since(state.workflow_id) == [
        (1, {"n": 1}),
        (2, {"n": 2}),
        (3, {"type": "workflow.completed"}),
    ]


async def test_a_running_write_appends_the_events_it_carries_after_its_document(
    backend: Backend,
) -> None:
    """A running document's write carries its events too (the write-behind's: one
    operation for both), appended after it, numbered after the log's, told to a subscriber
    on any replica; the partial writes that follow a first one carry theirs as well."""
    store = await backend.new()
    peer = await backend.peer(store)
    state = make_state(status=WorkflowStatus.RUNNING)
    async with await peer.subscribe_events(state.workflow_id) as stream:
        assert await store.save(state, events=[{"type": "workflow.running"}])
        assert await next_event(stream) == (1, {"type": "workflow.running"})
        state.steps["a"] = NodeRun(step_id="a", kind="agent", agent="nlp")
        assert await store.save(state, events=[{"type": "step.started"}])
        assert await next_event(stream) == (2, {"type": "step.started"})
        stored = await peer.get(state.workflow_id)
        assert stored is not None and "a" in stored.steps
    assert [e for _, e in await store.events_since(state.workflow_id)] == [
        {"type": "workflow.running"},
        {"type": "step.started"},
    ]


async def test_an_already_terminal_document_takes_no_events(store: StateStore) -> None:
    """A save refused as already terminal appends nothing: whoever ended the workflow
    told its end (or this very write did, when its answer was lost and it is sent again)."""
    state = make_state(status=WorkflowStatus.FAILED)
    assert await store.save(state, events=[{"type": "workflow.failed"}])
    assert not await store.save(state, events=[{"type": "workflow.failed"}])
    assert await store.events_since(state.workflow_id) == [(1, {"type": "workflow.failed"})]


async def test_the_events_a_terminal_write_carries_expire_with_its_document(
    backend: Backend,
) -> None:
    """Carried by the terminal write, the log gets the retention, as the document does."""
    store = await backend.new(ttl_s=100, retention_s=10)
    state = make_state(status=WorkflowStatus.COMPLETED)
    assert await store.save(state, events=[{"type": "workflow.completed"}])
    await backend.elapse(store, state.workflow_id, 9)
    assert len(await store.events_since(state.workflow_id)) == 1
    await backend.elapse(store, state.workflow_id, 2)
    assert await store.events_since(state.workflow_id) == []
