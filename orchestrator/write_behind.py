"""WriteBehind: one flusher task per orchestrator for every workflow's writes behind.

A workflow's transitions (StateWriter) and progress events (EventRecorder) are
written behind its nodes. Each of them, when it has something to write, hands
itself to the orchestrator's `WriteBehind` with its delay (`add_after`); one task
takes the due ones in order (earliest first, ties first come first served) and
starts their writes. So a transition costs a heap push, not a timer or a task of
its own while it waits: the flusher task runs while there is work and ends when the
queue is empty (the next job starts it again).

Every job due when the flusher wakes (up to `_MOST_AT_ONCE`) has its write started in
that turn, each in a task, and the flusher goes on without awaiting them: a batching
store (Redis: state/redis_batch.py) sends the writes started in one turn in one
exchange, and a write is late only by the loop's own delay, never by another's. The
flusher used to await one write per exchange, which fell behind under load (at 50
chains in flight, thousands of writes a second): running workflows ended before
their progress reached the store, and status read on another replica trailed by far
more than the delay. A job's own writes stay in order and never overlap: it is in
the queue at most once, it is not queued again while its write is in flight (that
write queues it when it ends, if something is owed), and a write that starts while
another of its workflow's is in flight (a terminal flush, made in the workflow's own
task) waits for it: see StateWriter._write and EventRecorder._append_queued. A store
whose writes complete in turn (the memory store: `together=False`) has nothing to
share; its writes are awaited one at a time, with no task around them.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Awaitable
from typing import Protocol

import structlog

log = structlog.get_logger(__name__)

# The most jobs one turn of the flusher starts together: a bound on one exchange's size;
# the rest are started in the next turn.
_MOST_AT_ONCE = 256


class Behind(Protocol):
    """Something with writes owed: `write_behind` writes what is owed now.

    It returns the write to await, or None when nothing is owed any more (a workflow
    that ended within the delay wrote everything itself): no coroutine for nothing.
    The write may start a little after this call (the flusher takes every due job's
    write, then starts them together), so it must look, once it starts, for a write
    of its own begun meanwhile (a terminal flush) and wait for that one first."""

    def write_behind(self) -> Awaitable[None] | None: ...


async def _logged(write: Awaitable[None]) -> None:
    try:
        await write
    except Exception:  # a bug in one job must not strand the others
        log.exception("write_behind_failed")


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class WriteBehind:
    """The queue of jobs due, and the one task that writes them."""

    def __init__(self, *, together: bool = True) -> None:
        """`together=False` for a store whose writes complete in the turn they are made
        (the memory store): nothing to share, so each due write is awaited in turn, with
        no task around it."""
        self._together = together
        self._most_at_once = _MOST_AT_ONCE if together else 1
        # The writes started and not yet ended (`together`): held, so none is collected
        # while in flight, and counted in `running`.
        self._writing: set[asyncio.Task[None]] = set()
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
        """Whether the flusher task exists (it ends once the queue is empty) or a write it
        started is still in flight."""
        return self._task is not None or bool(self._writing)

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
                if not self._together:
                    # Writes that complete in turn: awaited here, one at a time, taskless.
                    for write in writes:
                        await _logged(write)
                    continue
                # Started, not awaited: each write runs in a task of its own, so the
                # flusher goes straight on to the jobs due next. A slow write (a store
                # away, its retries) holds up only its own workflow's next write (its
                # job is queued again when it ends), never the others'.
                for write in writes:
                    task = loop.create_task(_logged(write))
                    self._writing.add(task)
                    task.add_done_callback(self._writing.discard)
                if len(writes) == self._most_at_once:
                    # More may be due: these go out (one exchange) before the next ones.
                    await asyncio.sleep(0)
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
