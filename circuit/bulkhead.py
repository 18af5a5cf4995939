"""A concurrency limit whose uncontended take is a counter.

`asyncio.Semaphore` makes every take a coroutine call, even when a slot is free.
A bulkhead is free nearly always (it exists for the moment an agent slows down),
so `Bulkhead.try_acquire` takes a free slot synchronously, and only a caller that
finds none awaits `acquire`: waiters queue first come, first served, and a
released slot is handed straight to the oldest one (nobody can overtake it).

A waiter cancelled while it waits (its caller's timeout, a cancelled workflow)
leaves the queue; one cancelled just after it was handed a slot passes the slot on,
so a cancellation never leaks one. Meant for one event loop; nothing here awaits
except a waiter, so nothing needs a lock.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

__all__ = ["Bulkhead"]


class Bulkhead:
    """At most `limit` holders at once; `try_acquire` / `acquire`, then `release`."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"a bulkhead needs at least one slot, got {limit}")
        self.limit = limit
        self._free = limit
        # Invariant: a free slot and a waiter never coexist (a release hands its slot
        # to the oldest waiter), so `try_acquire` need only look at the count.
        self._waiters: deque[asyncio.Future[None]] = deque()

    def try_acquire(self) -> bool:
        """Take a free slot now and return True, or return False (and take nothing)."""
        if self._free:
            self._free -= 1
            return True
        return False

    async def acquire(self) -> None:
        """Take a slot, waiting in line for one when none is free."""
        if self._free:
            self._free -= 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.cancelled():
                # Nobody handed it a slot. A release may have dropped it from the
                # queue already (it skips cancelled waiters).
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            else:
                # A slot was handed over just as the wait was cancelled: pass it on.
                self.release()
            raise

    def release(self) -> None:
        """Give a slot back: to the oldest waiter if there is one, else to the pool."""
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1
