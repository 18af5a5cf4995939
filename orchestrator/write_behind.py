"""WriteBehind: one flusher task per orchestrator for every workflow's writes behind.

A workflow's transitions (StateWriter) and progress events (EventRecorder) are
written behind its nodes. Each of them, when it has something to write, hands
itself to the orchestrator's `WriteBehind` with its delay (`add_after`); one task
takes the due ones in order (earliest first, ties first come first served) and
writes them. So a transition costs a heap push, not a task of its
own: the flusher task runs while there is work and ends when the queue is empty
(the next job starts it again), so nothing is left pending when the loop closes.

Every job due when the flusher wakes is written together (unless the store's writes
complete in turn: `together=False`): the flusher takes them all (up to
`_MOST_AT_ONCE`), starts their writes in the same turn and awaits them together, so
a batching store (Redis: state/redis_batch.py) sends them in one exchange. One write
per exchange would fall behind under load (at 50 chains in flight a chain's nodes
are ~10 ms apart: thousands of writes a second) until running workflows ended before
their progress reached the store, and status read on another replica would trail by
far more than the delay. A job's own writes stay in order and never overlap (it is
in the queue at most once, and a write that starts while another of its workflow's
is in flight waits for it: see StateWriter._write and EventRecorder._append_queued);
a slow or failing write holds up the jobs due after its turn, not the workflows
(their nodes never wait on it, and their terminal writes are made in their own task,
never queued here).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Awaitable
from typing import Protocol

import structlog

log = structlog.get_logger(__name__)

# The most jobs one turn of the flusher writes together: a bound on one exchange's
# size (and on the tasks awaited at once); the rest are written in the next turn.
_MOST_AT_ONCE = 256


class Behind(Protocol):
    """Something with writes owed: `write_behind` writes what is owed now.

    It returns the write to await, or None when nothing is owed any more (a workflow
    that ended within the delay wrote everything itself): no coroutine for nothing.
    The write may start a little after this call (the flusher takes every due job's
    write, then starts them together), so it must look, once it starts, for a write
    of its own begun meanwhile (a terminal flush) and wait for that one first."""

    def write_behind(self) -> Awaitable[None] | None: ...


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class WriteBehind:
    """The queue of jobs due, and the one task that writes them."""

    def __init__(self, *, together: bool = True) -> None:
        """`together=False` for a store whose writes complete in the turn they are made
        (the memory store): nothing to share, so each due write is awaited in turn, with
        no task around it."""
        self._most_at_once = _MOST_AT_ONCE if together else 1
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

    def add_after(self, job: Behind, delay_s: float) -> float:
        """`add`, due `delay_s` from now on the loop's clock (its adders need no loop);
        returns when it is due, on that clock."""
        loop = self._loop
        if loop is None or not loop.is_running():
            loop = self._loop = asyncio.get_running_loop()
        due = loop.time() + delay_s
        self.add(job, due)
        return due

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._due:
                due = self._due[0][0]
                if due > loop.time():
                    self._waiter = loop.create_future()
                    timer = loop.call_at(due, _wake, self._waiter)
                    try:
                        await self._waiter
                    finally:
                        timer.cancel()
                        self._waiter = None
                    continue  # a job due earlier may have come meanwhile
                writes = self._take_due(loop.time())
                if len(writes) == 1:
                    # (Most turns when idle-ish: the write itself, no task around it.)
                    try:
                        await writes[0]
                    except Exception:  # a bug in one job must not strand the others
                        log.exception("write_behind_failed")
                elif writes:
                    # Started together: their commands reach the store in one turn, so
                    # a batching store sends them in one exchange.
                    for outcome in await asyncio.gather(*writes, return_exceptions=True):
                        if isinstance(outcome, Exception):
                            log.error("write_behind_failed", exc_info=outcome)
        finally:
            self._task = None

    def _take_due(self, now: float) -> list[Awaitable[None]]:
        """The writes of every job due by `now` (at most `_MOST_AT_ONCE`; one when not
        `together`), in due order."""
        due = self._due
        writes: list[Awaitable[None]] = []
        most = self._most_at_once
        while due and due[0][0] <= now and len(writes) < most:
            job = heapq.heappop(due)[2]
            try:
                pending = job.write_behind()
            except Exception:  # a bug in one job must not strand the others
                log.exception("write_behind_failed")
                continue
            if pending is not None:
                writes.append(pending)
        return writes
