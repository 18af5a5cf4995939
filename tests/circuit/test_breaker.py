"""AsyncCircuitBreaker: pybreaker's state machine behind an asyncio-safe gate."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pybreaker
import pytest
from structlog.testing import capture_logs

from circuit import (
    AsyncCircuitBreaker,
    BreakerConfig,
    BreakerState,
    CircuitOpenError,
    Outcome,
)
from tests.fakes import FakeClock


class AgentDown(Exception):
    """Stands in for a connection error or a 5xx."""


class AgentSaidNo(Exception):
    """Stands in for a 4xx: the agent is alive."""


class TooManyRequests(Exception):
    """Stands in for a 429: back-pressure, neither success nor failure."""


def classify(exc: BaseException) -> Outcome:
    if isinstance(exc, AgentSaidNo):
        return Outcome.SUCCESS
    if isinstance(exc, TooManyRequests):
        return Outcome.NEUTRAL
    return Outcome.FAILURE


class Transitions:
    """Records on_state_change calls."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, BreakerState, BreakerState]] = []

    def __call__(self, name: str, old: BreakerState, new: BreakerState) -> None:
        self.seen.append((name, old, new))


class RecordingListener(pybreaker.CircuitBreakerListener):
    """A plain pybreaker listener, as any pybreaker user would write one."""

    def __init__(self) -> None:
        self.changes: list[tuple[str | None, str]] = []
        self.failures: list[BaseException] = []
        self.successes = 0

    def state_change(
        self,
        cb: pybreaker.CircuitBreaker,
        old_state: pybreaker.CircuitBreakerState | None,
        new_state: pybreaker.CircuitBreakerState,
    ) -> None:
        self.changes.append((None if old_state is None else old_state.name, new_state.name))

    def failure(self, cb: pybreaker.CircuitBreaker, exc: BaseException) -> None:
        self.failures.append(exc)

    def success(self, cb: pybreaker.CircuitBreaker) -> None:
        self.successes += 1


BreakerFactory = Callable[..., AsyncCircuitBreaker]


@pytest.fixture
def make_breaker(clock: FakeClock, wall_clock: FakeClock) -> BreakerFactory:
    def make(
        *,
        fail_max: int = 3,
        reset_timeout_s: float = 30.0,
        success_threshold: int = 1,
        half_open_max_calls: int = 1,
        backoff_multiplier: float = 1.0,  # a fixed open wait; backoff has its own tests
        **kwargs: Any,
    ) -> AsyncCircuitBreaker:
        config = BreakerConfig(
            policy="consecutive",
            fail_max=fail_max,
            reset_timeout_s=reset_timeout_s,
            success_threshold=success_threshold,
            half_open_max_calls=half_open_max_calls,
            backoff_multiplier=backoff_multiplier,
        )
        return AsyncCircuitBreaker("nlp", config, clock=clock, wall_clock=wall_clock, **kwargs)

    return make


async def ok() -> str:
    return "ok"


async def down() -> str:
    raise AgentDown("connection refused")


async def fail_times(breaker: AsyncCircuitBreaker, n: int) -> None:
    for _ in range(n):
        with pytest.raises(AgentDown):
            await breaker.call(down, classify=classify)


async def trip(breaker: AsyncCircuitBreaker) -> None:
    await fail_times(breaker, breaker.config.fail_max)
    assert breaker.state is BreakerState.OPEN


async def trip_and_half_open(breaker: AsyncCircuitBreaker, clock: FakeClock) -> None:
    await trip(breaker)
    clock.advance(breaker.config.reset_timeout_s)
    assert breaker.state is BreakerState.HALF_OPEN


class Held:
    """An agent call that does not finish until the test says how."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self._release = asyncio.Event()
        self._error: Exception | None = None

    async def __call__(self) -> str:
        self.started.set()
        await self._release.wait()
        if self._error is not None:
            raise self._error
        return "late"

    def succeed(self) -> None:
        self._release.set()

    def fail(self, error: Exception) -> None:
        self._error = error
        self._release.set()


# -- closed -> open ---------------------------------------------------------------


async def test_passes_results_and_errors_through_while_closed(
    make_breaker: BreakerFactory,
) -> None:
    """A closed breaker returns the call's result and re-raises its very exception."""
    breaker = make_breaker()
    assert await breaker.call(ok) == "ok"
    error = AgentDown("boom")

    async def raise_it() -> None:
        raise error

    with pytest.raises(AgentDown) as caught:
        await breaker.call(raise_it)
    assert caught.value is error
    # pybreaker's frames are not left in the caller's traceback
    assert caught.traceback[-1].name == "raise_it"
    assert not [entry for entry in caught.traceback if "pybreaker" in str(entry.path)]
    assert breaker.state is BreakerState.CLOSED


