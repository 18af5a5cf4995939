"""`WorkflowIdStream`: what `StateStore.subscribe_cancellations()` and
`subscribe_finishes()` return (`CancellationStream` is its older name).

Not an async generator on purpose: `aclose()` on a generator that was never
iterated skips its `finally`, which would leak the subscription (for Redis, a
pub/sub connection). Here `aclose()` always releases it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType


class WorkflowIdStream(AsyncIterator[str]):
    """Workflow ids, in the order they were published (cancels requested, workflows finished).

    Iteration ends when the store closes (it sends None on the queue) or after
    `aclose()`, which releases the subscription even if iteration never started.
    Also an async context manager that closes it on exit.
    """

    def __init__(
        self, queue: asyncio.Queue[str | None], release: Callable[[], Awaitable[None]]
    ) -> None:
        self._queue = queue
        self._release = release
        self._closed = False

    async def __anext__(self) -> str:
        if self._closed:
            raise StopAsyncIteration
        workflow_id = await self._queue.get()
        if workflow_id is None:
            await self.aclose()
            raise StopAsyncIteration
        return workflow_id

    async def aclose(self) -> None:
        """Stop listening and release the subscription; idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._release()

    async def __aenter__(self) -> WorkflowIdStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


# The name from before finishes were streamed too; the same class.
CancellationStream = WorkflowIdStream
