"""WriteBehind: one flusher task per orchestrator for every workflow's writes behind.

A workflow's transitions (StateWriter) and progress events (EventRecorder) are
written behind its nodes. Each of them, when it has something to write, hands
itself to the orchestrator's `WriteBehind` with its delay (`add_after`); one task
takes the due ones in order (earliest first, ties first come first served) and
awaits each one's write. So a transition costs a heap push, not a task of its
own: the flusher task runs while there is work and ends when the queue is empty
(the next job starts it again), so nothing is left pending when the loop closes.

Jobs are written one after the other: a job's own writes stay in order (it is in
the queue at most once), and a slow or failing write holds the queue up, not the
workflows (their nodes never wait on it, and their terminal writes are made in
their own task, never queued here).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Awaitable
from typing import Protocol

import structlog

log = structlog.get_logger(__name__)


class Behind(Protocol):
    """Something with writes owed: `write_behind` writes what is owed now.

    It returns the write to await, or None when nothing is owed any more (a workflow
    that ended within the delay wrote everything itself): no coroutine for nothing."""

    def write_behind(self) -> Awaitable[None] | None: ...


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class WriteBehind:
    """The queue of jobs due, and the one task that writes them."""

    def __init__(self) -> None:
        self._due: list[tuple[float, int, Behind]] = []
        self._order = itertools.count()
        self._task: asyncio.Task[None] | None = None
        # The loop jobs are due on, kept while it runs: `asyncio.get_running_loop` makes a
        # system call (getpid) each time, and every workflow adds a job or two. A loop
        # that is not running is not the caller's (one loop runs per thread).
        self._loop: asyncio.AbstractEventLoop | None = None
        # Set while the flusher sleeps until the first job is due.
        self._waiter: asyncio.Future[None] | None = None

    def __len__(self) -> int:
        return len(self._due)

    @property
    def running(self) -> bool:
        """Whether the flusher task exists (it ends once the queue is empty)."""
        return self._task is not None

    def add(self, job: Behind, due: float) -> None:
        """Write `job` once the loop's clock reaches `due` (a job is added once until it ran)."""
        loop = self._loop
        if loop is None or not loop.is_running():
            loop = self._loop = asyncio.get_running_loop()
        earlier = not self._due or due < self._due[0][0]
        heapq.heappush(self._due, (due, next(self._order), job))
        if self._task is None:
            self._task = loop.create_task(self._run(), name="write-behind")
        elif earlier and self._waiter is not None:
            _wake(self._waiter)

    def add_after(self, job: Behind, delay_s: float) -> None:
        """`add`, due `delay_s` from now on the loop's clock: its adders need no loop."""
        loop = self._loop
        if loop is None or not loop.is_running():
            loop = self._loop = asyncio.get_running_loop()
        self.add(job, loop.time() + delay_s)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._due:
                due, _, job = self._due[0]
                if due > loop.time():
                    self._waiter = loop.create_future()
                    timer = loop.call_at(due, _wake, self._waiter)
                    try:
                        await self._waiter
                    finally:
                        timer.cancel()
                        self._waiter = None
                    continue  # a job due earlier may have come meanwhile
                heapq.heappop(self._due)
                try:
                    pending = job.write_behind()
                    if pending is not None:
                        await pending
                except Exception:  # a bug in one job must not strand the others
                    log.exception("write_behind_failed")
        finally:
            self._task = None