async def test_opens_after_fail_max_consecutive_failures(make_breaker: BreakerFactory) -> None:
    """fail_max consecutive failures open it; one fewer does not."""
    breaker = make_breaker(fail_max=3)
    await fail_times(breaker, 2)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.snapshot().failure_count == 2
    await fail_times(breaker, 1)
    assert breaker.state is BreakerState.OPEN


async def test_success_in_closed_resets_the_failure_count(make_breaker: BreakerFactory) -> None:
    """Failures must be consecutive: a success in between starts the count again."""
    breaker = make_breaker(fail_max=3)
    await fail_times(breaker, 2)
    await breaker.call(ok)
    assert breaker.snapshot().failure_count == 0
    await fail_times(breaker, 2)
    assert breaker.state is BreakerState.CLOSED


async def test_an_exception_classified_success_counts_as_success(
    make_breaker: BreakerFactory,
) -> None:
    """A 4xx-like error is re-raised but counts as the agent being alive."""
    breaker = make_breaker(fail_max=2)
    await fail_times(breaker, 1)

    async def said_no() -> None:
        raise AgentSaidNo("400")

    for _ in range(5):
        with pytest.raises(AgentSaidNo):
            await breaker.call(said_no, classify=classify)
    snap = breaker.snapshot()
    assert snap.state is BreakerState.CLOSED
    assert snap.failure_count == 0
    assert snap.successes == 5


# -- open ---------------------------------------------------------------------------


async def test_fails_fast_while_open_without_calling(
    make_breaker: BreakerFactory, clock: FakeClock
) -> None:
    """While open every call is refused with CircuitOpenError and the function never runs."""
    breaker = make_breaker(reset_timeout_s=30.0)
    await trip(breaker)
    clock.advance(10.0)
    invoked = 0

    async def counted() -> str:
        nonlocal invoked
        invoked += 1
        return "should not run"

    for _ in range(5):
        with pytest.raises(CircuitOpenError) as caught:
            await breaker.call(counted)
        assert caught.value.name == "nlp"
        assert caught.value.retry_after_s == pytest.approx(20.0)
    assert invoked == 0
    assert breaker.snapshot().rejections == 5


async def test_half_opens_after_reset_timeout_on_the_injected_clock(
    make_breaker: BreakerFactory, clock: FakeClock
) -> None:
    """It reports OPEN until reset_timeout_s has passed on `clock`, HALF_OPEN from then."""
    breaker = make_breaker(reset_timeout_s=30.0)
    await trip(breaker)
    clock.advance(29.999)
    assert breaker.state is BreakerState.OPEN
    clock.advance(0.001)
    assert breaker.state is BreakerState.HALF_OPEN


# -- half-open ------------------------------------------------------------------------


@pytest.mark.parametrize("max_calls", [1, 3])
async def test_half_open_admits_exactly_max_calls_of_50_concurrent_callers(
    make_breaker: BreakerFactory, clock: FakeClock, max_calls: int
) -> None:
    """Of 50 concurrent callers in half-open, half_open_max_calls probe; the rest fail fast."""
    breaker = make_breaker(half_open_max_calls=max_calls)
    await trip_and_half_open(breaker, clock)
    release = asyncio.Event()
    everyone_answered = asyncio.Event()
    probes = 0
    refused: list[CircuitOpenError] = []

    def answered() -> None:
        if probes + len(refused) == 50:
            everyone_answered.set()

    async def probe() -> str:
        nonlocal probes
        probes += 1
        answered()
        await release.wait()
        return "probe"

    async def caller() -> str | None:
        try:
            return await breaker.call(probe)
        except CircuitOpenError as exc:
            refused.append(exc)
            answered()
            return None

    tasks = [asyncio.create_task(caller()) for _ in range(50)]
    await everyone_answered.wait()
    assert probes == max_calls
    assert len(refused) == 50 - max_calls
    assert all(exc.retry_after_s == 0.0 for exc in refused)
    assert breaker.snapshot().probes_in_flight == max_calls
    release.set()
    results = await asyncio.gather(*tasks)
    assert results.count("probe") == max_calls
    assert breaker.state is BreakerState.CLOSED


