"""`cancel_until_done`: end a background task whose cancel may be lost.

One cancel is not always enough on Python 3.11: redis-py runs socket writes under
`asyncio.wait_for`, which returns the write's result instead of raising when the
cancel lands as the write completes (CPython gh-86296, fixed in 3.12). A loop that
then went on (a subscription pump re-subscribing, the scheduler's pass) kept its
closer waiting forever. Imports nothing but asyncio: a memory-store process uses it
too. (circuit/sharing.py keeps a copy: circuit/ does not import state/.)
"""

from __future__ import annotations

import asyncio

# How long a closer waits for the task to end before cancelling it again.
RECANCEL_S = 0.5


async def cancel_until_done(task: asyncio.Task[None], *, recancel_s: float = RECANCEL_S) -> None:
    """Cancel `task` until it has ended (its outcome is left to the caller)."""
    while not task.done():
        task.cancel()
        # wait() rather than awaiting the task: a cancellation of *our* caller
        # still propagates, the task's own CancelledError does not.
        await asyncio.wait([task], timeout=recancel_s)
