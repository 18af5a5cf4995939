"""Cap behaves as asyncio.timeout does, case by case (the client's attempt cap)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest

from circuit.cap import Cap

# Each runner awaits `work` under a limit of `delay_s` and says how it ended.
Runner = Callable[[Awaitable[str], float], Coroutine[Any, Any, str]]


async def with_timeout(work: Awaitable[str], delay_s: float) -> str:
    try:
        async with asyncio.timeout(delay_s):
            return await work
    except TimeoutError:
        return "timeout"


async def with_cap(work: Awaitable[str], delay_s: float) -> str:
    cap = Cap(delay_s)
    try:
        result = await work
    except BaseException as exc:
        if cap.stop(exc):
            return "timeout"
        raise
    cap.stop(None)
    return result


RUNNERS = pytest.mark.parametrize("runner", [with_timeout, with_cap], ids=["timeout", "cap"])


async def _never() -> str:
    await asyncio.Event().wait()
    return "never"


async def _at_once() -> str:
    return "done"


@RUNNERS
async def test_work_that_finishes_in_time_returns_and_leaves_no_cancel(runner: Runner) -> None:
    """Finished before the limit: the result, and the task is not cancelled later."""
    assert await runner(_at_once(), 60.0) == "done"
    await asyncio.sleep(0)  # a stray cancel would land here
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


@RUNNERS
async def test_work_past_the_limit_is_a_timeout(runner: Runner) -> None:
    """Past the limit: TimeoutError (here "timeout"), and the task is not left cancelling."""
    assert await runner(_never(), 0.0) == "timeout"
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


@RUNNERS
async def test_a_cancel_from_outside_stays_a_cancellation(runner: Runner) -> None:
    """Cancelled by someone else under a far limit: CancelledError, not a timeout."""
    entered = asyncio.Event()

    async def hang() -> str:
        entered.set()
        return await _never()

    task = asyncio.create_task(runner(hang(), 60.0))
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@RUNNERS
async def test_a_cancel_from_outside_as_the_limit_fires_stays_a_cancellation(
    runner: Runner,
) -> None:
    """The limit fires and someone else cancels in the same turn: still a cancellation."""
    entered = asyncio.Event()

    async def hang() -> str:
        entered.set()
        return await _never()

    task = asyncio.create_task(runner(hang(), 0.0))
    await entered.wait()  # the limit's timer is due: it fires in the same turn as this cancel
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@RUNNERS
async def test_an_error_of_the_work_passes_through(runner: Runner) -> None:
    async def broken() -> str:
        raise KeyError("agent")

    with pytest.raises(KeyError):
        await runner(broken(), 60.0)


def test_a_cap_works_only_inside_a_task() -> None:
    async def no_task() -> None:
        Cap(1.0)

    coroutine = no_task()
    with pytest.raises(RuntimeError):  # no loop, no task
        coroutine.send(None)
    coroutine.close()
