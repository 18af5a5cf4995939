"""The sliding window of a rate-based breaker: failure and slow-call rates of recent calls.

Two shapes, as in Resilience4j:

- **count**: the last `size` recorded calls (a ring of outcomes);
- **time**: the calls of the last `size` seconds on the injected clock, kept in
  one-second buckets, so memory stays `size` buckets whatever the traffic.

The window only counts; `AsyncCircuitBreaker` asks `exceeds` after each
recorded call and, when it says so, moves pybreaker's state machine to open.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from circuit.config import WindowType

__all__ = ["SlidingWindow", "WindowCounts"]


@dataclass(frozen=True, slots=True)
class WindowCounts:
    """What the window holds now: calls, failed ones, slow ones (a call may be both)."""

    calls: int = 0
    failures: int = 0
    slow: int = 0

    @property
    def failure_rate(self) -> float:
        """Failed share of the window's calls, in % (0 when empty)."""
        return 100.0 * self.failures / self.calls if self.calls else 0.0

    @property
    def slow_rate(self) -> float:
        return 100.0 * self.slow / self.calls if self.calls else 0.0

    def to_dict(self) -> dict[str, float | int]:
        return {
            "calls": self.calls,
            "failures": self.failures,
            "slow": self.slow,
            "failure_rate": round(self.failure_rate, 2),
            "slow_rate": round(self.slow_rate, 2),
        }


# A call that neither failed nor was slow, as the count window keeps it.
_OK = (False, False)


class SlidingWindow:
    """Counts of the last `size` calls (`kind="count"`) or `size` seconds (`kind="time"`).

    `clock` (monotonic seconds) is read only by the time-based window.
    """

    def __init__(
        self, kind: WindowType, size: int, *, clock: Callable[[], float]
    ) -> None:
        if size < 1:
            raise ValueError(f"window_size must be >= 1, got {size}")
        self.kind = kind
        self.size = size
        self._clock = clock
        # count: one (failed, slow) pair per call; time: [second, calls, failures, slow].
        self._ring: deque[tuple[bool, bool]] = deque()
        self._buckets: deque[list[int]] = deque()
        self._calls = 0
        self._failures = 0
        self._slow = 0

    def record(self, *, failed: bool, slow: bool) -> None:
        if self.kind == "count":
            if len(self._ring) == self.size:
                old_failed, old_slow = self._ring.popleft()
                self._calls -= 1
                self._failures -= old_failed
                self._slow -= old_slow
            self._ring.append((failed, slow))
        else:
            second = self._expire()
            if self._buckets and self._buckets[-1][0] == second:
                bucket = self._buckets[-1]
            else:
                bucket = [second, 0, 0, 0]
                self._buckets.append(bucket)
            bucket[1] += 1
            bucket[2] += failed
            bucket[3] += slow
        self._calls += 1
        self._failures += failed
        self._slow += slow

    def record_success(self, slow: bool, minimum_calls: int) -> bool:
        """`record(failed=False, slow=slow)`, and whether `exceeds(minimum_calls, ...)`
        may now say yes where it said no before the call (False: it still says no).

        A count window's success that is not slow lowers or keeps both rates: it adds a
        call, or (the window full) replaces an older one, failed or slow, or not. Only
        reaching `minimum_calls` with it can turn the answer. A slow success can raise
        the slow rate, and a time window's expiry can raise either rate: always asked.
        """
        if slow or self.kind != "count":
            self.record(failed=False, slow=slow)
            return True
        ring = self._ring
        if len(ring) == self.size:
            old_failed, old_slow = ring.popleft()
            self._failures -= old_failed
            self._slow -= old_slow
        else:
            self._calls += 1
        ring.append(_OK)
        return self._calls == minimum_calls

    def counts(self) -> WindowCounts:
        if self.kind == "time":
            self._expire()
        return WindowCounts(calls=self._calls, failures=self._failures, slow=self._slow)

    def exceeds(self, minimum_calls: int, failure_rate: float, slow_rate: float) -> bool:
        """Whether the window holds at least `minimum_calls` calls and its failure or
        slow-call rate (in %) has reached its threshold: what `counts()` would say,
        without building it (asked after every call the breaker records)."""
        if self.kind == "time":
            self._expire()
        calls = self._calls
        if calls < minimum_calls or calls == 0:
            return False
        # The same arithmetic as WindowCounts' rates, so both always agree.
        return (
            100.0 * self._failures / calls >= failure_rate
            or 100.0 * self._slow / calls >= slow_rate
        )

    def reset(self) -> None:
        self._ring.clear()
        self._buckets.clear()
        self._calls = self._failures = self._slow = 0

    def _expire(self) -> int:
        """Drop buckets older than the window; return the current second."""
        second = math.floor(self._clock())
        oldest = second - self.size + 1
        while self._buckets and self._buckets[0][0] < oldest:
            _, calls, failures, slow = self._buckets.popleft()
            self._calls -= calls
            self._failures -= failures
            self._slow -= slow
        return second
