"""The StateStore contract (state/store.py), one suite run against every backend."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from state.cancellations import CancellationStream
from state.models import StepState, WorkflowStatus
from state.store import LeaseLost, StateStore
from tests.state.conftest import Backend, make_state, new_id

TERMINAL = [s for s in WorkflowStatus if s.is_terminal]

# Upper bound on waiting for an event that must happen; a hang fails, not a slow run.
EVENT_TIMEOUT_S = 5.0


async def next_id(cancellations: CancellationStream) -> str:
    async with asyncio.timeout(EVENT_TIMEOUT_S):
        return await anext(cancellations)


# --- documents -------------------------------------------------------------------------------


async def test_roundtrip_returns_an_equal_document(store: StateStore) -> None:
    """What `get` returns equals what was saved: steps, errors, fallbacks, result."""
    state = make_state()
    assert await store.save(state) is True

    loaded = await store.get(state.workflow_id)

    assert loaded == state
    assert loaded is not None
    assert loaded.fallbacks == state.fallbacks != []
    assert loaded.to_dict() == state.to_dict()


async def test_unknown_workflow_is_none(store: StateStore) -> None:
    """An id never saved reads as None, and has no cancel flag."""
    assert await store.get(new_id()) is None
    assert await store.cancel_requested(new_id()) is False


async def test_stored_document_cannot_be_aliased(store: StateStore) -> None:
    """Mutating the saved object or a loaded copy never changes the stored document."""
    state = make_state()
    await store.save(state)
    state.steps["nlp"].output["intent"] = "changed after save"
    state.inputs["query"] = "changed after save"

    loaded = await store.get(state.workflow_id)
    assert loaded is not None
    assert loaded.steps["nlp"].output["intent"] == "aggregate"
    assert loaded.inputs["query"] == "sales by region"

    loaded.result["rows"].clear()
    again = await store.get(state.workflow_id)
    assert again is not None and again.result["rows"] == [{"region": "EU", "total": 12.5}]


async def test_every_transition_overwrites_the_document(store: StateStore) -> None:
    """Non-terminal documents are replaced whole by each save, up to the terminal one."""
    state = make_state(status=WorkflowStatus.PENDING)
    assert await store.save(state)
    state.status = WorkflowStatus.RUNNING
    state.steps["new"] = StepState(step_id="new", kind="agent", agent="nlp")
    assert await store.save(state)
    assert await store.get(state.workflow_id) == state

    state.status = WorkflowStatus.COMPLETED
    assert await store.save(state)
    assert await store.get(state.workflow_id) == state


async def test_unserialisable_document_is_refused(store: StateStore) -> None:
    """A document JSON cannot hold fails on save, in memory exactly as in Redis."""
    state = make_state()
    state.result = {"when": object()}
    with pytest.raises(TypeError):
        await store.save(state)
    assert await store.get(state.workflow_id) is None


@pytest.mark.parametrize("terminal", TERMINAL, ids=lambda s: s.value)
async def test_terminal_document_is_final(store: StateStore, terminal: WorkflowStatus) -> None:
    """Once a terminal document is stored, later saves return False and change nothing."""
    state = make_state(status=terminal)
    assert await store.save(state) is True
    final = dataclasses.replace(state, steps=dict(state.steps))

    for late in (WorkflowStatus.RUNNING, WorkflowStatus.PENDING, *TERMINAL):
        state.status = late
        state.result = {"late": late.value}
        assert await store.save(state) is False

    assert await store.get(state.workflow_id) == final


async def test_racing_late_write_never_flips_a_terminal_document(store: StateStore) -> None:
    """Concurrent running/completed saves of one workflow always end completed."""
    for _ in range(20):
        workflow_id = new_id()
        running = make_state(workflow_id, WorkflowStatus.RUNNING)
        done = make_state(workflow_id, WorkflowStatus.COMPLETED)
        await asyncio.gather(store.save(running), store.save(done), store.save(running))
        stored = await store.get(workflow_id)
        assert stored is not None and stored.status is WorkflowStatus.COMPLETED


async def test_concurrent_saves_of_different_workflows_do_not_interfere(store: StateStore) -> None:
    """Many workflows written at once each read back exactly their own last document."""
    states = [make_state() for _ in range(40)]

    async def run(index: int) -> None:
        state = states[index]
        for status in (WorkflowStatus.PENDING, WorkflowStatus.RUNNING, WorkflowStatus.COMPLETED):
            state.status = status
            state.inputs = {"index": index, "status": status.value}
            assert await store.save(state)

    await asyncio.gather(*(run(i) for i in range(len(states))))

    for index, state in enumerate(states):
        stored = await store.get(state.workflow_id)
        assert stored == state
        assert stored is not None and stored.inputs == {"index": index, "status": "completed"}


async def test_different_namespaces_do_not_see_each_other(backend: Backend) -> None:
    """Another prefix (or another memory store) sees neither documents nor cancel flags."""
    ours = await backend.new()
    theirs = await backend.isolated(ours)
    state = make_state()
    await ours.save(state)
    await ours.request_cancel(state.workflow_id)

    assert await theirs.get(state.workflow_id) is None
    assert await theirs.cancel_requested(state.workflow_id) is False
    # The same id in the other namespace is an independent workflow.
    assert await theirs.save(make_state(state.workflow_id, WorkflowStatus.COMPLETED)) is True
    assert await ours.get(state.workflow_id) == state


# --- TTL ---------------------------------------------------------------------------------------


async def test_document_expires_after_ttl(backend: Backend) -> None:
    """A workflow not written for ttl_s seconds is gone: document and cancel flag."""
    store = await backend.new(ttl_s=100)
    state = make_state()
    await store.save(state)
    await store.request_cancel(state.workflow_id)

    await backend.elapse(store, state.workflow_id, 99.5)
    assert await store.get(state.workflow_id) == state
    assert await store.cancel_requested(state.workflow_id) is True

    await backend.elapse(store, state.workflow_id, 1.0)
    assert await store.get(state.workflow_id) is None
    assert await store.cancel_requested(state.workflow_id) is False


async def test_every_save_refreshes_the_ttl_of_every_key(backend: Backend) -> None:
    """Each write gives the document and its cancel flag a full TTL again."""
    store = await backend.new(ttl_s=100)
    state = make_state()
    await store.save(state)
    await store.request_cancel(state.workflow_id)

    for _ in range(3):
        await backend.elapse(store, state.workflow_id, 60)
        assert await store.save(state)

    await backend.elapse(store, state.workflow_id, 60)
    assert await store.get(state.workflow_id) == state
    assert await store.cancel_requested(state.workflow_id) is True


async def test_terminal_document_expires_like_any_other(backend: Backend) -> None:
    """A refused late save does not extend a finished workflow's life."""
    store = await backend.new(ttl_s=100)
    state = make_state(status=WorkflowStatus.COMPLETED)
    await store.save(state)
    await backend.elapse(store, state.workflow_id, 60)
    state.status = WorkflowStatus.RUNNING
    assert await store.save(state) is False

    await backend.elapse(store, state.workflow_id, 41)
    assert await store.get(state.workflow_id) is None


