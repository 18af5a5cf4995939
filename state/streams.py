"""`QueueStream`: the live stream a store's subscription hands out, fed through a queue.

Not an async generator on purpose: `aclose()` on a generator that was never
iterated skips its `finally`, which would leak the subscription (for Redis, a
pub/sub connection). Here `aclose()` always releases it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Generic, Self, TypeVar, final

T = TypeVar("T")


class QueueStream(AsyncIterator[T], Generic[T]):
    """Items in the order the store put them on `queue`.

    Iteration ends when the store closes or loses the subscription (it puts None on
    the queue), or after `aclose()`, which releases the subscription even if
    iteration never started and wakes a reader already waiting. Also an async
    context manager that closes it on exit.
    """

    def __init__(
        self, queue: asyncio.Queue[T | None], release: Callable[[], Awaitable[None]]
    ) -> None:
        self._queue = queue
        self._release = release
        self._closed = False

    @final
    async def __anext__(self) -> T:
        if self._closed:
            raise StopAsyncIteration
        item = await self._queue.get()
        if item is None:
            await self.aclose()
            raise StopAsyncIteration
        return item

    @final
    async def aclose(self) -> None:
        """Stop listening and release the subscription; idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._release()
        self._queue.put_nowait(None)  # wakes a reader already waiting in __anext__

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
