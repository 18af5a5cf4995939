"""`Cap`: a time limit on one await in the current task, as `asyncio.timeout` sets one.

`asyncio.timeout()` is an async context manager: entering and leaving it are two
coroutine calls on top of the timer, about 1.5 us of CPU per use, and the agent
client caps every attempt that has a deadline. `Cap` is the same mechanism with the
ceremony taken out: one timer handle armed when it is made, disarmed by `stop`.
Its semantics are `asyncio.timeout`'s (Python 3.11's `Timeout.__aexit__`): when the
timer fires it cancels the task; `stop` then tells the caller to raise
`TimeoutError` only when the cancellation it sees is the cap's own (no other cancel
was requested meanwhile, as counted by `Task.cancelling`/`uncancel`), so a
cancellation from outside (a cancelled workflow) always stays a cancellation.

Use it around exactly one await, in the task that awaits::

    cap = Cap(delay_s)
    try:
        result = await work
    except BaseException as exc:
        if cap.stop(exc):
            raise TimeoutError from exc
        raise
    cap.stop(None)
"""

from __future__ import annotations

import asyncio

__all__ = ["Cap"]


class Cap:
    """Cancels the current task after `delay_s` seconds unless `stop` comes first."""

    __slots__ = ("_cancelling", "_expired", "_handle", "_task")

    def __init__(self, delay_s: float) -> None:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("a Cap works inside a task")
        self._task = task
        self._cancelling = task.cancelling()
        self._expired = False
        self._handle = task.get_loop().call_later(delay_s, self._fire)

    def _fire(self) -> None:
        self._expired = True
        self._task.cancel()

    def stop(self, exc: BaseException | None) -> bool:
        """Disarm the timer. True when the cap fired and `exc` (what the await raised,
        None if it returned) is the cancellation it caused: raise `TimeoutError`."""
        self._handle.cancel()
        if not self._expired:
            return False
        # The cap's cancel request is withdrawn whatever happened, as Timeout does.
        return self._task.uncancel() <= self._cancelling and type(exc) is asyncio.CancelledError