async def test_cancel_flag_expires_with_its_document(backend: Backend) -> None:
    """A flag set late in a workflow's life does not outlive the document."""
    store = await backend.new(ttl_s=100)
    state = make_state()
    await store.save(state)
    await backend.elapse(store, state.workflow_id, 70)
    await store.request_cancel(state.workflow_id)

    await backend.elapse(store, state.workflow_id, 29)
    assert await store.cancel_requested(state.workflow_id) is True
    await backend.elapse(store, state.workflow_id, 2)
    assert await store.cancel_requested(state.workflow_id) is False
    assert await store.get(state.workflow_id) is None


async def test_cancel_flag_without_document_expires_after_ttl(backend: Backend) -> None:
    """Cancelling an unknown id is harmless: the flag is set and expires on its own."""
    store = await backend.new(ttl_s=100)
    workflow_id = new_id()
    await store.request_cancel(workflow_id)
    assert await store.cancel_requested(workflow_id) is True
    assert await store.get(workflow_id) is None

    await backend.elapse(store, workflow_id, 101)
    assert await store.cancel_requested(workflow_id) is False


# --- cancellation ------------------------------------------------------------------------------


async def test_cancel_flag_is_visible_to_another_replica(backend: Backend) -> None:
    """A cancel requested through one store is read through another on the same backend."""
    store = await backend.new()
    other = await backend.peer(store)
    state = make_state()
    await store.save(state)

    assert await other.cancel_requested(state.workflow_id) is False
    await store.request_cancel(state.workflow_id)
    assert await other.cancel_requested(state.workflow_id) is True
    assert await other.cancel_requested(new_id()) is False


async def test_cancel_never_rewrites_the_document(store: StateStore) -> None:
    """request_cancel leaves the owner's document exactly as it was, still writable."""
    state = make_state()
    await store.save(state)
    await store.request_cancel(state.workflow_id)
    assert await store.get(state.workflow_id) == state

    state.status = WorkflowStatus.CANCELLED
    assert await store.save(state) is True
    assert await store.get(state.workflow_id) == state


async def test_cancellation_reaches_subscribers_of_another_replica(backend: Backend) -> None:
    """The replica running a workflow hears a cancel requested through another replica."""
    requester = await backend.new()
    runner = await backend.peer(requester)
    cancellations = await runner.subscribe_cancellations()
    workflow_id = new_id()

    await requester.request_cancel(workflow_id)

    assert await next_id(cancellations) == workflow_id
    await cancellations.aclose()


