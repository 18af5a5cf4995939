"""Fakes shared across the test packages."""

from __future__ import annotations

import asyncio


class FakeClock:
    """A monotonic clock that stands still until `advance` moves it.

    Also the engine's `Clock`: `sleep` returns once the clock has been advanced
    past its deadline, so loops paced by it (heartbeat, reconcile, write
    backoff) run exactly when a test moves time, never on real time.
    """

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
        due = [(t, f) for t, f in self._sleepers if t <= self.now]
        self._sleepers = [(t, f) for t, f in self._sleepers if t > self.now]
        for _, future in due:
            if not future.done():
                future.set_result(None)

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers.append((self.now + seconds, future))
        await future

    @property
    def sleepers(self) -> int:
        """How many sleeps are waiting for time to move."""
        return sum(1 for _, f in self._sleepers if not f.done())

    async def tick(self, seconds: float) -> None:
        """Advance, then let every task woken by it run until it waits again."""
        self.advance(seconds)
        await settle()


async def settle(turns: int = 20) -> None:
    """Let ready tasks run (a bounded number of loop turns; no time passes)."""
    for _ in range(turns):
        await asyncio.sleep(0)
