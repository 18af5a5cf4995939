"""Memory-only behaviour: lazy expiry sweeping, subscriber bookkeeping, closed store."""

from __future__ import annotations

import msgspec
import pytest

from state import keys
from state.layout import FieldCache, WriteStats, compacted
from state.memory import COMPRESS_FROM, MemoryStateStore
from state.models import NodeStatus, WorkflowStatus, encode
from state.store import LeaseLost
from tests.fakes import FakeClock
from tests.state.conftest import make_state, new_id


def _size(fields: dict[str, bytes]) -> int:
    """Bytes of stored fields (names and values), as the store's bounds count them."""
    return sum(len(k) + len(v) for k, v in fields.items())


async def test_expired_entries_are_swept_by_later_writes() -> None:
    """Workflows nobody reads again do not pile up: a later write drops them."""
    clock = FakeClock()
    store = MemoryStateStore(ttl_s=10, clock=clock)
    old = [make_state() for _ in range(5)]
    for state in old:
        await store.save(state)
        await store.request_cancel(state.workflow_id)
    await store.request_cancel(new_id())  # a flag with no document

    clock.advance(11)
    fresh = make_state()
    await store.save(fresh)

    assert store.size[0] == 1  # documents held: only the fresh one
    assert store._cancel_flags == {}  # no public view: asking would drop them lazily


async def test_expired_entry_is_dropped_on_access_before_any_sweep() -> None:
    """Reading an expired workflow removes it at once, and a new save starts afresh."""
    clock = FakeClock()
    store = MemoryStateStore(ttl_s=100, clock=clock)
    done = make_state(status=WorkflowStatus.COMPLETED)
    await store.save(done)
    clock.advance(100)

    assert await store.get(done.workflow_id) is None
    assert store.size == (0, 0)
    # The expired terminal copy no longer blocks a save under the same id.
    restarted = make_state(done.workflow_id, WorkflowStatus.RUNNING)
    assert await store.save(restarted) is True


async def test_closed_subscription_is_released_even_if_never_iterated() -> None:
    """aclose() on an unread stream unregisters it, so cancels no longer queue up for it."""
    store = MemoryStateStore()
    cancellations = await store.subscribe_cancellations()
    async with await store.subscribe_cancellations():
        assert len(store._subscribers) == 2
    await cancellations.aclose()
    assert store._subscribers == set()


async def test_closed_store_refuses_subscriptions_and_is_not_ready() -> None:
    """After close, ping is False and subscribing is an error, not a silent dead stream."""
    store = MemoryStateStore()
    await store.close()
    assert await store.ping() is False
    with pytest.raises(RuntimeError):
        await store.subscribe_cancellations()


def test_ttl_must_be_positive() -> None:
    """A zero TTL would expire every document at once: refused up front."""
    with pytest.raises(ValueError):
        MemoryStateStore(ttl_s=0)


async def test_finished_workflows_are_bounded_by_count_oldest_first() -> None:
    """Past max_workflows, the oldest finished documents go; running ones always stay."""
    store = MemoryStateStore(max_workflows=3)
    running = make_state()
    await store.save(running)
    finished = [make_state(status=WorkflowStatus.COMPLETED) for _ in range(4)]
    for state in finished:
        await store.save(state)
    assert await store.get(running.workflow_id) is not None
    kept = [await store.get(s.workflow_id) is not None for s in finished]
    assert kept == [False, False, True, True]
    assert store.size[0] == 3


async def test_finished_workflows_are_bounded_by_bytes() -> None:
    """max_bytes counts what is held: a small finished document uncompressed."""
    scratch = MemoryStateStore()
    probe = make_state(status=WorkflowStatus.FAILED)
    await scratch.save(probe)
    one = scratch.size[1]  # what one finished (compacted) workflow holds
    assert one == _size(compacted(probe, compress_from=COMPRESS_FROM))
    assert one > len(encode(msgspec.structs.replace(probe, definition=None)))  # plain JSON
    store = MemoryStateStore(max_bytes=int(one * 2.5))
    states = [make_state(status=WorkflowStatus.FAILED) for _ in range(5)]
    for state in states:
        await store.save(state)
    count, used = store.size
    assert count == 2 and used <= one * 2.5
    assert await store.get(states[-1].workflow_id) is not None
    assert await store.get(states[0].workflow_id) is None


async def test_running_size_matches_the_fields_held_after_every_write() -> None:
    """The size kept up to date write by write (partial writes, fields growing and
    shrinking, compaction, expiry) equals that of a store given each document whole."""
    clock = FakeClock()
    store = MemoryStateStore(ttl_s=100, retention_s=10, clock=clock)

    async def whole() -> tuple[int, int]:
        fresh = MemoryStateStore()
        for state in states:
            if await store.get(state.workflow_id) is not None:
                await fresh.save(state)
        return fresh.size

    states = [make_state() for _ in range(3)]
    for state in states:
        await store.save(state)
        assert store.size == await whole()
    for i, state in enumerate(states):
        state.steps["nlp"].output = {"intent": "x" * (50 * (i + 1))}
        state.result = {"rows": list(range(i))}
        state.steps["extra"] = msgspec.structs.replace(state.steps["nlp"], step_id="extra")
        await store.save(state)
        assert store.size == await whole()
        state.result = None  # smaller again
        await store.save(state)
        assert store.size == await whole()
    states[0].status = WorkflowStatus.COMPLETED
    await store.save(states[0])
    assert store.size == await whole()
    clock.advance(11)  # the finished one's retention is over; the others still run
    assert await store.get(states[0].workflow_id) is None
    assert store.size == await whole()
    assert store.size[0] == 2