async def test_cancellation_reaches_every_subscriber_in_order(backend: Backend) -> None:
    """Each subscriber, on any replica, gets every cancelled id, in request order."""
    requester = await backend.new()
    subscribers = [
        await requester.subscribe_cancellations(),
        await requester.subscribe_cancellations(),
        await (await backend.peer(requester)).subscribe_cancellations(),
        await (await backend.peer(requester)).subscribe_cancellations(),
    ]
    ids = [new_id() for _ in range(3)]
    for workflow_id in ids:
        await requester.request_cancel(workflow_id)

    for cancellations in subscribers:
        assert [await next_id(cancellations) for _ in ids] == ids
        await cancellations.aclose()


async def test_close_ends_every_subscription(backend: Backend) -> None:
    """Closing the store ends its subscribers' iterations cleanly, even mid-wait."""
    store = await backend.new()
    subscribers = [await store.subscribe_cancellations(), await store.subscribe_cancellations()]
    await store.request_cancel("before-close")
    for cancellations in subscribers:
        assert await next_id(cancellations) == "before-close"

    async def drain(cancellations: CancellationStream) -> list[str]:
        return [workflow_id async for workflow_id in cancellations]

    readers = [asyncio.create_task(drain(c)) for c in subscribers]
    await asyncio.sleep(0)  # let both readers block on their next item
    await store.close()

    async with asyncio.timeout(EVENT_TIMEOUT_S):
        assert await asyncio.gather(*readers) == [[], []]


async def test_closed_subscription_stops_receiving(backend: Backend) -> None:
    """A subscriber that closed its iterator is dropped; the others keep receiving."""
    store = await backend.new()
    leaving = await store.subscribe_cancellations()
    staying = await store.subscribe_cancellations()
    await leaving.aclose()

    await store.request_cancel("after-leave")
    assert await next_id(staying) == "after-leave"
    with pytest.raises(StopAsyncIteration):
        await next_id(leaving)
    await staying.aclose()


# --- readiness ---------------------------------------------------------------------------------


async def test_ping_is_true_when_the_backend_answers(store: StateStore) -> None:
    """A reachable backend is ready."""
    assert await store.ping() is True


async def test_store_reports_its_backend_and_ttl(backend: Backend) -> None:
    """`backend` and `ttl_s` describe the store for start-up lines and logs."""
    store = await backend.new(ttl_s=42)
    assert store.backend == backend.name
    assert store.ttl_s == 42


# --- fencing: lease tokens on every owner write ---------------------------------------------

LEASE_S = 10.0


async def test_a_stale_owners_write_is_refused_and_the_new_owners_progress_survives(
    backend: Backend,
) -> None:
    """A replica presumed dead comes back and writes with its old token: refused, nothing lost."""
    old_owner = await backend.new()
    new_owner = await backend.peer(old_owner)
    state = make_state()
    old_token = await old_owner.leases().claim(state.workflow_id, "old", lease_s=LEASE_S)
    assert old_token is not None
    assert await old_owner.save(state, token=old_token)

    await backend.elapse(old_owner, state.workflow_id, LEASE_S + 1)  # "old" froze
    assert await new_owner.leases().orphans() == [state.workflow_id]
    new_token = await new_owner.leases().claim(state.workflow_id, "new", lease_s=LEASE_S)
    assert new_token is not None and new_token > old_token
    progress = dataclasses.replace(state, owner="new", result={"by": "new"})
    assert await new_owner.save(progress, token=new_token)

    stale = dataclasses.replace(state, status=WorkflowStatus.FAILED, result={"by": "old"})
    with pytest.raises(LeaseLost) as refused:
        await old_owner.save(stale, token=old_token)
    assert refused.value.workflow_id == state.workflow_id
    assert refused.value.token == old_token
    with pytest.raises(LeaseLost):
        await old_owner.save(stale)  # no token at all: just as stale

    assert await new_owner.get(state.workflow_id) == progress
    # The new owner carries on; its terminal write is not blocked by the refused one.
    done = dataclasses.replace(progress, status=WorkflowStatus.COMPLETED)
    assert await new_owner.save(done, token=new_token)
    assert await old_owner.get(state.workflow_id) == done


async def test_a_token_that_was_never_handed_out_is_refused(store: StateStore) -> None:
    state = make_state()
    token = await store.leases().claim(state.workflow_id, "me", lease_s=LEASE_S)
    assert token is not None
    with pytest.raises(LeaseLost):
        await store.save(state, token=token + 1)
    assert await store.get(state.workflow_id) is None
    assert await store.save(state, token=token)


async def test_an_unclaimed_workflow_takes_writes_without_a_token(store: StateStore) -> None:
    """Without leases (a single engine, tests) a save needs no token; with one it must not."""
    state = make_state()
    assert await store.save(state)
    with pytest.raises(LeaseLost):
        await store.save(state, token=1)


