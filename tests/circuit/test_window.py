"""SlidingWindow: failure and slow-call rates over the last N calls or the last T seconds."""

from __future__ import annotations

import pytest

from circuit.window import SlidingWindow, WindowCounts
from tests.fakes import FakeClock


def test_count_window_keeps_only_the_last_n_calls(clock: FakeClock) -> None:
    """The oldest call drops out as each new one comes in past the size."""
    window = SlidingWindow("count", 4, clock=clock)
    for failed in (True, True, False, False):
        window.record(failed=failed, slow=False)
    assert window.counts() == WindowCounts(calls=4, failures=2, slow=0)
    window.record(failed=False, slow=True)  # pushes out the first failure
    window.record(failed=False, slow=False)  # and the second
    counts = window.counts()
    assert counts == WindowCounts(calls=4, failures=0, slow=1)
    assert (counts.failure_rate, counts.slow_rate) == (0.0, 25.0)


def test_time_window_forgets_calls_older_than_its_seconds(clock: FakeClock) -> None:
    """Calls older than `size` seconds leave the window even when nothing new comes in."""
    window = SlidingWindow("time", 10, clock=clock)
    window.record(failed=True, slow=True)
    clock.advance(5.0)
    window.record(failed=False, slow=False)
    window.record(failed=True, slow=False)
    assert window.counts() == WindowCounts(calls=3, failures=2, slow=1)
    clock.advance(5.0)  # the first call is now 10 s old: out
    assert window.counts() == WindowCounts(calls=2, failures=1, slow=0)
    clock.advance(10.0)
    assert window.counts() == WindowCounts()


def test_time_window_counts_many_calls_in_one_second(clock: FakeClock) -> None:
    """Thousands of calls within one second are all counted."""
    window = SlidingWindow("time", 3, clock=clock)
    for i in range(5000):
        window.record(failed=i % 2 == 0, slow=False)
    assert window.counts() == WindowCounts(calls=5000, failures=2500, slow=0)


def test_reset_empties_it(clock: FakeClock) -> None:
    for kind in ("count", "time"):
        window = SlidingWindow(kind, 5, clock=clock)
        window.record(failed=True, slow=True)
        window.reset()
        assert window.counts() == WindowCounts()


def test_rates_and_dict_of_an_empty_window_are_zero() -> None:
    assert WindowCounts().to_dict() == {
        "calls": 0, "failures": 0, "slow": 0, "failure_rate": 0.0, "slow_rate": 0.0,
    }  # fmt: skip


def test_rejects_an_empty_size(clock: FakeClock) -> None:
    with pytest.raises(ValueError, match="window_size"):
        SlidingWindow("count", 0, clock=clock)
