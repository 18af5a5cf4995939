"""StateWriter: a workflow's document written after its transitions, off the nodes' path."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from state.models import WorkflowState


class StateWriter:
    """Writes a workflow's document after transitions without holding the workflow up.

    Transitions only mark the document dirty; one writer task at a time writes the
    latest snapshot, so a burst of transitions costs one or two writes and the
    nodes never wait on the store. Writes stay in order (one writer), and the
    terminal document is always written last and awaited (`flush`). `persist`
    returns whether the store now holds the document it was given; once that was
    a terminal one, `final` is True and nothing more is written: the store would
    refuse it anyway (a terminal document is final).
    """

    def __init__(
        self, persist: Callable[[WorkflowState], Awaitable[bool]], state: WorkflowState
    ) -> None:
        self._persist = persist
        self._state = state
        self._dirty = False
        self._task: asyncio.Task[None] | None = None
        self.final = False

    def mark_dirty(self) -> None:
        if self.final:
            return
        self._dirty = True
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain())

    async def flush(self) -> None:
        while self._task is not None and not self._task.done():
            # shield: the workflow task may be cancelled while its final write is in flight.
            await asyncio.shield(self._task)
        if self._dirty:
            await self._write()

    async def _drain(self) -> None:
        while self._dirty:
            await self._write()

    async def _write(self) -> None:
        self._dirty = False
        if self.final:
            return  # marked dirty while the terminal write was in flight
        # Both stores serialise the document before their first await, so the status
        # read here is the one written.
        terminal = self._state.status.is_terminal
        if await self._persist(self._state) and terminal:
            self.final = True