async def test_success_threshold_probes_close_it(
    make_breaker: BreakerFactory, clock: FakeClock
) -> None:
    """It stays half-open until success_threshold probes have succeeded."""
    breaker = make_breaker(success_threshold=3)
    await trip_and_half_open(breaker, clock)
    await breaker.call(ok)
    await breaker.call(ok)
    assert breaker.state is BreakerState.HALF_OPEN
    await breaker.call(ok)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.snapshot().failure_count == 0


async def test_failure_in_half_open_reopens_with_a_new_trip(
    make_breaker: BreakerFactory, clock: FakeClock
) -> None:
    """A failed probe re-opens it at once, counts a trip and restarts the (backed-off) timer."""
    breaker = make_breaker(success_threshold=2, reset_timeout_s=30.0, backoff_multiplier=2.0)
    await trip_and_half_open(breaker, clock)
    await breaker.call(ok)
    await fail_times(breaker, 1)
    snap = breaker.snapshot()
    assert snap.state is BreakerState.OPEN
    assert snap.trips == 2
    assert 48.0 <= snap.open_wait_s <= 60.0  # 30 s doubled, less up to 20 % jitter
    clock.advance(snap.open_wait_s - 0.001)
    assert breaker.state is BreakerState.OPEN
    clock.advance(0.002)
    assert breaker.state is BreakerState.HALF_OPEN
    # the success before the failure does not carry over into the new half-open
    await breaker.call(ok)
    assert breaker.state is BreakerState.HALF_OPEN


# -- cancellation, late and neutral outcomes --------------------------------------------


async def test_cancelled_probe_records_nothing_and_frees_its_slot(
    make_breaker: BreakerFactory, clock: FakeClock
) -> None:
    """Cancelling a probe neither re-opens the breaker nor keeps the probe slot."""
    breaker = make_breaker()
    await trip_and_half_open(breaker, clock)
    before = breaker.snapshot()
    held = Held()
    task = asyncio.create_task(breaker.call(held))
    await held.started.wait()
    with pytest.raises(CircuitOpenError):
        await breaker.call(ok)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    snap = breaker.snapshot()
    assert snap.state is BreakerState.HALF_OPEN
    assert snap.probes_in_flight == 0
    assert (snap.failures, snap.failure_count) == (before.failures, before.failure_count)
    assert await breaker.call(ok) == "ok"
    assert breaker.state is BreakerState.CLOSED


async def test_cancellations_while_closed_never_open_it(make_breaker: BreakerFactory) -> None:
    """However many calls are cancelled, the failure count does not move."""
    breaker = make_breaker(fail_max=2)
    for _ in range(5):
        held = Held()
        task = asyncio.create_task(breaker.call(held))
        await held.started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    snap = breaker.snapshot()
    assert snap.state is BreakerState.CLOSED
    assert snap.failure_count == 0
    assert snap.calls == 5


async def test_late_failure_from_before_the_trip_does_not_reopen(
    make_breaker: BreakerFactory, clock: FakeClock
) -> None:
    """A slow call admitted while closed that fails after the breaker half-opened is ignored."""
    breaker = make_breaker(fail_max=2)
    slow = Held()
    task = asyncio.create_task(breaker.call(slow, classify=classify))
    await slow.started.wait()
    await trip_and_half_open(breaker, clock)
    slow.fail(AgentDown("timed out at last"))
    with pytest.raises(AgentDown):
        await task
    snap = breaker.snapshot()
    assert snap.state is BreakerState.HALF_OPEN
    assert snap.trips == 1
    assert snap.failures == 3  # counted for metrics, ignored by the state machine


async def test_late_success_after_a_reopen_does_not_close(
    make_breaker: BreakerFactory, clock: FakeClock
) -> None:
    """A slow probe that succeeds after another probe re-opened the breaker is ignored."""
    breaker = make_breaker(half_open_max_calls=2)
    await trip_and_half_open(breaker, clock)
    slow = Held()
    task = asyncio.create_task(breaker.call(slow))
    await slow.started.wait()
    await fail_times(breaker, 1)
    assert breaker.state is BreakerState.OPEN
    slow.succeed()
    assert await task == "late"
    assert breaker.state is BreakerState.OPEN


