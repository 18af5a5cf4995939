"""A workflow's progress events as the stores keep them, and `EventStream` for live ones.

Each workflow has an append-only event log in the store: `append_event` gives an
event the next sequence number (1, 2, 3, ... per workflow, assigned by the store, so
every replica agrees) and publishes it to the workflow's subscribers on every
replica. `events_since(id, after)` reads what already happened; `subscribe_events`
returns an `EventStream` of what happens next. A reader that subscribes first and
then reads the log misses nothing; it may see an event twice, and skips any whose
sequence number it already has.

An event is a JSON object; the store neither reads nor changes it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Any

# (sequence number, event)
StoredEvent = tuple[int, dict[str, Any]]


class EventStream(AsyncIterator[StoredEvent]):
    """Live events of one workflow, in sequence order, from the moment it was opened.

    Iteration ends when the store closes or loses the subscription (the reader then
    resumes from the log with `events_since`), or after `aclose()`, which releases
    the subscription even if iteration never started.
    """

    def __init__(
        self, queue: asyncio.Queue[StoredEvent | None], release: Callable[[], Awaitable[None]]
    ) -> None:
        self._queue = queue
        self._release = release
        self._closed = False

    async def __anext__(self) -> StoredEvent:
        if self._closed:
            raise StopAsyncIteration
        item = await self._queue.get()
        if item is None:
            await self.aclose()
            raise StopAsyncIteration
        return item

    async def aclose(self) -> None:
        """Stop listening and release the subscription; idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._release()
        self._queue.put_nowait(None)  # wakes a reader already waiting in __anext__

    async def __aenter__(self) -> EventStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
