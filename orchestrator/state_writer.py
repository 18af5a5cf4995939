"""StateWriter: a workflow's document written after its transitions, off the nodes' path."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

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

    Transitions only mark the document dirty; one writer task at a time writes the
    latest snapshot, so a burst of transitions costs one or two writes and the
    nodes never wait on the store. Writes stay in order (one writer), and the
    terminal document is always written last and awaited (`flush`). `persist`
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

    def __init__(
        self,
        persist: Callable[[WorkflowState], Awaitable[bool]],
        state: WorkflowState,
        *,
        pace: float = 4.0,
        delay_s: float = 0.0,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._persist = persist
        self._state = state
        self._dirty = False
        self._task: asyncio.Task[None] | None = None
        self._pace = pace
        self._delay_s = delay_s
        self._delay_until = 0.0
        self._clock = clock
        self._hurry = asyncio.Event()
        self._not_before = 0.0
        self.final = False

    def mark_dirty(self) -> None:
        if self.final:
            return
        self._dirty = True
        if self._task is None or self._task.done():
            if self._delay_s > 0:
                # Write behind: the first transition of a burst waits `delay_s` for the
                # ones that follow it, so they cost one write between them.
                self._delay_until = self._clock() + self._delay_s
            self._task = asyncio.create_task(self._drain())

    async def flush(self) -> None:
        self._hurry.set()
        while self._task is not None and not self._task.done():
            # shield: the workflow task may be cancelled while its final write is in flight.
            await asyncio.shield(self._task)
        if self._dirty:
            await self._write()

    async def _drain(self) -> None:
        while self._dirty:
            now = self._clock()
            big = len(self._state.steps) >= PACE_FROM_NODES
            pace = self._not_before - now if big else 0.0
            # A pacing pause too short for a timer is skipped; the write-behind delay
            # (asked for explicitly) is always waited.
            pause = max(pace if pace >= _MIN_PAUSE_S else 0.0, self._delay_until - now)
            if pause > 0 and not self._hurry.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(pause):
                        await self._hurry.wait()
            started = self._clock()
            await self._write()
            ended = self._clock()
            self._not_before = ended + min((ended - started) * self._pace, _MAX_PAUSE_S)

    async def _write(self) -> None:
        self._dirty = False
        if self.final:
            return  # marked dirty while the terminal write was in flight
        # Both stores serialise the document before their first await, so the status
        # read here is the one written.
        terminal = self._state.status.is_terminal
        if await self._persist(self._state) and terminal:
            self.final = True
