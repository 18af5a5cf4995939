"""SlidingWindow: failure and slow-call rates over the last N calls or the last T seconds."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from circuit.config import WindowType
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


_CALLS = st.lists(st.tuples(st.booleans(), st.booleans(), st.booleans()), max_size=80)


@settings(max_examples=300, deadline=None)
@given(
    kind=st.sampled_from(["count", "time"]),
    size=st.integers(1, 8),
    minimum_calls=st.integers(1, 10),
    failure_rate=st.sampled_from([1.0, 33.4, 50.0, 60.0, 100.0]),
    slow_rate=st.sampled_from([1.0, 50.0, 80.0, 100.0]),
    calls=_CALLS,
)
def test_record_success_counts_as_record_and_says_when_exceeds_may_turn(
    kind: WindowType,
    size: int,
    minimum_calls: int,
    failure_rate: float,
    slow_rate: float,
    calls: list[tuple[bool, bool, bool]],
) -> None:
    """`record_success` leaves the counts `record(failed=False)` would, and when it
    says False, an `exceeds` that said no before still says no (the breaker, which
    opens on its first yes, then asks it not)."""
    clock = FakeClock()
    window = SlidingWindow(kind, size, clock=clock)
    reference = SlidingWindow(kind, size, clock=clock)
    for failed, slow, tick in calls:
        if tick:
            clock.advance(0.7)
        before = window.exceeds(minimum_calls, failure_rate, slow_rate)
        if failed:
            window.record(failed=True, slow=slow)
        elif not window.record_success(slow, minimum_calls) and not before:
            assert not window.exceeds(minimum_calls, failure_rate, slow_rate)
        reference.record(failed=failed, slow=slow)
        assert window.counts() == reference.counts()
