"""Bulkhead: a counter while a slot is free; a first-come, first-served line when not."""

from __future__ import annotations

import asyncio

import pytest

from circuit.bulkhead import Bulkhead


async def _settle() -> None:
    """Let every ready task run until it next waits."""
    for _ in range(5):
        await asyncio.sleep(0)


def test_a_free_slot_is_taken_at_once_and_none_past_the_limit() -> None:
    """try_acquire takes free slots synchronously and refuses past the limit."""
    bulkhead = Bulkhead(2)
    assert bulkhead.try_acquire() and bulkhead.try_acquire()
    assert not bulkhead.try_acquire()
    bulkhead.release()
    assert bulkhead.try_acquire()


def test_a_bulkhead_needs_a_slot() -> None:
    with pytest.raises(ValueError, match="at least one slot"):
        Bulkhead(0)


async def test_waiters_get_released_slots_in_arrival_order() -> None:
    """A released slot goes to the oldest waiter, and nobody overtakes the line."""
    bulkhead = Bulkhead(1)
    assert bulkhead.try_acquire()
    order: list[int] = []

    async def wait(n: int) -> None:
        await bulkhead.acquire()
        order.append(n)

    tasks = [asyncio.create_task(wait(n)) for n in range(3)]
    await _settle()
    assert not bulkhead.try_acquire()  # the slot is not free while others wait
    for expected in range(3):
        bulkhead.release()
        await _settle()
        assert order == list(range(expected + 1))
    await asyncio.gather(*tasks)
    bulkhead.release()
    assert bulkhead.try_acquire()  # every slot came back


async def test_a_waiter_cancelled_in_line_leaks_nothing() -> None:
    """Cancelling a queued waiter removes it; the slot goes to the next one."""
    bulkhead = Bulkhead(1)
    assert bulkhead.try_acquire()
    first = asyncio.create_task(bulkhead.acquire())
    second = asyncio.create_task(bulkhead.acquire())
    await _settle()
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    bulkhead.release()
    await second  # handed the slot, past the cancelled one
    bulkhead.release()
    assert bulkhead.try_acquire()
    assert not bulkhead.try_acquire()


async def test_a_waiter_cancelled_after_it_was_handed_a_slot_passes_it_on() -> None:
    """Handed a slot and cancelled before it resumed: the slot goes to the next waiter."""
    bulkhead = Bulkhead(1)
    assert bulkhead.try_acquire()
    first = asyncio.create_task(bulkhead.acquire())
    second = asyncio.create_task(bulkhead.acquire())
    await _settle()
    bulkhead.release()  # hands the slot to `first`...
    first.cancel()  # ...which is cancelled before it runs again
    with pytest.raises(asyncio.CancelledError):
        await first
    await second
    bulkhead.release()
    assert bulkhead.try_acquire()
    assert not bulkhead.try_acquire()


async def test_a_release_may_drop_a_cancelled_waiter_before_it_cleans_up() -> None:
    """A waiter cancelled, then skipped by a release before it runs, still ends cleanly."""
    bulkhead = Bulkhead(1)
    assert bulkhead.try_acquire()
    first = asyncio.create_task(bulkhead.acquire())
    await _settle()
    first.cancel()  # cancels its future now; the task runs its cleanup later
    bulkhead.release()  # skips the cancelled waiter: the slot is free again
    with pytest.raises(asyncio.CancelledError):
        await first
    assert bulkhead.try_acquire()
    assert not bulkhead.try_acquire()


async def test_a_timeout_on_the_wait_frees_the_place_in_line() -> None:
    """A wait bounded by asyncio.timeout (as the client bounds it) leaves nothing behind."""
    bulkhead = Bulkhead(1)
    assert bulkhead.try_acquire()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0):
            await bulkhead.acquire()
    bulkhead.release()
    assert bulkhead.try_acquire()
