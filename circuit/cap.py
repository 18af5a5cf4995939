"""Time limits on one await each, for many tasks at once, on one timer of the event loop.

The agent client caps every attempt that has a deadline. `asyncio.timeout()` would
arm a timer of the event loop for each and cancel it after (a heap push, a handle, a
copy of the context: ~3 us of CPU), and is an async context manager on top (two
coroutine calls). `CapTimer` keeps the caps of all its tasks on one timer, armed at
the earliest limit; a cap that ends early does not touch it (it may fire for
nothing once, then re-arms at the next limit), and a cap later than the armed one
costs no timer at all: the common case, since a call made later ends later.

A cap's semantics are `asyncio.timeout`'s (Python 3.11's `Timeout`): when its limit
comes it cancels the task; `stop` then says to raise `TimeoutError` only when the
cancellation the task got is the cap's own (no other cancel was requested meanwhile,
as counted by `Task.cancelling` / `uncancel`), so a cancellation from outside (a
cancelled workflow) always stays a cancellation.

Use a cap around exactly one await, in the task that awaits::

    cap = timer.start(delay_s)
    try:
        result = await work
    except BaseException as exc:
        if cap.stop(exc):
            raise TimeoutError from exc
        raise
    cap.stop(None)

A cap nested in an earlier (or equal) one of the same task, of any `CapTimer`, is
covered: the outer one's cancel comes first (or in the same turn of the loop, and
`stop` then gives the `TimeoutError` to the outer one, as nested `asyncio.timeout`s
do), so the inner one could never be the one that fires. `start` then hands back a
cap that costs nothing and whose `stop` is always False: the DAG engine bounds an
inline node by its workflow's deadline, and the agent call inside it by the same
deadline; one cap does for both.

One `CapTimer` serves one event loop at a time (a new loop starts it afresh).
"""

from __future__ import annotations

import asyncio
import contextvars
import math
from typing import Any, cast

import msgspec

__all__ = ["NO_CAP", "Cap", "CapTimer"]


# The innermost (so the earliest) cap each task is awaiting under, of any CapTimer.
# Keyed by the task: only that task's own thread and loop touch its entry.
_innermost: dict[asyncio.Task[object], Cap] = {}

# The context the shared timer runs in. `call_at` would otherwise copy the context of
# whichever task armed it: one workflow's (its event recorder, and through that the
# store with every document in it), kept alive by the loop until the timer fires, up
# to a workflow's whole deadline later, long after that workflow and even its
# orchestrator are gone. `_fire` reads no context variable, so an empty one will do.
_TIMER_CONTEXT = contextvars.Context()


class Cap(msgspec.Struct, eq=False):
    """The limit on one task's await (see `CapTimer.start`).

    A Struct (identity-hashed, `eq=False`): one is made for most awaits capped, and a
    Struct is built in C, with no Python `__init__` frame."""

    _timer: CapTimer
    _task: asyncio.Task[Any]
    when: float
    # The cap this one is nested in (None: the task's outermost).
    _outer: Cap | None
    # As asyncio.Timeout: the cancel requests pending when the cap began.
    _cancelling: int
    _expired: bool = False

    def _expire(self) -> None:
        self._expired = True
        self._task.cancel()

    def stop(self, exc: BaseException | None) -> bool:
        """End the cap. True when its limit came and `exc` (what the await raised, None
        if it returned) is the cancellation it caused: raise `TimeoutError`."""
        task = self._task
        self._timer._caps.discard(self)
        outer = self._outer
        if outer is None:
            _innermost.pop(task, None)
        else:
            _innermost[task] = outer
        if not self._expired:
            return False
        # The cap's cancel request is withdrawn whatever happened, as Timeout does.
        return task.uncancel() <= self._cancelling and type(exc) is asyncio.CancelledError


class _Covered(Cap):
    """A cap nested in one that ends no later: nothing to arm, nothing to stop."""

    def stop(self, exc: BaseException | None) -> bool:
        return False


# (Its stop reads neither its timer nor its task: it has none.)
_COVERED = _Covered(cast("CapTimer", None), cast("asyncio.Task[Any]", None), math.inf, None, 0)

# A cap for an await that has none: `stop` costs a call and is always False (callers
# that cap some awaits and not others need no branch around the await for it).
NO_CAP: Cap = _COVERED


class CapTimer:
    """The caps of many tasks on one timer of the event loop."""

    __slots__ = ("_armed", "_caps", "_handle", "_loop")

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._armed = math.inf
        self._caps: set[Cap] = set()

    def start(self, delay_s: float) -> Cap:
        """Cancel the current task `delay_s` seconds from now unless the cap is stopped."""
        return self.start_at(None, delay_s)

    def start_at(
        self, when: float | None, delay_s: float = 0.0, *, task: asyncio.Task[Any] | None = None
    ) -> Cap:
        """`start`, at `when` on the loop's clock (`loop.time()`) when it is given: a
        deadline shared by several awaits (a workflow's, in the DAG engine). `task`: the
        current task, when the caller holds it (saves looking it up on every await)."""
        if task is None:
            # The task running on the loop this timer serves, looked up without asking
            # for the running loop: `asyncio.get_running_loop` makes a system call
            # (getpid, ~0.4 us) on every call. A loop that is not running (the timer's
            # first, or a new loop since) has no current task: asked then.
            task = asyncio.current_task(self._loop) if self._loop is not None else None
            if task is None:
                task = asyncio.current_task()
                if task is None:
                    raise RuntimeError("a cap works inside a task")
        loop = task.get_loop()
        if when is None:
            when = loop.time() + delay_s
        if loop is not self._loop:
            # (Before a covered cap returns too: the lookup above needs the loop known.)
            self._restart(loop)
        outer = _innermost.get(task)
        if outer is not None and outer.when <= when and not outer._expired:
            return _COVERED
        cap = _innermost[task] = Cap(self, task, when, outer, task.cancelling())
        self._caps.add(cap)
        if when < self._armed:
            self._arm(loop, when)
        return cap

    def _restart(self, loop: asyncio.AbstractEventLoop) -> None:
        # A new loop (tests run one per test): nothing of the old one carries over.
        if self._handle is not None:
            self._handle.cancel()
        self._handle = None
        self._armed = math.inf
        self._caps = set()
        self._loop = loop

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._armed = when
        self._handle = loop.call_at(when, self._fire, context=_TIMER_CONTEXT)

    def _fire(self) -> None:
        # Every cap due by the time this timer was armed for has come (the loop runs a
        # timer up to one clock resolution early, as it would asyncio.timeout's).
        due = self._armed
        self._handle = None
        self._armed = math.inf
        following = math.inf
        for cap in list(self._caps):
            if cap._expired:
                continue
            if cap.when <= due:
                cap._expire()
            elif cap.when < following:
                following = cap.when
        if following < math.inf and self._loop is not None:
            self._arm(self._loop, following)
