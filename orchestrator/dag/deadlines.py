"""Every deadline of one workflow run on one timer of the event loop.

A run bounds its work by several deadlines at once: the workflow's own
(`options.timeout_s`), each running node's (`timeout_s`, or the engine's default, plus
a grace: the backstop of `DagEngine`), and the scheduler's wait for a `when`.
`asyncio.timeout` would arm and cancel a timer of the event loop for each of them,
node after node (seven per chain workflow). Here they share one: it is armed at the
earliest deadline, and when it fires it cancels the work whose deadline has come
and re-arms itself at the next. A scope leaving early does not touch the timer (it
may fire for nothing once, and re-arm); a later deadline than the armed one costs
no timer at all, which is the common case (each node of a chain starts, and so
ends, later than the one before).

A scope cancels its task exactly as `asyncio.timeout` does (`task.cancel()`, then
`uncancel()` when it is left), so nested scopes and a cancel from outside keep the
same meaning: `leave` says whether the CancelledError the task got was this scope's
own (turn it into the caller's timeout error) or someone else's (let it through).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable

__all__ = ["Deadlines", "Scope"]


class Scope:
    """A deadline bounding the work of one task (see `Deadlines.enter`)."""

    __slots__ = ("cancelling", "expired", "task", "when")

    def __init__(self, task: asyncio.Task[object], when: float) -> None:
        self.task = task
        self.when = when
        self.expired = False
        # As asyncio.Timeout: the cancel requests pending when the scope began.
        self.cancelling = task.cancelling()


class Deadlines:
    """The deadlines of one run: `enter`/`leave` scopes; `on_workflow` is called
    (from the timer) once the workflow's own deadline `workflow_at` has come.
    `close` at the end of the run cancels the timer."""

    __slots__ = ("_armed", "_closed", "_handle", "_loop", "_on_workflow", "_scopes", "_workflow_at")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        workflow_at: float | None = None,
        on_workflow: Callable[[], None] | None = None,
    ) -> None:
        self._loop = loop
        self._handle: asyncio.TimerHandle | None = None
        self._armed = math.inf
        self._closed = False
        self._scopes: set[Scope] = set()
        self._workflow_at = math.inf if workflow_at is None else workflow_at
        self._on_workflow = on_workflow
        if workflow_at is not None:
            self._arm(workflow_at)

    def enter(self, when: float) -> Scope:
        """Bound the current task's work by `when` (the loop's clock): once it has come
        the task is cancelled (see `leave`)."""
        task = asyncio.current_task(self._loop)
        assert task is not None
        scope = Scope(task, when)
        self._scopes.add(scope)
        if when < self._armed:
            self._arm(when)
        return scope

    def leave(self, scope: Scope) -> bool:
        """End `scope`; True when its deadline cancelled the task and no other cancel
        is pending (the caller raises its timeout error instead of CancelledError)."""
        self._scopes.discard(scope)
        if scope.expired:
            return scope.task.uncancel() <= scope.cancelling
        return False

    def close(self) -> None:
        self._closed = True
        self._scopes.clear()
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _arm(self, when: float) -> None:
        if self._closed:
            return
        if self._handle is not None:
            self._handle.cancel()
        self._armed = when
        self._handle = self._loop.call_at(when, self._fire)

    def _fire(self) -> None:
        # Everything due by the time this timer was armed for has come (the loop runs a
        # timer up to one clock resolution early, as it would asyncio.timeout's).
        due = self._armed
        self._handle = None
        self._armed = math.inf
        following = math.inf
        for scope in self._scopes:
            if scope.expired:
                continue
            if scope.when <= due:
                scope.expired = True
                scope.task.cancel()
            elif scope.when < following:
                following = scope.when
        if self._workflow_at <= due:
            self._workflow_at = math.inf
            if self._on_workflow is not None:
                self._on_workflow()
        elif self._workflow_at < following:
            following = self._workflow_at
        if following < math.inf:
            self._arm(following)