async def test_finished_documents_are_kept_plain_unless_big() -> None:
    """A finished document under COMPRESS_FROM bytes is held as its JSON; a bigger one
    zlib-compressed; both read back whole, and the bytes held are those of that form."""
    store = MemoryStateStore()
    small = make_state(status=WorkflowStatus.COMPLETED)
    big = make_state(status=WorkflowStatus.COMPLETED)
    big.result = {"rows": [[f"region-{i}", i * 1.5] for i in range(COMPRESS_FROM // 16)]}
    forms = {}
    held = 0
    for state in (small, big):
        await store.save(state)
        assert await store.get(state.workflow_id) == msgspec.structs.replace(
            state, definition=None
        )
        form = compacted(state, compress_from=COMPRESS_FROM)
        forms[state.workflow_id] = set(form)
        assert store.size[1] - held == _size(form)
        held = store.size[1]
    assert forms[small.workflow_id] == {keys.DOC_FINAL_FIELD, keys.DOC_HEADER_FIELD}
    assert forms[big.workflow_id] == {keys.DOC_COMPACT_FIELD, keys.DOC_HEADER_FIELD}
    plain = compacted(big, compress_from=len(encode(big)) * 2)  # what it would be, plain
    assert _size(compacted(big, compress_from=COMPRESS_FROM)) < _size(plain)


async def test_bytes_bound_evicts_uncompressed_documents_by_their_plain_size() -> None:
    """With plain documents, max_bytes still keeps the newest that fit and drops the
    oldest finished first."""
    states = [make_state(status=WorkflowStatus.COMPLETED) for _ in range(6)]
    for state in states:
        state.result = {"text": "x" * 2000}  # plain: ~2 KB each, zlib would be ~100 bytes
    one = _size(compacted(states[0], compress_from=COMPRESS_FROM))
    store = MemoryStateStore(max_bytes=one * 3)
    for state in states:
        await store.save(state)
    count, used = store.size
    assert count == 3 and used <= one * 3
    kept = [await store.get(s.workflow_id) is not None for s in states]
    assert kept == [False, False, False, True, True, True]


async def test_write_stats_count_the_fields_and_bytes_each_save_sends() -> None:
    """The store sums a save's bytes while merging the fields in: the counts are those of
    the fields themselves (a first save whole, a transition its changes, the compaction)."""
    store = MemoryStateStore()
    state = make_state(status=WorkflowStatus.RUNNING)
    expected = WriteStats()
    cache = FieldCache()

    for status in (NodeStatus.RUNNING, NodeStatus.COMPLETED):
        if state.steps:
            run = next(iter(state.steps.values()))
            run.status = status
            run.output = {"rows": [1, 2, 3]} if status is NodeStatus.COMPLETED else None
        changes = cache.changes(state, full=not cache.knows(state.workflow_id))
        cache.remember(changes)
        expected.add(changes.fields)
        assert await store.save(state)
        assert store.write_stats == expected

    state.status = WorkflowStatus.COMPLETED
    expected.add(compacted(state, compress_from=COMPRESS_FROM))
    assert await store.save(state)
    assert store.write_stats == expected


@pytest.mark.parametrize("leased", [False, True])
async def test_accept_stores_what_a_first_save_stores(leased: bool) -> None:
    """`accept` writes its new document itself (not through `save`): the same fields,
    sizes, write stats and expiry of the workflow's other keys as a first `save`, and
    the document goes on like one (partial saves, then the terminal one)."""
    clock = FakeClock()
    by_accept = MemoryStateStore(ttl_s=100, clock=clock)
    by_save = MemoryStateStore(ttl_s=100, clock=clock)
    state = make_state(status=WorkflowStatus.PENDING)
    state.owner = "replica-a"
    for store in (by_accept, by_save):
        # Flags and events that exist before the document: the write refreshes their TTL.
        await store.request_cancel(state.workflow_id)
        await store.set_pause(state.workflow_id, True)
        await store.append_events(state.workflow_id, [{"type": "early"}])
    clock.advance(60)
    token = await by_accept.accept(state, lease_s=30.0 if leased else None)
    if leased:
        assert token is not None
        # The same claim, then the save `accept` used to make.
        assert await by_save.leases().claim(state.workflow_id, "replica-a", lease_s=30.0) == token
    await by_save.save(state, token=token)

    async def held(store: MemoryStateStore) -> tuple[object, ...]:
        return (store.size, store.write_stats, await store.get(state.workflow_id))

    assert await held(by_accept) == await held(by_save)
    clock.advance(60)  # past the flags' own TTL, within the document's
    for store in (by_accept, by_save):
        assert await store.cancel_requested(state.workflow_id)
        assert await store.pause_requested(state.workflow_id)
        assert await store.events_since(state.workflow_id) != []
    state.status = WorkflowStatus.RUNNING
    state.steps["nlp"].output = {"intent": "changed"}
    for store in (by_accept, by_save):
        assert await store.save(state, token=token) is True
    assert await held(by_accept) == await held(by_save)
    state.status = WorkflowStatus.COMPLETED
    for store in (by_accept, by_save):
        assert await store.save(state, token=token) is True
    assert await held(by_accept) == await held(by_save)


async def test_accept_refuses_an_existing_workflow_and_a_terminal_one_goes_through_save() -> None:
    store = MemoryStateStore()
    state = make_state(status=WorkflowStatus.PENDING)
    await store.accept(state)
    with pytest.raises(LeaseLost):
        await store.accept(state)
    done = make_state(status=WorkflowStatus.COMPLETED)
    assert await store.accept(done) is None
    stored = await store.get(done.workflow_id)
    assert stored is not None and stored.status is WorkflowStatus.COMPLETED
    assert await store.save(done) is False  # terminal already: as a save would have left it
