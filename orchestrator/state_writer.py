"""StateWriter: a workflow's document written after its transitions, off the nodes' path."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from orchestrator.write_behind import WriteBehind
from state.models import WorkflowState

# Pauses shorter than this are not taken.
_MIN_PAUSE_S = 0.005
# Workflows with fewer steps are never paced, however long a write takes (a loaded
# machine, a slow store): every transition of theirs is written as it happens, so a
# replica that dies loses no progress a resumed run would have to redo.
PACE_FROM_NODES = 200
# A write that took long because the store was away (retries) must not hold the next
# progress write back for long: status stays at most this stale.
_MAX_PAUSE_S = 1.0


class StateWriter:
    """Writes a workflow's document after transitions without holding the workflow up.

    Transitions only mark the document dirty and put the writer in the queue of the
    orchestrator's one flusher (`flusher`, orchestrator/write_behind.py; a writer
    made without one gets its own), which writes the latest snapshot: a burst of
    transitions costs one or two writes and a heap push each, not a task, and the
    nodes never wait on the store. Writes stay in order (never two in flight), and
    the terminal document is always written last, in the caller's task (`flush`). `persist`
    returns whether the store now holds the document it was given; once that was
    a terminal one, `final` is True and nothing more is written: the store would
    refuse it anyway (a terminal document is final).

    Writes are paced: after a write that took `d` seconds, the next non-terminal one
    waits `pace * d` (skipped when that is under 5 ms). A document grows with
    its workflow, so without pacing a workflow of n nodes would spend O(n) per write
    on O(n) writes; paced, writing costs at most about 1/pace of the run, whatever n
    (a 10,000-node chain: seconds, not minutes). Workflows of fewer than
    PACE_FROM_NODES nodes are never paced, and `flush` cuts a pause short so the
    terminal write is never delayed.

    With `delay_s` (ORCH_STATE_WRITE_DELAY_S, a few ms), transitions are also written
    behind on purpose: the first of a burst waits up to `delay_s` before it is
    written, so the transitions of a fast workflow coalesce into a few writes instead
    of one per node, and the store (Redis) is off the workflow's path except where
    correctness needs it: accept, and the terminal write (awaited, never delayed).
    The store's copy then trails the workflow by at most about `delay_s` (plus the
    write itself); this replica answers status from memory meanwhile.
    """

    # One per workflow run: slots, not a dict per instance.
    __slots__ = (
        "_busy", "_clock", "_delay_s", "_dirty", "_due", "_flusher", "_not_before",
        "_pace", "_persist", "_queued", "_state", "_writing", "final",
    )

    def __init__(
        self,
        persist: Callable[[WorkflowState], Awaitable[bool]],
        state: WorkflowState,
        *,
        pace: float = 4.0,
        delay_s: float = 0.0,
        clock: Callable[[], float] = time.perf_counter,
        flusher: WriteBehind | None = None,
    ) -> None:
        self._persist = persist
        self._state = state
        self._dirty = False
        # In the flusher's queue (at most once: a burst of transitions is one job), due
        # at `_due` on the flusher's clock.
        self._queued = False
        self._due = 0.0
        # True while a write is in flight: writes of one workflow never overlap.
        self._busy = False
        # Resolved when the write in flight ends; made only once someone waits for it
        # (most writes are waited for by nobody: no future made and resolved for each).
        self._writing: asyncio.Future[None] | None = None
        self._pace = pace
        self._delay_s = delay_s
        self._clock = clock
        self._flusher = flusher if flusher is not None else WriteBehind()
        self._not_before = 0.0
        self.final = False

    def mark_dirty(self) -> None:
        if self.final:
            return
        self._dirty = True
        # A terminal state is not queued: its caller writes it now (`flush`, awaited).
        if not self._queued and not self._busy and not self._state.status.is_terminal:
            # Write behind: the first transition of a burst waits `delay_s` for the
            # ones that follow it, so they cost one write between them.
            self._queue(self._delay_s)

    def _queue(self, after_s: float) -> None:
        self._queued = True
        self._due = self._flusher.add_after(self, after_s)

    def write_due_by(self, when: float) -> bool:
        """Whether a write of the document is queued, due by `when` on the flusher's clock,
        and will be made at its turn (none in flight, not paced): what `EventRecorder`
        asks before it leaves its events to this write to carry."""
        return (
            self._queued
            and self._due <= when
            and self._dirty
            and not self._busy
            and not self.final
            and len(self._state.steps) < PACE_FROM_NODES
        )

    def flush(self) -> Awaitable[None]:
        """Write what is owed now, in this task: neither the delay nor the queue is waited.

        The write's own coroutine when none is in flight (the terminal write, as a rule):
        no coroutine of this method's around it."""
        if self._busy:
            return self._flush_after_idle()
        if self._dirty:
            return self._write()
        return _nothing()

    async def _flush_after_idle(self) -> None:
        await self._idle()
        if self._dirty:
            await self._write()

    def write_behind(self) -> Awaitable[None] | None:
        """The flusher's turn: write the latest snapshot, unless a pacing pause is owed.
        None when nothing is owed (the terminal write came first) and while a write is in
        flight (a flush's: it queues this writer again when it ends, if anything is owed
        then): no coroutine made, none waiting in the flusher's turn."""
        self._queued = False
        if self._busy or not self._dirty or self.final:
            return None
        if len(self._state.steps) < PACE_FROM_NODES:
            # Never paced: the write itself, with no pacing coroutine and no clock
            # readings around it (most workflows; a turn of the flusher per write).
            return self._write()
        return self._write_behind()

    async def _write_behind(self) -> None:
        if self._busy:  # a flush began since the flusher took this turn
            await self._idle()
        if not self._dirty or self.final:
            return
        pause = self._not_before - self._clock()
        if len(self._state.steps) >= PACE_FROM_NODES and pause >= _MIN_PAUSE_S:
            self._queue(pause)  # paced: back in the queue, the others go first
            return
        started = self._clock()
        await self._write()
        ended = self._clock()
        self._not_before = ended + min((ended - started) * self._pace, _MAX_PAUSE_S)

    async def _idle(self) -> None:
        while self._busy:
            if self._writing is None:
                self._writing = asyncio.get_running_loop().create_future()
            # shield: the workflow task may be cancelled while its final write is in flight.
            await asyncio.shield(self._writing)

    async def _write(self) -> None:
        if self._busy:
            # The flusher's write, started after a flush's began (the flusher takes every
            # due job's write before it starts any): never two at once, and the flush
            # may have written all that was owed.
            await self._idle()
            if not self._dirty:
                return
        self._dirty = False
        if self.final:
            return  # marked dirty while the terminal write was in flight
        self._busy = True
        try:
            # Both stores serialise the document before their first await, so the status
            # read here is the one written.
            terminal = self._state.status.is_terminal
            if await self._persist(self._state) and terminal:
                self.final = True
        finally:
            self._busy = False
            writing, self._writing = self._writing, None
            if writing is not None:
                writing.set_result(None)
            if self._dirty and not self._queued and not self.final:
                self._queue(0.0)  # transitions while the write was in flight: no second delay


async def _nothing() -> None:
    """`flush` with nothing owed."""
