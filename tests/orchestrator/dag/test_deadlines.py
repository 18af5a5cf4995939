"""One timer per run: scopes end their task's work at their deadline as asyncio.timeout does."""

from __future__ import annotations

import asyncio

import pytest

from orchestrator.dag.deadlines import Deadlines, Scope


async def _bounded(deadlines: Deadlines, when: float, work: asyncio.Future[None]) -> str:
    scope = deadlines.enter(when)
    try:
        await work
    except asyncio.CancelledError:
        if deadlines.leave(scope):
            return "timed out"
        raise
    deadlines.leave(scope)
    return "done"


async def test_a_scope_whose_deadline_comes_ends_its_work() -> None:
    """The task gets CancelledError; `leave` says it was the deadline's."""
    loop = asyncio.get_running_loop()
    deadlines = Deadlines(loop)
    never: asyncio.Future[None] = loop.create_future()
    assert await _bounded(deadlines, loop.time() + 0.01, never) == "timed out"
    assert asyncio.current_task() is not None
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
    deadlines.close()


async def test_work_that_ends_first_is_untouched_and_later_scopes_still_end() -> None:
    """A scope left early leaves the timer armed; when it fires it re-arms for the rest."""
    loop = asyncio.get_running_loop()
    deadlines = Deadlines(loop)
    done: asyncio.Future[None] = loop.create_future()
    done.set_result(None)
    assert await _bounded(deadlines, loop.time() + 0.005, done) == "done"
    never: asyncio.Future[None] = loop.create_future()
    assert await _bounded(deadlines, loop.time() + 0.02, never) == "timed out"
    deadlines.close()


async def test_an_earlier_deadline_entered_later_rearms_the_timer() -> None:
    """Scopes of several tasks: each ends at its own deadline, the earliest first."""
    loop = asyncio.get_running_loop()
    deadlines = Deadlines(loop)
    ended: list[str] = []

    async def one(name: str, after_s: float) -> None:
        never: asyncio.Future[None] = loop.create_future()
        ended.append(f"{name}: {await _bounded(deadlines, loop.time() + after_s, never)}")

    late = asyncio.create_task(one("late", 0.05))
    await asyncio.sleep(0)
    await asyncio.create_task(one("early", 0.005))
    await late
    assert ended == ["early: timed out", "late: timed out"]
    deadlines.close()


async def test_a_cancel_from_outside_is_not_mistaken_for_the_deadline() -> None:
    """Cancelled by someone else (before its deadline): CancelledError goes through."""
    loop = asyncio.get_running_loop()
    deadlines = Deadlines(loop)
    never: asyncio.Future[None] = loop.create_future()
    task = asyncio.create_task(_bounded(deadlines, loop.time() + 60, never))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    deadlines.close()


async def test_nested_scopes_that_expire_together_belong_to_the_outer() -> None:
    """As with nested asyncio.timeout: the outer scope owns a cancel both asked for."""
    loop = asyncio.get_running_loop()
    deadlines = Deadlines(loop)
    when = loop.time() + 0.01
    inner_result: list[bool] = []

    async def work() -> str:
        outer = deadlines.enter(when)
        try:
            inner = deadlines.enter(when)
            try:
                await loop.create_future()
            except asyncio.CancelledError:
                inner_result.append(deadlines.leave(inner))
                raise
        except asyncio.CancelledError:
            return "outer" if deadlines.leave(outer) else "neither"
        return "unreachable"

    assert await asyncio.create_task(work()) == "outer"
    assert inner_result == [False]
    deadlines.close()


async def test_the_workflow_deadline_calls_back_once() -> None:
    """`on_workflow` runs when the workflow's own deadline comes, with scopes around it."""
    loop = asyncio.get_running_loop()
    fired: asyncio.Future[int] = loop.create_future()
    deadlines = Deadlines(
        loop, workflow_at=loop.time() + 0.01, on_workflow=lambda: fired.set_result(1)
    )
    never: asyncio.Future[None] = loop.create_future()
    task = asyncio.create_task(_bounded(deadlines, loop.time() + 60, never))
    assert await fired == 1
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    deadlines.close()


async def test_close_cancels_the_timer() -> None:
    """After close nothing fires: the run is over."""
    loop = asyncio.get_running_loop()
    called: list[int] = []
    deadlines = Deadlines(loop, workflow_at=loop.time(), on_workflow=lambda: called.append(1))
    deadlines.close()
    scope = deadlines.enter(loop.time())
    assert isinstance(scope, Scope)
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert called == []
    assert deadlines.leave(scope) is False
