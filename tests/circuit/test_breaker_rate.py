"""The rate policy, recovery backoff and forced modes of AsyncCircuitBreaker."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from circuit import (
    AsyncCircuitBreaker,
    BreakerConfig,
    BreakerState,
    CircuitOpenError,
    Forced,
    open_wait_s,
)
from tests.fakes import FakeClock


class AgentDown(Exception):
    """Stands in for a connection error or a 5xx."""


async def ok() -> str:
    return "ok"


async def down() -> str:
    raise AgentDown("503")


def taking(clock: FakeClock, seconds: float, *, fail: bool = False) -> Callable[[], Awaitable[str]]:
    """A call that lasts `seconds` on the fake clock."""

    async def call() -> str:
        clock.advance(seconds)
        if fail:
            raise AgentDown("slow and failed")
        return "ok"

    return call


def make(clock: FakeClock, **overrides: Any) -> AsyncCircuitBreaker:
    config = BreakerConfig(**{"reset_timeout_s": 30.0, **overrides})
    return AsyncCircuitBreaker("data", config, clock=clock, rng=random.Random(7))


async def record(breaker: AsyncCircuitBreaker, failed: bool) -> None:
    try:
        await breaker.call(down if failed else ok)
    except AgentDown:
        pass


# -- opening on the rate ------------------------------------------------------------


async def test_default_policy_is_rate_based(clock: FakeClock) -> None:
    snap = make(clock).snapshot()
    assert snap.policy == "rate"
    assert (snap.window_type, snap.window_size, snap.minimum_calls) == ("count", 100, 20)
    assert snap.failure_rate_threshold == 60.0


async def test_opens_at_the_failure_rate_once_minimum_calls_are_in(clock: FakeClock) -> None:
    """Below `minimum_calls` nothing opens it, however bad; at the threshold it opens."""
    breaker = make(clock, window_size=10, minimum_calls=6, failure_rate_threshold=50.0)
    for _ in range(5):
        await record(breaker, failed=True)
    assert breaker.state is BreakerState.CLOSED  # 5 of 5 failed, but only 5 calls
    await record(breaker, failed=False)  # 6 calls, 5 failed: 83 % >= 50 %
    snap = breaker.snapshot()
    assert snap.state is BreakerState.OPEN
    assert snap.trips == 1
    assert snap.window is not None and (snap.window.calls, snap.window.failures) == (6, 5)


async def test_stays_closed_just_below_the_threshold(clock: FakeClock) -> None:
    breaker = make(clock, window_size=10, minimum_calls=10, failure_rate_threshold=50.0)
    for failed in [True, False] * 4 + [False, True]:  # 5 of 10: at the threshold
        assert breaker.state is BreakerState.CLOSED
        await record(breaker, failed=failed)
    assert breaker.state is BreakerState.OPEN
    breaker.reset()
    for failed in [True, False] * 4 + [False, False, True]:  # never 5 of the last 10
        await record(breaker, failed=failed)
    assert breaker.state is BreakerState.CLOSED


async def test_count_window_forgets_old_failures(clock: FakeClock) -> None:
    """Failures that slid out of the last N calls no longer count."""
    breaker = make(clock, window_size=10, minimum_calls=10, failure_rate_threshold=50.0)
    for failed in [True] * 4 + [False] * 10 + [True] * 4:
        await record(breaker, failed=failed)
    snap = breaker.snapshot()
    assert snap.state is BreakerState.CLOSED
    assert snap.window is not None and snap.window.failures == 4


async def test_time_window_forgets_failures_older_than_its_seconds(clock: FakeClock) -> None:
    breaker = make(
        clock, window_type="time", window_size=10, minimum_calls=4, failure_rate_threshold=50.0
    )
    for _ in range(3):
        await record(breaker, failed=True)
    clock.advance(11.0)
    for failed in (False, False, True):
        await record(breaker, failed=failed)
    assert breaker.state is BreakerState.CLOSED  # 1 of 3 in the window: too few, too good
    await record(breaker, failed=True)
    assert breaker.state is BreakerState.OPEN  # 2 of 4 within 10 s


async def test_slow_calls_open_it_even_when_they_succeed(clock: FakeClock) -> None:
    """A window full of slow answers opens at `slow_call_rate_threshold`."""
    breaker = make(
        clock, window_size=10, minimum_calls=5, slow_call_duration_s=2.0,
        slow_call_rate_threshold=60.0,
    )  # fmt: skip
    for _ in range(2):
        assert await breaker.call(taking(clock, 2.0)) == "ok"
    await breaker.call(taking(clock, 1.9))  # under the limit: not slow
    await breaker.call(taking(clock, 3.0))
    snap = breaker.snapshot()
    assert snap.window is not None and (snap.window.slow, snap.window.failures) == (3, 0)
    assert snap.state is BreakerState.CLOSED  # 4 calls < minimum_calls
    await breaker.call(taking(clock, 5.0))
    assert breaker.state is BreakerState.OPEN  # 4 of 5 slow = 80 % >= 60 %


async def test_a_slow_probe_reopens_it(clock: FakeClock) -> None:
    breaker = make(clock, minimum_calls=1, failure_rate_threshold=100.0, slow_call_duration_s=1.0)
    await record(breaker, failed=True)
    clock.advance(30.0)
    assert breaker.state is BreakerState.HALF_OPEN
    await breaker.call(taking(clock, 1.5))
    assert breaker.state is BreakerState.OPEN


async def test_consecutive_failures_alone_do_not_open_the_rate_policy(clock: FakeClock) -> None:
    """pybreaker's fail_max is not the trigger under the rate policy."""
    breaker = make(clock, fail_max=2, minimum_calls=50)
    for _ in range(10):
        await record(breaker, failed=True)
    assert breaker.state is BreakerState.CLOSED


