"""Fakes for the circuit tests: a clock moved by hand and a sleep that only records."""

from __future__ import annotations

import pytest

from tests.fakes import FakeClock


class FakeSleep:
    """An instant `asyncio.sleep` stand-in: records each delay and moves the clock by it."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        self.clock.advance(seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def wall_clock() -> FakeClock:
    return FakeClock(start=1_700_000_000.0)


@pytest.fixture
def sleep(clock: FakeClock) -> FakeSleep:
    return FakeSleep(clock)
