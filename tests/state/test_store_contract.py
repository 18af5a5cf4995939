"""The StateStore contract (state/store.py), one suite run against every backend."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Coroutine
from typing import Any, TypeVar, cast

import msgspec
import pytest

from state import keys
from state.cancellations import CancellationStream
from state.history import BadCursor, HistoryPage, HistoryQuery
from state.leases import Orphan
from state.models import HistoryEntry, NodeRun, NodeStatus, WorkflowState, WorkflowStatus
from state.store import LeaseLost, StateStore
from tests.state.conftest import Backend, make_state, new_id

TERMINAL = [s for s in WorkflowStatus if s.is_terminal]
T = TypeVar("T")

# Upper bound on waiting for an event that must happen; a hang fails, not a slow run.
# Generous: a hang fails, a slow (loaded) machine does not; 5 s was too tight under load.
EVENT_TIMEOUT_S = 30.0


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
    state.steps["new"] = NodeRun(step_id="new", kind="agent", agent="nlp")
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
    final = msgspec.structs.replace(state, steps=dict(state.steps))

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
    store = await backend.new(ttl_s=1000)
    state = make_state()
    await store.save(state)
    await store.request_cancel(state.workflow_id)

    # Redis keeps counting real time between the steps: 30 s of margin, so that a loaded
    # machine (a Cluster round trip can take seconds there) cannot expire it early.
    await backend.elapse(store, state.workflow_id, 970)
    assert await store.get(state.workflow_id) == state
    assert await store.cancel_requested(state.workflow_id) is True

    await backend.elapse(store, state.workflow_id, 30.5)
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
    store = await backend.new(ttl_s=1000)
    state = make_state()
    await store.save(state)
    await backend.elapse(store, state.workflow_id, 700)
    await store.request_cancel(state.workflow_id)

    # Redis keeps counting real time between the steps: 30 s of margin (1 s was not
    # enough for a Cluster on a loaded machine).
    await backend.elapse(store, state.workflow_id, 270)
    assert await store.cancel_requested(state.workflow_id) is True
    await backend.elapse(store, state.workflow_id, 31)
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
    assert store.backend == {"cluster": "redis-cluster"}.get(backend.name, backend.name)
    assert store.ttl_s == 42
    assert store.retention_s == 42  # retention defaults to the TTL


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
    assert await new_owner.leases().orphans() == [Orphan(state.workflow_id, "old")]
    new_token = await new_owner.leases().claim(
        state.workflow_id, "new", lease_s=LEASE_S, previous="old"
    )
    assert new_token is not None and new_token > old_token
    progress = msgspec.structs.replace(state, owner="new", result={"by": "new"})
    assert await new_owner.save(progress, token=new_token)

    stale = msgspec.structs.replace(state, status=WorkflowStatus.FAILED, result={"by": "old"})
    with pytest.raises(LeaseLost) as refused:
        await old_owner.save(stale, token=old_token)
    assert refused.value.workflow_id == state.workflow_id
    assert refused.value.token == old_token
    with pytest.raises(LeaseLost):
        await old_owner.save(stale)  # no token at all: just as stale

    assert await new_owner.get(state.workflow_id) == progress
    # The new owner carries on; its terminal write is not blocked by the refused one.
    done = msgspec.structs.replace(progress, status=WorkflowStatus.COMPLETED)
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

    winners = [t for t in tokens if t is not None]
    assert winners == [1]
    await backend.elapse(first, workflow_id, LEASE_S + 1)
    orphans = await first.leases().orphans()
    assert [o.workflow_id for o in orphans] == [workflow_id]


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


async def test_accept_claims_and_writes_a_new_workflow_in_one_operation(
    backend: Backend,
) -> None:
    """accept = claim + first save: the token is the first generation, the owner holds
    the lease (nobody else can claim it), the document is there, fenced by that token,
    and the workflow is listed under its owner (a takeover finds it if the owner dies)."""
    store = await backend.new()
    other = await backend.peer(store)
    state = make_state(status=WorkflowStatus.PENDING)
    state.owner = "owner"

    token = await store.accept(state, lease_s=LEASE_S)

    assert token == 1
    assert await other.get(state.workflow_id) == state
    assert await other.leases().claim(state.workflow_id, "other", lease_s=LEASE_S) is None
    with pytest.raises(LeaseLost):
        await store.save(state, token=token + 1)
    assert await store.save(msgspec.structs.replace(state, status=WorkflowStatus.RUNNING), token=1)
    await backend.elapse(store, state.workflow_id, LEASE_S + 1)  # "owner" froze
    assert await other.leases().orphans() == [Orphan(state.workflow_id, "owner")]
    taken = await other.leases().claim(
        state.workflow_id, "other", lease_s=LEASE_S, previous="owner"
    )
    assert taken == 2


async def test_accept_without_a_lease_writes_an_unfenced_workflow(store: StateStore) -> None:
    state = make_state(status=WorkflowStatus.PENDING)
    assert await store.accept(state) is None
    assert await store.get(state.workflow_id) == state
    assert await store.save(msgspec.structs.replace(state, status=WorkflowStatus.COMPLETED))


async def test_accept_refuses_an_id_that_exists(store: StateStore) -> None:
    """A new workflow's id is never taken: accept over a document, or over a lease claimed
    by someone else, writes nothing."""
    stored = make_state()
    assert await store.save(stored)
    with pytest.raises(LeaseLost):
        await store.accept(msgspec.structs.replace(stored, status=WorkflowStatus.PENDING))
    assert await store.get(stored.workflow_id) == stored

    claimed = make_state(status=WorkflowStatus.PENDING)
    claimed.owner = "me"
    assert await store.leases().claim(claimed.workflow_id, "someone", lease_s=LEASE_S) == 1
    with pytest.raises(LeaseLost):
        await store.accept(claimed, lease_s=LEASE_S)
    assert await store.get(claimed.workflow_id) is None


async def test_an_accepted_workflow_is_in_the_history(store: StateStore) -> None:
    state = make_state(status=WorkflowStatus.PENDING)
    await store.accept(state)
    page = await store.history(HistoryQuery(limit=10))
    assert [e.workflow_id for e in page.entries] == [state.workflow_id]


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
    unwatched = make_state(status=WorkflowStatus.RUNNING)

    for running in (state, other, unwatched):
        await writer.save(running)  # not terminal: no notification
    await waiter.watch_finish(state.workflow_id)
    await waiter.request_cancel(other.workflow_id)  # a cancel watches too
    # Nobody waits for this one: its finish costs no message at all.
    await writer.save(msgspec.structs.replace(unwatched, status=WorkflowStatus.COMPLETED))
    await writer.save(msgspec.structs.replace(other, status=WorkflowStatus.CANCELLED))
    await writer.save(msgspec.structs.replace(state, status=WorkflowStatus.COMPLETED))
    await writer.save(msgspec.structs.replace(state, status=WorkflowStatus.FAILED))  # refused

    # Two workflows, two slots: on a Cluster their messages may come in either order.
    got = {await next_id(finishes), await next_id(finishes)}
    assert got == {other.workflow_id, state.workflow_id}
    await waiter.close()
    async with asyncio.timeout(EVENT_TIMEOUT_S):
        assert [wid async for wid in finishes] == []


# --- writes proportional to the change ------------------------------------------------------


def _chain(nodes: int) -> WorkflowState:
    state = make_state(status=WorkflowStatus.RUNNING)
    state.definition = {"name": "big", "nodes": [{"id": f"n{i}", "agent": "nlp"}
                                                 for i in range(nodes)]}
    state.steps = {f"n{i}": NodeRun(step_id=f"n{i}", kind="agent", agent="nlp")
                   for i in range(nodes)}
    return state


async def _transition_cost(
    store: StateStore, state: WorkflowState, node_id: str
) -> tuple[int, int]:
    before = dataclasses.replace(store.write_stats)
    run = state.steps[node_id]
    run.status = NodeStatus.COMPLETED
    run.output = {"rows": [1, 2, 3]}
    assert await store.save(state)
    after = store.write_stats
    return after.fields - before.fields, after.nbytes - before.nbytes


@pytest.mark.parametrize("nodes", [3, 1000])
async def test_a_transition_writes_the_header_and_the_changed_step_only(
    store: StateStore, nodes: int
) -> None:
    """One node's transition sends two fields (header + that node's run), whatever the size;
    the definition went once, with the first save; reads still see the whole document."""
    state = _chain(nodes)
    assert await store.save(state)
    first = dataclasses.replace(store.write_stats)
    assert first.fields >= nodes + 3  # header, spec, order, result and every node's run

    fields, nbytes = await _transition_cost(store, state, "n1")

    assert fields == 2
    assert nbytes < 1_000
    assert await store.get(state.workflow_id) == state


async def test_transition_cost_does_not_grow_with_the_workflow(backend: Backend) -> None:
    small, big = await backend.new(), await backend.new()
    small_state, big_state = _chain(3), _chain(1000)
    assert await small.save(small_state)
    assert await big.save(big_state)
    _, small_bytes = await _transition_cost(small, small_state, "n2")
    _, big_bytes = await _transition_cost(big, big_state, "n2")
    assert big_bytes - small_bytes < 20  # digits of timestamps and ids, nothing per node


async def test_a_step_that_changes_while_its_write_is_in_flight_is_written_next_time(
    store: StateStore,
) -> None:
    """What a save remembers as written is what it sent, not what the state became
    while the write was in flight (a step finishing meanwhile)."""
    state = _chain(3)
    assert await store.save(state)
    state.steps["n0"].status = NodeStatus.RUNNING
    saving = asyncio.create_task(store.save(state))
    await asyncio.sleep(0)  # the save has serialised the state and is waiting on the backend
    state.steps["n0"].status = NodeStatus.COMPLETED
    assert await saving
    assert await store.save(state)
    assert await store.get(state.workflow_id) == state


async def test_a_store_that_never_wrote_the_workflow_writes_it_whole(backend: Backend) -> None:
    """A replica that took a workflow over knows nothing of what was written: its first
    save sends everything, and the document reads back whole."""
    writer = await backend.new()
    taker = await backend.peer(writer)
    state = _chain(5)
    assert await writer.save(state)
    state.steps["n0"].status = NodeStatus.COMPLETED
    assert await taker.save(state)
    assert await writer.get(state.workflow_id) == state


async def test_a_partial_write_of_an_expired_document_is_sent_whole(backend: Backend) -> None:
    store = await backend.new(ttl_s=10)
    state = _chain(4)
    assert await store.save(state)
    await backend.elapse(store, state.workflow_id, 11)
    state.steps["n3"].status = NodeStatus.RUNNING
    assert await store.save(state)
    assert await store.get(state.workflow_id) == state


# --- terminal compaction and retention ------------------------------------------------------


async def test_a_finished_workflow_is_compacted_and_kept_for_the_retention(
    backend: Backend,
) -> None:
    """A terminal write keeps what status needs (not the client's definition) for
    `retention_s`, apart from the running TTL."""
    store = await backend.new(ttl_s=100, retention_s=10)
    running, finished = _chain(3), _chain(3)
    assert await store.save(running)
    assert await store.save(finished)
    done = msgspec.structs.replace(finished, status=WorkflowStatus.COMPLETED, result={"ok": 1})
    assert await store.save(done)

    stored = await store.get(done.workflow_id)
    assert stored == msgspec.structs.replace(done, definition=None)
    assert (await store.get(running.workflow_id)) == running  # a running one keeps it

    await backend.elapse(store, done.workflow_id, 11)
    await backend.elapse(store, running.workflow_id, 11)
    assert await store.get(done.workflow_id) is None
    assert await store.get(running.workflow_id) == running


# --- history --------------------------------------------------------------------------------


async def _submitted(
    store: StateStore, n: int, *, tenant: str | None = None, name: str = "chain"
) -> list[WorkflowState]:
    made = []
    for i in range(n):
        state = make_state(status=WorkflowStatus.RUNNING)
        state.created_at = 1_700_000_000.0 + i
        state.definition_name = name
        state.tenant = tenant
        assert await store.save(state)
        made.append(state)
    return made


async def test_history_lists_newest_first_across_pages(store: StateStore) -> None:
    """Pages follow an opaque cursor; together they list every workflow once, newest first."""
    made = await _submitted(store, 7)
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        page = await store.history(HistoryQuery(limit=3, cursor=cursor))
        assert len(page.entries) <= 3
        seen += [e.workflow_id for e in page.entries]
        cursor = page.cursor
        if cursor is None:
            break
    assert seen == [s.workflow_id for s in reversed(made)]


async def test_a_new_workflow_does_not_shift_a_followed_cursor(store: StateStore) -> None:
    made = await _submitted(store, 4)
    page = await store.history(HistoryQuery(limit=2))
    newer = make_state()
    newer.created_at = 1_800_000_000.0
    assert await store.save(newer)
    rest = await store.history(HistoryQuery(limit=10, cursor=page.cursor))
    assert [e.workflow_id for e in rest.entries] == [made[1].workflow_id, made[0].workflow_id]


async def test_history_filters_by_status_definition_time_and_tenant(store: StateStore) -> None:
    mine = await _submitted(store, 3, tenant="a", name="chain")
    theirs = await _submitted(store, 2, tenant="b", name="report")
    done = msgspec.structs.replace(mine[0], status=WorkflowStatus.COMPLETED)
    assert await store.save(done)

    def ids(page: HistoryPage) -> set[str]:
        return {e.workflow_id for e in page.entries}

    by_status = await store.history(HistoryQuery(status=frozenset({"completed"})))
    assert ids(by_status) == {done.workflow_id}
    by_name = await store.history(HistoryQuery(definition="report"))
    assert ids(by_name) == {s.workflow_id for s in theirs}
    window = await store.history(HistoryQuery(since=1_700_000_001.0, until=1_700_000_002.0))
    assert ids(window) == {mine[1].workflow_id, theirs[1].workflow_id}
    tenant_a = await store.history(HistoryQuery(tenant="a", all_tenants=False))
    assert ids(tenant_a) == {s.workflow_id for s in mine}
    entry = next(e for e in by_status.entries)
    assert entry.status == "completed" and entry.definition_name == "chain"
    assert isinstance(entry, HistoryEntry)  # the header's fields only: no steps, no definition


async def test_a_sparse_filter_still_pages_within_its_scan_budget(store: StateStore) -> None:
    """A page examines at most `scan_budget` entries: it may come back short, with a cursor."""
    wanted = await _submitted(store, 1, name="rare")
    await _submitted(store, 6, name="common")
    query = HistoryQuery(limit=5, definition="rare", scan_budget=3)
    found: list[str] = []
    page = await store.history(query)
    for _ in range(10):
        found += [e.workflow_id for e in page.entries]
        if page.cursor is None:
            break
        page = await store.history(dataclasses.replace(query, cursor=page.cursor))
    assert found == [wanted[0].workflow_id]


async def test_a_forged_cursor_is_refused(store: StateStore) -> None:
    with pytest.raises(BadCursor):
        await store.history(HistoryQuery(cursor="not-a-cursor!"))


async def test_history_entries_expire_with_their_workflows(backend: Backend) -> None:
    store = await backend.new(ttl_s=100, retention_s=10)
    kept, gone = await _submitted(store, 2)
    assert await store.save(msgspec.structs.replace(gone, status=WorkflowStatus.FAILED))
    await backend.elapse(store, gone.workflow_id, 11)
    page = await store.history(HistoryQuery())
    assert [e.workflow_id for e in page.entries] == [kept.workflow_id]


async def test_history_is_the_same_from_another_replica(backend: Backend) -> None:
    store = await backend.new()
    other = await backend.peer(store)
    made = await _submitted(store, 3)
    page = await other.history(HistoryQuery())
    assert [e.workflow_id for e in page.entries] == [s.workflow_id for s in reversed(made)]


# --- idempotent submits ---------------------------------------------------------------------


async def test_a_submit_key_is_taken_once_across_replicas(backend: Backend) -> None:
    first = await backend.new()
    replicas = [first] + [await backend.peer(first) for _ in range(3)]
    key = new_id()
    answers = await asyncio.gather(
        *(
            r.reserve_submit("t", key, workflow_id=f"w{i}", digest="d")
            for i, r in enumerate(replicas)
        )
    )
    winners = [i for i, a in enumerate(answers) if a is None]
    assert len(winners) == 1
    assert all(a == (f"w{winners[0]}", "d") for a in answers if a is not None)


async def test_a_released_submit_key_can_be_taken_again(store: StateStore) -> None:
    key = new_id()
    assert await store.reserve_submit("t", key, workflow_id="w1", digest="d") is None
    assert await store.reserve_submit("other-tenant", key, workflow_id="w9", digest="z") is None
    await store.release_submit("t", key, workflow_id="other")  # not its holder: kept
    assert await store.reserve_submit("t", key, workflow_id="w2", digest="e") == ("w1", "d")
    await store.release_submit("t", key, workflow_id="w1")
    assert await store.reserve_submit("t", key, workflow_id="w2", digest="e") is None


async def test_a_submit_key_expires_with_its_workflow(backend: Backend) -> None:
    """The key lives the running TTL, then the retention from the workflow's terminal write."""
    store = await backend.new(ttl_s=100, retention_s=10)
    key = new_id()
    state = make_state(status=WorkflowStatus.RUNNING)
    state.submit_key, state.tenant = key, "t"
    assert await store.reserve_submit("t", key, workflow_id=state.workflow_id, digest="d") is None
    assert await store.save(state)
    assert await store.save(msgspec.structs.replace(state, status=WorkflowStatus.COMPLETED))
    submit_key = keys.submit_key(getattr(store, "prefix", ""), "t", key)
    await backend.elapse_key(store, submit_key, 9)
    assert await store.reserve_submit("t", key, workflow_id="again", digest="d") == (
        state.workflow_id, "d"
    )
    await backend.elapse_key(store, submit_key, 2)
    assert await store.reserve_submit("t", key, workflow_id="again", digest="d") is None


# --- owner-addressed cancels and per-replica liveness ---------------------------------------


async def test_a_cancel_reaches_the_owner_only(backend: Backend) -> None:
    """Only the replica that owns a workflow hears its cancel; the others hear nothing."""
    first = await backend.new()
    owner_view = await backend.peer(first)
    bystander_view = await backend.peer(first)
    owner = await owner_view.subscribe_cancellations("owner")
    bystander = await bystander_view.subscribe_cancellations("bystander")
    state = make_state()
    token = await owner_view.leases().claim(state.workflow_id, "owner", lease_s=LEASE_S)
    assert await owner_view.save(state, token=token)
    other = make_state()
    other_token = await bystander_view.leases().claim(
        other.workflow_id, "bystander", lease_s=LEASE_S
    )
    assert await bystander_view.save(other, token=other_token)

    await first.request_cancel(state.workflow_id)
    await first.request_cancel(other.workflow_id)

    assert await next_id(owner) == state.workflow_id
    assert await next_id(bystander) == other.workflow_id  # its own, not the owner's
    await owner.aclose()
    await bystander.aclose()


async def test_a_dead_replicas_workflow_is_taken_over_by_one_survivor(backend: Backend) -> None:
    """Liveness is per replica: once its heartbeat lapses, one survivor finds its
    workflows, claims them naming it, and they resume under a greater token."""
    dead = await backend.new()
    survivors = [await backend.peer(dead) for _ in range(3)]
    state = make_state()
    old = await dead.leases().claim(state.workflow_id, "dead", lease_s=LEASE_S)
    assert await dead.save(state, token=old)
    for i, survivor in enumerate(survivors):
        await survivor.leases().renew({}, f"survivor-{i}", lease_s=LEASE_S * 100)

    await backend.elapse(dead, state.workflow_id, LEASE_S + 1)
    found = await asyncio.gather(*(s.leases().orphans(lease_s=LEASE_S) for s in survivors))

    assert sorted(len(f) for f in found) == [0, 0, 1]
    taker = next(i for i, f in enumerate(found) if f)
    new = await survivors[taker].leases().claim(
        state.workflow_id, f"survivor-{taker}", lease_s=LEASE_S, previous="dead"
    )
    assert new is not None and old is not None and new > old
    await survivors[taker].leases().bury("dead")
    assert await survivors[taker].get(state.workflow_id) == state

async def test_an_owner_writes_again_a_workflow_the_backend_lost_entirely(
    backend: Backend,
) -> None:
    """Every key of it gone (as after a Redis restart without persistence): the owner's
    next write recreates the document under its token, and fencing holds from there."""
    store = await backend.new(ttl_s=100)
    other = await backend.peer(store)
    state = make_state()
    state.owner = "owner"  # the document names its owner: that is who is restored
    token = await store.leases().claim(state.workflow_id, "owner", lease_s=LEASE_S)
    assert token is not None
    assert await store.save(state, token=token)

    await backend.elapse(store, state.workflow_id, 101)  # everything of it expired
    assert await store.get(state.workflow_id) is None
    assert await store.save(state, token=token)
    assert await other.get(state.workflow_id) == state

    # A survivor that found "owner" dead takes it over, naming it.
    newer = await other.leases().claim(
        state.workflow_id, "other", lease_s=LEASE_S, previous="owner"
    )
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


# --- completes_in_turn -------------------------------------------------------------------


def _one_step(operation: Coroutine[Any, Any, T]) -> T:
    """Drive `operation` a single step: it must finish without suspending (raising
    StopIteration with its result) — what `completes_in_turn` promises."""
    try:
        operation.send(None)
    except StopIteration as done:
        return cast(T, done.value)
    operation.close()
    raise AssertionError(f"{operation!r} suspended its caller")


async def test_a_store_completing_in_turn_never_suspends_its_caller(store: StateStore) -> None:
    """`completes_in_turn` is a promise the lifecycle relies on (it awaits accept in its
    caller's task, and puts no turn before housekeeping): every operation, driven one step, is
    finished. A store that may suspend says False, and its operations do suspend."""
    if not store.completes_in_turn:
        # A network store: its operations wait on I/O, so a callback scheduled before
        # one is awaited runs before it returns.
        ran: list[bool] = []
        asyncio.get_running_loop().call_soon(ran.append, True)
        await store.get(new_id())
        assert ran == [True]
        return
    state = make_state(status=WorkflowStatus.PENDING)
    state.owner = "owner"
    wid = state.workflow_id
    leases = store.leases()
    assert _one_step(store.accept(state, lease_s=LEASE_S)) == 1
    running = msgspec.structs.replace(state, status=WorkflowStatus.RUNNING)
    assert _one_step(store.save(running, token=1)) is True
    assert _one_step(store.get(wid)) == running
    _one_step(store.request_cancel(wid))
    assert _one_step(store.cancel_requested(wid)) is True
    _one_step(store.set_pause(wid, True))
    assert _one_step(store.pause_requested(wid)) is True
    _one_step(store.watch_finish(wid))
    assert _one_step(store.append_event(wid, {"type": "a"})) == 1
    assert _one_step(store.append_events(wid, [{"type": "b"}, {"type": "c"}])) == 3
    assert [e["type"] for _, e in _one_step(store.events_since(wid))] == ["a", "b", "c"]
    assert _one_step(store.reserve_submit(None, "k", workflow_id=wid, digest="d")) is None
    _one_step(store.release_submit(None, "k", workflow_id=wid))
    assert _one_step(store.history(HistoryQuery())).entries
    assert _one_step(leases.renew({wid: 1}, "owner", lease_s=LEASE_S)) == {wid}
    assert _one_step(leases.orphans(lease_s=LEASE_S)) == []
    _one_step(leases.release(wid, "owner"))
    _one_step(leases.bury("nobody"))
    other = make_state()
    assert _one_step(leases.claim(other.workflow_id, "owner", lease_s=LEASE_S)) is not None
    finished = msgspec.structs.replace(running, status=WorkflowStatus.COMPLETED)
    assert _one_step(store.save(finished, token=1)) is True
    assert _one_step(store.ping()) is True
