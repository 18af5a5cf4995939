"""A cap on the shared CapTimer behaves as asyncio.timeout does, case by case (the agent
client's attempt cap), and many caps share the one timer correctly."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest

from circuit.cap import CapTimer

# Each runner awaits `work` under a limit of `delay_s` and says how it ended.
Runner = Callable[[Awaitable[str], float], Coroutine[Any, Any, str]]


async def with_timeout(work: Awaitable[str], delay_s: float) -> str:
    try:
        async with asyncio.timeout(delay_s):
            return await work
    except TimeoutError:
        return "timeout"


async def with_cap(work: Awaitable[str], delay_s: float, timer: CapTimer | None = None) -> str:
    cap = (timer or CapTimer()).start(delay_s)
    try:
        result = await work
    except BaseException as exc:
        if cap.stop(exc):
            return "timeout"
        raise
    cap.stop(None)
    return result


# A timer that already holds a cap far off (armed there), as the client's usually does.
_SHARED = CapTimer()


async def with_shared_cap(work: Awaitable[str], delay_s: float) -> str:
    async def far() -> str:
        return await with_cap(_never(), 3600.0, _SHARED)

    other = asyncio.create_task(far())
    await asyncio.sleep(0)  # the far cap is armed first
    try:
        return await with_cap(work, delay_s, _SHARED)
    finally:
        other.cancel()
        await asyncio.gather(other, return_exceptions=True)


async def with_cap_at(work: Awaitable[str], delay_s: float) -> str:
    """A cap at a deadline on the loop's clock (start_at: the DAG engine's workflow deadline)."""
    timer = CapTimer()
    cap = timer.start_at(asyncio.get_running_loop().time() + delay_s)
    try:
        result = await work
    except BaseException as exc:
        if cap.stop(exc):
            return "timeout"
        raise
    cap.stop(None)
    return result


async def with_cap_at_on_task(work: Awaitable[str], delay_s: float) -> str:
    """start_at told the current task (the DAG engine holds its workflow's)."""
    timer = CapTimer()
    when = asyncio.get_running_loop().time() + delay_s
    cap = timer.start_at(when, task=asyncio.current_task())
    try:
        result = await work
    except BaseException as exc:
        if cap.stop(exc):
            return "timeout"
        raise
    cap.stop(None)
    return result


RUNNERS = pytest.mark.parametrize(
    "runner",
    [with_timeout, with_cap, with_shared_cap, with_cap_at, with_cap_at_on_task],
    ids=["timeout", "cap", "shared-cap", "cap-at", "cap-at-on-task"],
)


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
        CapTimer().start(1.0)

    coroutine = no_task()
    with pytest.raises(RuntimeError):  # no loop, no task
        coroutine.send(None)
    coroutine.close()


async def test_caps_of_many_tasks_each_end_at_their_own_limit() -> None:
    """One timer: an earlier cap re-arms it, a later one waits its turn, and a cap that
    ended early only makes the timer fire for nothing once."""
    timer = CapTimer()
    entered = asyncio.Event()

    async def hang() -> str:
        entered.set()
        return await _never()

    far = asyncio.create_task(with_cap(hang(), 3600.0, timer))
    await entered.wait()
    assert await with_cap(_at_once(), 0.001, timer) == "done"  # armed early, left early
    assert await with_cap(_never(), 0.002, timer) == "timeout"  # fires for it
    soon = [asyncio.create_task(with_cap(_never(), 0.0, timer)) for _ in range(3)]
    assert await asyncio.gather(*soon) == ["timeout"] * 3
    assert not far.done()  # still within its limit
    far.cancel()
    with pytest.raises(asyncio.CancelledError):
        await far


def test_a_timer_serves_one_loop_after_another() -> None:
    """A new event loop (a test's, a restarted service's) starts the timer afresh."""
    timer = CapTimer()
    for _ in range(2):
        assert asyncio.run(with_cap(_never(), 0.0, timer)) == "timeout"
        assert asyncio.run(with_cap(_at_once(), 60.0, timer)) == "done"


# -- nested caps: one nested in an earlier (or equal) one of the same task is covered ----


async def nested_timeouts(outer_at: float, inner_at: float, work: Awaitable[str]) -> str:
    """Nested `asyncio.timeout_at`s: which of them ended the work (the reference)."""
    try:
        async with asyncio.timeout_at(outer_at):
            try:
                async with asyncio.timeout_at(inner_at):
                    return await work
            except TimeoutError:
                return "inner"
    except TimeoutError:
        return "outer"


async def nested_caps(outer_at: float, inner_at: float, work: Awaitable[str]) -> str:
    """The same with caps of two timers (the DAG engine's, around the agent client's)."""
    outer = CapTimer().start_at(outer_at)
    try:
        inner = CapTimer().start_at(inner_at)
        try:
            result = await work
        except BaseException as exc:
            if inner.stop(exc):
                result = "inner"
            else:
                raise
        else:
            inner.stop(None)
    except BaseException as exc:
        if outer.stop(exc):
            return "outer"
        raise
    outer.stop(None)
    return result


@pytest.mark.parametrize("nest", [nested_timeouts, nested_caps], ids=["timeout", "cap"])
@pytest.mark.parametrize(
    ("outer_s", "inner_s", "ended_by"),
    [
        (0.0, 3600.0, "outer"),  # the inner cap is covered: the outer one fires
        (0.0, 0.0, "outer"),  # the same instant: the outer one, as asyncio.timeout says
        (3600.0, 0.0, "inner"),  # nearer than the outer one: the inner one fires
        (3600.0, 7200.0, "done"),
    ],
)
async def test_nested_caps_end_as_nested_timeouts_do(
    nest: Callable[[float, float, Awaitable[str]], Coroutine[Any, Any, str]],
    outer_s: float,
    inner_s: float,
    ended_by: str,
) -> None:
    """Whichever limit is nearer ends the work; at the same instant the outer one does."""
    now = asyncio.get_running_loop().time()
    work = _at_once() if ended_by == "done" else _never()
    assert await nest(now + outer_s, now + inner_s, work) == ended_by
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_a_stopped_inner_cap_covers_nothing_after_it() -> None:
    """After an inner cap ends, the one around it is the task's innermost again: a cap
    started next is compared with that one, not with the one that ended."""
    now = asyncio.get_running_loop().time()
    outer = CapTimer().start_at(now + 3600.0)
    assert await with_cap_at_when(_at_once(), now) == "done"
    # Later than the ended cap, earlier than the outer one: it must fire itself.
    assert await with_cap_at_when(_never(), now + 0.001) == "timeout"
    assert not outer.stop(None)


async def test_a_cap_that_has_fired_covers_nothing() -> None:
    """A cancel of a cap that fired was swallowed (not our code's way, but possible): a
    cap started after it still ends its own await."""
    outer = CapTimer().start_at(asyncio.get_running_loop().time())
    try:
        await _never()
    except asyncio.CancelledError:
        assert await with_cap_at_when(_never(), asyncio.get_running_loop().time()) == "timeout"
    assert not outer.stop(None)
    asyncio.current_task().uncancel()  # type: ignore[union-attr]


async def with_cap_at_when(work: Awaitable[str], when: float) -> str:
    cap = CapTimer().start_at(when)
    try:
        result = await work
    except BaseException as exc:
        if cap.stop(exc):
            return "timeout"
        raise
    cap.stop(None)
    return result


_HELD: contextvars.ContextVar[object] = contextvars.ContextVar("held")


class _Workflow:
    """Stands for what a workflow's context holds (its event recorder, its store)."""


async def test_the_armed_timer_keeps_nothing_of_the_task_that_armed_it_alive() -> None:
    """A cap that ends early leaves the shared timer armed (up to a whole deadline): the
    timer must not hold the context of the task that armed it, or that task's workflow,
    and everything it reaches, lives on until the timer fires."""
    timer = CapTimer()

    async def one_call(workflow: _Workflow) -> str:
        _HELD.set(workflow)
        return await with_cap(_at_once(), 3600.0, timer)

    workflow = _Workflow()
    gone = weakref.ref(workflow)
    # The cap ended at once; the timer stays armed for its limit, an hour away.
    assert await asyncio.create_task(one_call(workflow)) == "done"
    del workflow
    await asyncio.sleep(0)  # the ended task's own callbacks (in its context) have run
    gc.collect()
    assert gone() is None


def _counting_loop_lookups(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the calls of `asyncio.get_running_loop` (each one a getpid system call)."""
    asked = [0]
    real = asyncio.events.get_running_loop

    def counting() -> asyncio.AbstractEventLoop:
        asked[0] += 1
        return real()

    monkeypatch.setattr(asyncio.events, "get_running_loop", counting)
    return asked


async def test_a_timer_finds_the_task_without_asking_for_the_running_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Once a timer has served the running loop, its caps (covered ones too) find their
    task without `asyncio.get_running_loop`: a system call per cap was ~0.4 us, four
    per chain workflow. The client's caps are covered by the DAG engine's as a rule, so
    a covered first cap teaches its timer the loop as well."""
    engine = CapTimer().start(3600.0)
    client = CapTimer()
    client.start(7200.0).stop(None)  # covered by the engine's cap
    asked = _counting_loop_lookups(monkeypatch)
    covered = client.start(7200.0)
    assert not covered.stop(None)
    assert await with_cap(_at_once(), 60.0, client) == "done"  # the task's own, armed
    assert asked == [0]
    assert not engine.stop(None)


def test_a_timer_of_a_loop_that_is_gone_finds_the_next_loops_task() -> None:
    """The loop a timer served is not running any more (a new loop since): the current
    task is asked for the usual way, and its caps still end their own awaits."""
    timer = CapTimer()
    for _ in range(2):
        assert asyncio.run(with_cap(_at_once(), 60.0, timer)) == "done"
        assert asyncio.run(with_cap(_never(), 0.0, timer)) == "timeout"