async def test_a_close_starts_a_fresh_window(clock: FakeClock) -> None:
    breaker = make(clock, window_size=10, minimum_calls=4, failure_rate_threshold=50.0)
    for _ in range(4):
        await record(breaker, failed=True)
    clock.advance(30.0)
    await breaker.call(ok)  # the probe closes it
    snap = breaker.snapshot()
    assert snap.state is BreakerState.CLOSED
    assert snap.window is not None and snap.window.calls == 0
    for failed in (True, False, False):
        await record(breaker, failed=failed)
    assert breaker.state is BreakerState.CLOSED


# -- 30 %-flaky agents stay closed; dead ones are cut off ---------------------------------


@st.composite
def flaky_stream(draw: st.DrawFn) -> list[bool]:
    """Blocks of 10 calls, each with 3 failures in random places: 30 % failing, at random."""
    blocks = draw(st.integers(min_value=2, max_value=60))
    stream: list[bool] = []
    for _ in range(blocks):
        stream.extend(draw(st.permutations([True] * 3 + [False] * 7)))
    return stream


@settings(max_examples=60, deadline=None)
@given(
    stream=flaky_stream(),
    kind=st.sampled_from(["count", "time"]),
    gaps=st.lists(st.floats(min_value=0.0, max_value=2.0), min_size=1, max_size=50),
)
def test_a_30_percent_failure_stream_never_opens_the_default_breaker(
    stream: list[bool], kind: str, gaps: list[float]
) -> None:
    """Whatever the order of failures and the spacing of calls, 30 % stays below 60 %."""
    clock = FakeClock()
    breaker = make(clock, window_type=kind, window_size=100 if kind == "count" else 10)

    async def run() -> None:
        for i, failed in enumerate(stream):
            clock.advance(gaps[i % len(gaps)])
            await record(breaker, failed=failed)
            assert breaker.state is BreakerState.CLOSED

    asyncio.run(run())


@pytest.mark.parametrize("seed", range(5))
async def test_random_30_percent_failures_never_open_it_over_20000_calls(
    clock: FakeClock, seed: int
) -> None:
    """Independent 30 % failures (seeded): the default window never reaches 60 %."""
    rng = random.Random(seed)
    breaker = make(clock)
    for _ in range(20_000):
        await record(breaker, failed=rng.random() < 0.3)
    snap = breaker.snapshot()
    assert (snap.state, snap.trips) == (BreakerState.CLOSED, 0)


async def test_a_dead_agent_is_cut_off_after_minimum_calls(clock: FakeClock) -> None:
    breaker = make(clock)
    for _ in range(19):
        await record(breaker, failed=True)
    assert breaker.state is BreakerState.CLOSED
    await record(breaker, failed=True)
    assert breaker.state is BreakerState.OPEN


async def test_an_agent_that_dies_after_a_flaky_spell_is_cut_off_within_50_calls(
    clock: FakeClock,
) -> None:
    rng = random.Random(1)
    breaker = make(clock)
    for _ in range(500):
        await record(breaker, failed=rng.random() < 0.3)
    dead_calls = 0
    while breaker.state is BreakerState.CLOSED and dead_calls < 1000:
        await record(breaker, failed=True)
        dead_calls += 1
    assert dead_calls <= 50


# -- recovery backoff ---------------------------------------------------------------


def test_open_wait_grows_exponentially_with_jitter_and_a_cap() -> None:
    config = BreakerConfig(
        reset_timeout_s=10.0, backoff_multiplier=2.0, max_reset_timeout_s=100.0,
        backoff_jitter=0.2,
    )  # fmt: skip
    rng = random.Random(3)
    assert open_wait_s(config, 0, rng) == 10.0
    for level, full in [(1, 20.0), (2, 40.0), (3, 80.0), (4, 100.0), (40, 100.0), (10**6, 100.0)]:
        waits = [open_wait_s(config, level, rng) for _ in range(200)]
        assert all(full * 0.8 <= w <= full for w in waits)
        assert len(set(waits)) > 1  # jittered


