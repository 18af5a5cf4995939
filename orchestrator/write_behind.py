"""WriteBehind: one flusher per orchestrator for every workflow's writes behind.

A workflow's transitions (StateWriter) and progress events (EventRecorder) are
written behind its nodes. Each of them, when it has something to write, hands
itself to the orchestrator's `WriteBehind` with its delay (`add_after`); one loop
timer, set for the first job due, takes the due ones in order (earliest first, ties
first come first served) and starts their writes. So a transition costs a heap push,
not a timer or a task of its own while it waits, and no task waits for the timer
either: a job whose owner knows it owes nothing more leaves the queue at once
(`write_now`: a workflow's writer and recorder after its terminal write), and once
the queue is empty the timer is cancelled, never fired. A chain that ends within the
delay (at low load, every one) so costs no wake-up of the loop after its answer; the
flusher used to be a task that slept until the first job was due, started and woken
once per such workflow to find that it owed nothing.

Every job due when the timer fires (up to `_MOST_AT_ONCE`) has its write started in
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
share; its writes are awaited one at a time, by one task, with no task around each.
"""

from __future__ import annotations

import asyncio
import contextvars
import heapq
import itertools
import math
from collections.abc import Awaitable
from typing import Any, Protocol

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


class WriteBehind:
    """The queue of jobs due, and the timer that starts their writes."""

    def __init__(self, *, together: bool = True) -> None:
        """`together=False` for a store whose writes complete in the turn they are made
        (the memory store): nothing to share, so each due write is awaited in turn, with
        no task around each."""
        self._together = together
        # The writes started and not yet ended: held, so none is collected while in
        # flight, and counted in `running`.
        self._writing: set[asyncio.Task[None]] = set()
        # A heap of [due, order, job]; `job` is None once it left the queue early
        # (`write_now`): dropped when it reaches the top, not searched for.
        self._due: list[list[Any]] = []
        # Each queued job's entry in `_due` (a job is queued at most once).
        self._entries: dict[Behind, list[Any]] = {}
        self._order = itertools.count()
        # The loop jobs are due on, kept while it runs: `asyncio.get_running_loop` makes a
        # system call (getpid) each time, and every workflow adds a job or two. A loop
        # that is not running is not the caller's (one loop runs per thread).
        self._loop: asyncio.AbstractEventLoop | None = None
        # The loop timer set for the first job due, and when it fires: a callback, not a
        # task asleep, so a queue emptied early (`write_now`) costs a cancel, no wake-up.
        self._timer: asyncio.Handle | None = None
        self._timer_at = 0.0
        # The context the timer runs in, and so the writes it starts: `call_at` would
        # otherwise copy the context of the workflow that set it (its bound log fields,
        # its event recorder and through it the store) and keep it alive until it fires.
        # Nothing the timer runs reads a context variable of that workflow's. One per
        # flusher, not per module: a context is entered by one thread at a time, and
        # each flusher serves one loop.
        self._timer_context = contextvars.Context()
        # `together=False`: the task awaiting the due writes one at a time, while it runs.
        self._drainer: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def running(self) -> bool:
        """Whether jobs are queued (the timer is set for the first), due writes are being
        awaited in turn, or a write started is still in flight."""
        return self._timer is not None or self._drainer is not None or bool(self._writing)

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is None or not loop.is_running():
            loop = self._loop = asyncio.get_running_loop()
            # A timer set on a loop that stopped never fires: set anew on this one.
            self._timer = None
            self._drainer = None
        return loop

    def add(self, job: Behind, due: float) -> None:
        """Write `job` once the loop's clock reaches `due` (a job is added once until it ran)."""
        loop = self._running_loop()
        entry = [due, next(self._order), job]
        self._entries[job] = entry
        heapq.heappush(self._due, entry)
        if self._timer is None or due < self._timer_at:
            self._arm(loop)

    def add_after(self, job: Behind, delay_s: float) -> float:
        """`add`, due `delay_s` from now on the loop's clock (its adders need no loop);
        returns when it is due, on that clock."""
        due = self._running_loop().time() + delay_s
        self.add(job, due)
        return due

    def write_now(self, job: Behind) -> None:
        """`job`'s turn now, if it is queued: out of the queue, and its write (if it owes
        one) started at once as its turn would start it.

        For a job whose owner knows it owes nothing more (a workflow's writer and event
        recorder once its terminal write is done): a workflow that ends within the delay
        then leaves no timer to fire for it, no wake-up of the loop for nothing."""
        entry = self._entries.pop(job, None)
        if entry is None:
            return
        entry[2] = None
        if not self._entries:
            # Nothing left to wait for: the timer goes (a cancel; it never fires).
            self._due.clear()
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        write = _turn(job)
        if write is not None:
            self._start(self._running_loop(), write)

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        """Set the timer for the first job due (none while the drainer runs: it sets it)."""
        due = self._due
        while due and due[0][2] is None:
            heapq.heappop(due)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if due and self._drainer is None:
            at = due[0][0]
            if at <= loop.time():
                # Due already (no delay, or more due than one turn takes): the next turn.
                self._fire()
            else:
                self._timer_at = at
                self._timer = loop.call_at(at, self._fire, context=self._timer_context)

    def _fire(self) -> None:
        # The due writes are taken in the loop's next turn, as the flusher task this timer
        # replaces took them when woken: at load a turn runs many callbacks, and the jobs
        # that fall due meanwhile go out in the same exchange instead of one of their own
        # (taken here, at once: ~8 % more Redis exchanges and running writes per chain
        # at 50 in flight). Until then no job added moves the timer: all go with this turn.
        loop = self._running_loop()
        if not self._together:
            # Writes that complete in turn: awaited one at a time by one task, which takes
            # them in its first step, the next turn (no hop of its own before it).
            self._timer = None
            self._drainer = loop.create_task(self._drain(loop))
            return
        self._timer = loop.call_soon(self._take, context=self._timer_context)
        self._timer_at = -math.inf

    def _take(self) -> None:
        self._timer = None
        loop = self._running_loop()
        # Started, not awaited: each write runs in a task of its own, so the due jobs'
        # writes go out together (one exchange) and the timer is set for the next ones at
        # once. A slow write (a store away, its retries) holds up only its own workflow's
        # next write (its job is queued again when it ends), never the others'.
        for write in self._take_due(loop.time(), _MOST_AT_ONCE):
            self._start(loop, write)
        # (More may be due than one turn takes: the timer then fires on the next turn.)
        self._arm(loop)

    def _start(self, loop: asyncio.AbstractEventLoop, write: Awaitable[None]) -> None:
        task = loop.create_task(_logged(write))
        self._writing.add(task)
        task.add_done_callback(self._writing.discard)

    async def _drain(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            while writes := self._take_due(loop.time(), 1):
                await _logged(writes[0])
        finally:
            self._drainer = None
            self._arm(loop)

    def _take_due(self, now: float, most: int) -> list[Awaitable[None]]:
        """The writes of the jobs due by `now` (at most `most` of them), in due order."""
        due = self._due
        entries = self._entries
        writes: list[Awaitable[None]] = []
        while due and due[0][0] <= now and len(writes) < most:
            job = heapq.heappop(due)[2]
            if job is None:
                continue  # left the queue early (`write_now`)
            del entries[job]
            pending = _turn(job)
            if pending is not None:
                writes.append(pending)
        return writes


def _turn(job: Behind) -> Awaitable[None] | None:
    try:
        return job.write_behind()
    except Exception:  # a bug in one job must not strand the others
        log.exception("write_behind_failed")
        return None