async def test_late_probe_does_not_take_a_slot_of_the_next_half_open(
    make_breaker: BreakerFactory, clock: FakeClock
) -> None:
    """Probe slots belong to one half-open period; a stale probe still running frees the next."""
    breaker = make_breaker(half_open_max_calls=2)
    await trip_and_half_open(breaker, clock)
    slow = Held()
    task = asyncio.create_task(breaker.call(slow))
    await slow.started.wait()
    await fail_times(breaker, 1)
    clock.advance(breaker.config.reset_timeout_s)
    assert breaker.snapshot().probes_in_flight == 0
    slow.succeed()
    await task
    snap = breaker.snapshot()
    assert snap.state is BreakerState.HALF_OPEN
    assert snap.probes_in_flight == 0


async def test_neutral_outcome_changes_nothing(
    make_breaker: BreakerFactory, clock: FakeClock
) -> None:
    """A 429-like outcome neither resets nor adds to the failure count, and frees a probe slot."""

    async def throttled() -> None:
        raise TooManyRequests("429")

    breaker = make_breaker(fail_max=3)
    await fail_times(breaker, 2)
    with pytest.raises(TooManyRequests):
        await breaker.call(throttled, classify=classify)
    assert breaker.snapshot().failure_count == 2

    await fail_times(breaker, 1)
    clock.advance(breaker.config.reset_timeout_s)
    for _ in range(3):
        with pytest.raises(TooManyRequests):
            await breaker.call(throttled, classify=classify)
    snap = breaker.snapshot()
    assert snap.state is BreakerState.HALF_OPEN
    assert snap.probes_in_flight == 0
    assert (snap.successes, snap.failures) == (0, 3)


async def test_keyboard_interrupt_records_nothing(
    make_breaker: BreakerFactory, clock: FakeClock
) -> None:
    """A non-Exception exit is not an outcome: nothing recorded, probe slot freed."""
    breaker = make_breaker()
    await trip_and_half_open(breaker, clock)

    async def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        await breaker.call(interrupted)
    snap = breaker.snapshot()
    assert snap.state is BreakerState.HALF_OPEN
    assert snap.probes_in_flight == 0


# -- notifications ------------------------------------------------------------------------


async def test_on_state_change_is_called_once_per_change(
    make_breaker: BreakerFactory, clock: FakeClock
) -> None:
    """Every transition is reported exactly once, in order; no-op transitions are not."""
    transitions = Transitions()
    breaker = make_breaker(on_state_change=transitions)
    await trip(breaker)
    for _ in range(3):
        clock.advance(breaker.config.reset_timeout_s)
        assert breaker.state is BreakerState.HALF_OPEN  # repeated reads: one transition
    await fail_times(breaker, 1)
    clock.advance(breaker.config.reset_timeout_s)
    await breaker.call(ok)
    breaker.reset()  # already closed
    o, h, c = BreakerState.OPEN, BreakerState.HALF_OPEN, BreakerState.CLOSED
    assert transitions.seen == [
        ("nlp", c, o),
        ("nlp", o, h),
        ("nlp", h, o),
        ("nlp", o, h),
        ("nlp", h, c),
    ]


async def test_pybreaker_listeners_see_transitions_and_outcomes(
    make_breaker: BreakerFactory, clock: FakeClock
) -> None:
    """pybreaker is the state machine: its listeners see each transition and outcome."""
    listener = RecordingListener()
    breaker = make_breaker(fail_max=2, listeners=[listener])
    await breaker.call(ok)
    await trip_and_half_open(breaker, clock)
    await breaker.call(ok)
    assert listener.changes == [
        ("closed", "open"),
        ("open", "half-open"),
        ("half-open", "closed"),
    ]
    assert listener.successes == 2
    assert [type(exc) for exc in listener.failures] == [AgentDown, AgentDown]


async def test_failing_state_change_callback_is_logged_not_raised(
    make_breaker: BreakerFactory,
) -> None:
    """An observer's exception does not reach the caller or corrupt the state machine."""

    def broken(name: str, old: BreakerState, new: BreakerState) -> None:
        raise RuntimeError("observer bug")

    breaker = make_breaker(fail_max=1, on_state_change=broken)
    with capture_logs() as logs:
        await fail_times(breaker, 1)
    assert breaker.state is BreakerState.OPEN
    assert [entry["event"] for entry in logs] == ["breaker_listener_failed"]


