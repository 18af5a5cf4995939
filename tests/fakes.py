"""Fakes shared across the test packages."""

from __future__ import annotations


class FakeClock:
    """A monotonic clock that stands still until `advance` moves it."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