async def test_failed_probes_back_off_and_a_close_resets_the_wait(clock: FakeClock) -> None:
    """Each failed probe lengthens the open wait; after a close it is the base again."""
    breaker = make(clock, minimum_calls=1, failure_rate_threshold=100.0, backoff_jitter=0.0)
    await record(breaker, failed=True)
    waits = []
    for _ in range(6):
        snap = breaker.snapshot()
        waits.append((snap.open_wait_s, snap.backoff_level))
        assert snap.half_open_at is not None and snap.opened_at is not None
        assert snap.half_open_at - snap.opened_at == snap.open_wait_s
        clock.advance(snap.open_wait_s - 0.01)
        assert breaker.state is BreakerState.OPEN
        clock.advance(0.02)
        assert breaker.state is BreakerState.HALF_OPEN
        await record(breaker, failed=True)
    assert waits == [(30.0, 0), (60.0, 1), (120.0, 2), (240.0, 3), (480.0, 4), (600.0, 5)]
    clock.advance(600.0)
    await breaker.call(ok)
    snap = breaker.snapshot()
    assert (snap.state, snap.open_wait_s, snap.backoff_level) == (BreakerState.CLOSED, 30.0, 0)
    await record(breaker, failed=True)
    assert breaker.snapshot().open_wait_s == 30.0


# -- forced modes ---------------------------------------------------------------------


async def test_forced_open_holds_past_the_wait_until_lifted(clock: FakeClock) -> None:
    breaker = make(clock)
    breaker.set_forced(Forced.OPEN)
    clock.advance(10_000.0)
    with pytest.raises(CircuitOpenError, match="open"):
        await breaker.call(ok)
    snap = breaker.snapshot()
    assert (snap.state, snap.forced, snap.half_open_at) == (BreakerState.OPEN, Forced.OPEN, None)
    breaker.set_forced(None)
    assert breaker.state is BreakerState.CLOSED
    assert await breaker.call(ok) == "ok"


async def test_disabled_admits_every_call_and_never_opens(clock: FakeClock) -> None:
    breaker = make(clock, minimum_calls=1)
    await record(breaker, failed=True)
    assert breaker.state is BreakerState.OPEN
    breaker.set_forced(Forced.DISABLED)
    for _ in range(200):
        await record(breaker, failed=True)
    snap = breaker.snapshot()
    assert (snap.state, snap.forced, snap.rejections) == (BreakerState.CLOSED, Forced.DISABLED, 0)
    assert snap.failures == 201  # still counted for metrics
    assert snap.window is not None and snap.window.calls == 0  # never recorded
    breaker.set_forced(None)  # enabled again: a fresh closed breaker
    assert breaker.state is BreakerState.CLOSED
    await record(breaker, failed=True)
    assert breaker.state is BreakerState.OPEN


async def test_setting_the_mode_in_force_again_changes_nothing(clock: FakeClock) -> None:
    seen: list[tuple[str, BreakerState, BreakerState]] = []
    breaker = AsyncCircuitBreaker(
        "data", BreakerConfig(), clock=clock, on_state_change=lambda *t: seen.append(t)
    )
    for _ in range(3):
        breaker.set_forced(Forced.OPEN)
    breaker.set_forced(Forced.FOLLOW)  # another holding mode: still open, no new trip
    breaker.set_forced(None)
    breaker.set_forced(None)
    assert [(old, new) for _, old, new in seen] == [
        (BreakerState.CLOSED, BreakerState.OPEN),
        (BreakerState.OPEN, BreakerState.CLOSED),
    ]
    assert breaker.snapshot().trips == 1


async def test_outcomes_of_calls_in_flight_across_a_forced_mode_are_ignored(
    clock: FakeClock,
) -> None:
    breaker = make(clock, minimum_calls=1)
    started, release = asyncio.Event(), asyncio.Event()

    async def held() -> str:
        started.set()
        await release.wait()
        raise AgentDown("late")

    task = asyncio.create_task(breaker.call(held))
    await started.wait()
    breaker.set_forced(Forced.DISABLED)
    breaker.set_forced(None)
    release.set()
    with pytest.raises(AgentDown):
        await task
    assert breaker.state is BreakerState.CLOSED


@pytest.mark.parametrize(
    "field, value",
    [("window_size", 0), ("minimum_calls", 0), ("failure_rate_threshold", 0.0),
     ("failure_rate_threshold", 101.0), ("slow_call_rate_threshold", 0.0),
     ("slow_call_duration_s", 0.0), ("backoff_multiplier", 0.5), ("backoff_jitter", 1.0),
     ("max_reset_timeout_s", -1.0), ("follow_share", 0.0), ("policy", "sometimes"),
     ("window_type", "forever"), ("share", "all")],
)  # fmt: skip
def test_rejects_nonsensical_rate_config(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        AsyncCircuitBreaker("data", BreakerConfig(**{field: value}))  # type: ignore[arg-type]
