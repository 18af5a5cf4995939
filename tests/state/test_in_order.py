"""`in_order`: gather's answers and errors, without a task per coroutine."""

from __future__ import annotations

import asyncio
import inspect

import pytest

from state.redis_batch import in_order


async def _twice(value: asyncio.Future[int]) -> int:
    return 2 * await value


async def test_the_replies_come_in_the_order_given_like_gather() -> None:
    """Futures and coroutines, answered in any order: the same list gather gives."""
    loop = asyncio.get_running_loop()
    a, b, c = loop.create_future(), loop.create_future(), loop.create_future()
    waiting = asyncio.ensure_future(in_order(a, _twice(b), c))
    c.set_result(3)
    b.set_result(2)
    await asyncio.sleep(0)
    assert not waiting.done()
    a.set_result(1)
    assert await waiting == [1, 4, 3]


async def test_every_reply_is_read_before_the_first_error_is_raised() -> None:
    """A failed reply does not leave the later ones unread (no 'exception never
    retrieved'): they are awaited, then the first error is raised."""
    loop = asyncio.get_running_loop()
    a, b, c = loop.create_future(), loop.create_future(), loop.create_future()
    a.set_exception(KeyError("first"))
    b.set_exception(ValueError("second"))
    waiting = asyncio.ensure_future(in_order(a, b, c))
    await asyncio.sleep(0)
    assert not waiting.done()  # still waiting for c
    c.set_result(3)
    with pytest.raises(KeyError, match="first"):
        await waiting
    assert b.done() and isinstance(b.exception(), ValueError)


async def test_a_cancelled_caller_cancels_what_it_did_not_await_yet() -> None:
    """As gather cancels its children: the awaited future and the rest are cancelled, a
    coroutine not started is closed (no 'never awaited' warning)."""
    loop = asyncio.get_running_loop()
    a, b, c = loop.create_future(), loop.create_future(), loop.create_future()
    later = _twice(c)
    waiting = asyncio.ensure_future(in_order(a, b, later))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert a.cancelled() and b.cancelled()
    assert inspect.getcoroutinestate(later) == inspect.CORO_CLOSED