async def test_concurrent_claims_hand_the_lease_to_exactly_one(backend: Backend) -> None:
    """Claim is one atomic operation: of many racing replicas exactly one wins, listed."""
    first = await backend.new()
    replicas = [first] + [await backend.peer(first) for _ in range(4)]
    workflow_id = new_id()

    tokens = await asyncio.gather(
        *(
            r.leases().claim(workflow_id, f"replica-{i}", lease_s=LEASE_S)
            for i, r in enumerate(replicas)
            for _ in range(3)
        )
    )

    assert [t for t in tokens if t is not None] == [1]
    await backend.elapse(first, workflow_id, LEASE_S + 1)
    assert await first.leases().orphans() == [workflow_id]


async def test_the_generation_expires_with_the_document(backend: Backend) -> None:
    """The fencing token lives exactly as long as the workflow's other keys."""
    store = await backend.new(ttl_s=100)
    state = make_state()
    token = await store.leases().claim(state.workflow_id, "me", lease_s=LEASE_S)
    assert await store.save(state, token=token)
    await store.leases().release(state.workflow_id, "me")

    await backend.elapse(store, state.workflow_id, 101)

    assert await store.get(state.workflow_id) is None
    assert await store.save(state)  # nothing left to fence against: a fresh workflow


# --- finish notifications ---------------------------------------------------------------------


async def test_a_terminal_write_notifies_finish_subscribers_on_every_replica(
    backend: Backend,
) -> None:
    """A waiter learns that a workflow ended from a notification, not by polling."""
    writer = await backend.new()
    waiter = await backend.peer(writer)
    finishes = await waiter.subscribe_finishes()
    state = make_state(status=WorkflowStatus.RUNNING)
    other = make_state(status=WorkflowStatus.RUNNING)

    await writer.save(state)  # not terminal: no notification
    await writer.save(dataclasses.replace(other, status=WorkflowStatus.CANCELLED))
    await writer.save(dataclasses.replace(state, status=WorkflowStatus.COMPLETED))
    await writer.save(dataclasses.replace(state, status=WorkflowStatus.FAILED))  # refused

    assert await next_id(finishes) == other.workflow_id
    assert await next_id(finishes) == state.workflow_id
    await waiter.close()
    async with asyncio.timeout(EVENT_TIMEOUT_S):
        assert [wid async for wid in finishes] == []


async def test_an_owner_writes_again_a_workflow_the_backend_lost_entirely(
    backend: Backend,
) -> None:
    """Every key of it gone (as after a Redis restart without persistence): the owner's
    next write recreates the document under its token, and fencing holds from there."""
    store = await backend.new(ttl_s=100)
    other = await backend.peer(store)
    state = make_state()
    token = await store.leases().claim(state.workflow_id, "owner", lease_s=LEASE_S)
    assert token is not None
    assert await store.save(state, token=token)

    await backend.elapse(store, state.workflow_id, 101)  # everything of it expired
    assert await store.get(state.workflow_id) is None
    assert await store.save(state, token=token)
    assert await other.get(state.workflow_id) == state

    newer = await other.leases().claim(state.workflow_id, "other", lease_s=LEASE_S)
    assert newer is not None and newer > token
    with pytest.raises(LeaseLost):
        await store.save(state, token=token)


# --- pause flag --------------------------------------------------------------------------------


async def test_pause_flag_is_set_cleared_and_seen_by_another_replica(backend: Backend) -> None:
    """set_pause(True) is visible through a peer; set_pause(False) clears it; doc untouched."""
    store = await backend.new()
    other = await backend.peer(store)
    state = make_state()
    await store.save(state)
    assert await other.pause_requested(state.workflow_id) is False
    await store.set_pause(state.workflow_id, True)
    assert await other.pause_requested(state.workflow_id) is True
    assert await store.get(state.workflow_id) == state
    await other.set_pause(state.workflow_id, False)
    assert await store.pause_requested(state.workflow_id) is False
    await other.set_pause(state.workflow_id, False)  # clearing twice is harmless
    assert await store.pause_requested(new_id()) is False


async def test_pause_flag_expires_with_its_document_and_saves_refresh_it(backend: Backend) -> None:
    """The pause flag shares the document's TTL: refreshed by saves, gone with the doc."""
    store = await backend.new(ttl_s=100)
    state = make_state()
    await store.save(state)
    await store.set_pause(state.workflow_id, True)
    await backend.elapse(store, state.workflow_id, 60)
    assert await store.save(state)
    await backend.elapse(store, state.workflow_id, 60)
    assert await store.pause_requested(state.workflow_id) is True
    await backend.elapse(store, state.workflow_id, 41)
    assert await store.pause_requested(state.workflow_id) is False
    assert await store.get(state.workflow_id) is None