# -- snapshot and ops -----------------------------------------------------------------


async def test_snapshot_reports_state_counters_and_times(
    make_breaker: BreakerFactory, clock: FakeClock, wall_clock: FakeClock
) -> None:
    """The snapshot carries thresholds, counters and wall-clock open/half-open times."""
    breaker = make_breaker(fail_max=2, reset_timeout_s=30.0, success_threshold=2)
    fresh = breaker.snapshot()
    assert (fresh.state, fresh.opened_at, fresh.half_open_at, fresh.trips) == (
        BreakerState.CLOSED,
        None,
        None,
        0,
    )
    await breaker.call(ok)
    await fail_times(breaker, 2)
    opened_wall = wall_clock.now
    with pytest.raises(CircuitOpenError):
        await breaker.call(ok)
    snap = breaker.snapshot()
    assert snap.name == "nlp"
    assert snap.state is BreakerState.OPEN
    assert snap.failure_count == 2
    assert (snap.fail_max, snap.reset_timeout_s) == (2, 30.0)
    assert (snap.success_threshold, snap.half_open_max_calls) == (2, 1)
    assert snap.opened_at == opened_wall
    assert snap.half_open_at == opened_wall + 30.0
    assert (snap.calls, snap.successes, snap.failures) == (3, 1, 2)
    assert (snap.rejections, snap.trips, snap.probes_in_flight) == (1, 1, 0)

    clock.advance(30.0)
    wall_clock.advance(30.0)
    half = breaker.snapshot()
    assert half.state is BreakerState.HALF_OPEN
    assert half.half_open_at is None
    assert half.opened_at == opened_wall

    as_dict = half.to_dict()
    assert as_dict["state"] == "half_open"
    assert as_dict["opened_at"] == opened_wall
    assert set(as_dict) == {
        "name", "state", "policy", "forced", "failure_count", "fail_max", "window",
        "window_type", "window_size", "failure_rate_threshold", "slow_call_duration_s",
        "slow_call_rate_threshold", "minimum_calls", "reset_timeout_s", "open_wait_s",
        "backoff_level", "success_threshold", "half_open_max_calls", "opened_at",
        "half_open_at", "probes_in_flight", "calls", "successes", "failures", "rejections",
        "trips",
    }  # fmt: skip
    assert (as_dict["policy"], as_dict["forced"], as_dict["window"]) == ("consecutive", None, None)


async def test_reset_closes_now_and_clears_the_state_machine(
    make_breaker: BreakerFactory,
) -> None:
    """reset closes an open breaker at once with a zero failure count; metrics stay."""
    transitions = Transitions()
    breaker = make_breaker(fail_max=2, on_state_change=transitions)
    await trip(breaker)
    breaker.reset()
    snap = breaker.snapshot()
    assert (snap.state, snap.failure_count, snap.half_open_at) == (BreakerState.CLOSED, 0, None)
    assert (snap.trips, snap.failures) == (1, 2)
    assert transitions.seen[-1] == ("nlp", BreakerState.OPEN, BreakerState.CLOSED)
    assert await breaker.call(ok) == "ok"
    await fail_times(breaker, 1)
    assert breaker.state is BreakerState.CLOSED


async def test_reset_discards_outcomes_of_calls_admitted_before_it(
    make_breaker: BreakerFactory,
) -> None:
    """A call in flight across a reset does not count against the fresh breaker."""
    breaker = make_breaker(fail_max=1)
    slow = Held()
    task = asyncio.create_task(breaker.call(slow, classify=classify))
    await slow.started.wait()
    breaker.reset()
    slow.fail(AgentDown("old news"))
    with pytest.raises(AgentDown):
        await task
    assert breaker.state is BreakerState.CLOSED


@pytest.mark.parametrize(
    "field, value",
    [("fail_max", 0), ("success_threshold", 0), ("half_open_max_calls", 0),
     ("reset_timeout_s", -1.0)],
)  # fmt: skip
def test_rejects_nonsensical_config(field: str, value: float) -> None:
    """Thresholds below one (or a negative timeout) are configuration errors."""
    with pytest.raises(ValueError, match=field):
        bad: dict[str, Any] = {field: value}
        AsyncCircuitBreaker("nlp", BreakerConfig(**bad))
