"""The retry policy: tenacity with our stop/wait rules, the retry budget, Retry-After parsing."""

from __future__ import annotations

import asyncio
import gc
import random
import tracemalloc
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from email.utils import format_datetime
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt

from circuit import (
    CircuitOpenError,
    RetryBudget,
    RetryBudgetConfig,
    RetryConfig,
    backoff_delay,
    call_with_retry,
    parse_retry_after,
)
from tests.circuit.conftest import FakeSleep
from tests.fakes import FakeClock


class Unavailable(Exception):
    """Stands in for a 503 / timeout: retryable, maybe with a Retry-After."""

    def __init__(self, attempt: int, retry_after: float | None = None) -> None:
        super().__init__(f"attempt {attempt} failed")
        self.attempt = attempt
        self.retry_after = retry_after


class BadRequest(Exception):
    """Stands in for a 400: never worth retrying."""


def is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, Unavailable)


def hinted(exc: BaseException) -> float | None:
    return exc.retry_after if isinstance(exc, Unavailable) else None


class TopOfRange(random.Random):
    """A jitter source that always picks the top of the range, so delays are exact."""

    def uniform(self, a: float, b: float) -> float:
        return b


class Agent:
    """fn(attempt) for call_with_retry: fails the first `failures` attempts, then answers."""

    def __init__(self, failures: int, make_error: Callable[[int], BaseException] = Unavailable):
        self.failures = failures
        self.make_error = make_error
        self.attempts: list[int] = []
        self.errors: list[BaseException] = []

    async def __call__(self, attempt: int) -> str:
        self.attempts.append(attempt)
        if len(self.attempts) <= self.failures:
            error = self.make_error(attempt)
            self.errors.append(error)
            raise error
        return f"answered on attempt {attempt}"


Run = Callable[..., Awaitable[str]]


@pytest.fixture
def run(clock: FakeClock, sleep: FakeSleep) -> Run:
    async def go(fn: Callable[[int], Awaitable[str]], **kwargs: Any) -> str:
        options: dict[str, Any] = {
            "config": RetryConfig(max_attempts=3, base_delay_s=1.0, max_delay_s=30.0),
            "is_retryable": is_retryable,
            "retry_after_s": hinted,
            "clock": clock,
            "sleep": sleep,
            "rng": TopOfRange(),
        }
        options.update(kwargs)
        return await call_with_retry(fn, **options)

    return go


# -- what is retried ---------------------------------------------------------------------


async def test_retries_until_success(run: Run, sleep: FakeSleep) -> None:
    """A retryable failure is retried; fn sees 1-based attempt numbers; the result comes back."""
    agent = Agent(failures=2)
    assert await run(agent) == "answered on attempt 3"
    assert agent.attempts == [1, 2, 3]
    assert sleep.delays == [1.0, 2.0]


async def test_gives_up_after_max_attempts_with_the_last_error(run: Run, sleep: FakeSleep) -> None:
    """After max_attempts the caller gets the last attempt's own exception, not a RetryError."""
    agent = Agent(failures=10)
    with pytest.raises(Unavailable) as caught:
        await run(agent, config=RetryConfig(max_attempts=4, base_delay_s=1.0))
    assert agent.attempts == [1, 2, 3, 4]
    assert caught.value is agent.errors[-1]
    assert len(sleep.delays) == 3


async def test_single_attempt_config_never_retries(run: Run, sleep: FakeSleep) -> None:
    """max_attempts=1 means one call and no wait."""
    agent = Agent(failures=1)
    with pytest.raises(Unavailable):
        await run(agent, config=RetryConfig(max_attempts=1))
    assert agent.attempts == [1]
    assert sleep.delays == []


async def test_non_retryable_error_is_not_retried(run: Run, sleep: FakeSleep) -> None:
    """An error the classifier rejects (a 4xx) is raised after the first attempt."""
    agent = Agent(failures=1, make_error=lambda attempt: BadRequest("400"))
    with pytest.raises(BadRequest):
        await run(agent)
    assert agent.attempts == [1]
    assert sleep.delays == []


async def test_circuit_open_is_never_retried_even_if_the_classifier_says_so(
    run: Run, sleep: FakeSleep
) -> None:
    """An open breaker is final for this call, whatever is_retryable answers."""
    agent = Agent(
        failures=5,
        make_error=lambda attempt: CircuitOpenError("open", name="nlp", retry_after_s=5.0),
    )
    with pytest.raises(CircuitOpenError):
        await run(agent, is_retryable=lambda exc: True)
    assert agent.attempts == [1]


async def test_tenacity_alone_would_retry_cancellation(sleep: FakeSleep) -> None:
    """The trap we guard against: a catch-all tenacity predicate retries CancelledError."""
    calls = 0

    async def cancelled() -> None:
        nonlocal calls
        calls += 1
        raise asyncio.CancelledError

    retrying = AsyncRetrying(
        retry=retry_if_exception(lambda exc: True),
        stop=stop_after_attempt(3),
        sleep=sleep,
        reraise=True,
    )
    with pytest.raises(asyncio.CancelledError):
        await retrying(cancelled)
    assert calls == 3


async def test_cancellation_is_never_retried(run: Run, sleep: FakeSleep) -> None:
    """call_with_retry re-raises CancelledError at once, even with a catch-all classifier."""
    agent = Agent(failures=5, make_error=lambda attempt: asyncio.CancelledError())
    with pytest.raises(asyncio.CancelledError):
        await run(agent, is_retryable=lambda exc: True)
    assert agent.attempts == [1]
    assert sleep.delays == []


async def test_cancelling_the_task_mid_backoff_stops_retrying(clock: FakeClock) -> None:
    """A task cancelled while waiting between attempts ends with CancelledError, no more calls."""
    waiting = asyncio.Event()

    async def real_wait(seconds: float) -> None:
        waiting.set()
        await asyncio.Event().wait()  # parks until cancelled

    agent = Agent(failures=5)
    task = asyncio.create_task(
        call_with_retry(
            agent, config=RetryConfig(), is_retryable=is_retryable, clock=clock, sleep=real_wait
        )
    )
    await waiting.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert agent.attempts == [1]


# -- how long it waits -------------------------------------------------------------------


async def test_retry_after_sets_the_wait(run: Run, sleep: FakeSleep) -> None:
    """A Retry-After longer than the backoff is the wait, exactly."""
    agent = Agent(failures=1, make_error=lambda attempt: Unavailable(attempt, retry_after=7.0))
    await run(agent, config=RetryConfig(max_attempts=2, base_delay_s=0.01))
    assert sleep.delays == [7.0]


async def test_retry_after_is_capped(run: Run, sleep: FakeSleep) -> None:
    """An agent cannot park us: Retry-After is capped at max_retry_after_s."""
    agent = Agent(failures=1, make_error=lambda attempt: Unavailable(attempt, retry_after=3600))
    config = RetryConfig(max_attempts=2, base_delay_s=0.01, max_retry_after_s=60.0)
    await run(agent, config=config)
    assert sleep.delays == [60.0]


async def test_backoff_wins_over_a_shorter_retry_after(run: Run, sleep: FakeSleep) -> None:
    """A Retry-After shorter than the backoff does not shorten the wait."""
    agent = Agent(failures=1, make_error=lambda attempt: Unavailable(attempt, retry_after=0.5))
    await run(agent, config=RetryConfig(max_attempts=2, base_delay_s=4.0))
    assert sleep.delays == [4.0]


async def test_waits_follow_backoff_delay_with_the_given_rng(run: Run, sleep: FakeSleep) -> None:
    """Without a hint, each wait is backoff_delay(attempt) drawn from the injected rng."""
    config = RetryConfig(max_attempts=5, base_delay_s=1.0, max_delay_s=5.0)
    await run(Agent(failures=4), config=config, rng=random.Random(42))
    expected_rng = random.Random(42)
    assert sleep.delays == [backoff_delay(n, config, expected_rng) for n in (1, 2, 3, 4)]


async def test_on_retry_reports_each_retry(run: Run, sleep: FakeSleep) -> None:
    """on_retry gets (next attempt, the error, the delay) once per retry."""
    seen: list[tuple[int, BaseException, float]] = []
    agent = Agent(failures=2)
    await run(agent, on_retry=lambda n, exc, delay: seen.append((n, exc, delay)))
    assert [(n, delay) for n, _, delay in seen] == [(2, 1.0), (3, 2.0)]
    assert [exc for _, exc, _ in seen] == agent.errors


@given(
    attempt=st.integers(min_value=1, max_value=2000),
    base=st.floats(min_value=0.0, max_value=10.0),
    cap=st.floats(min_value=0.0, max_value=120.0),
    seed=st.integers(),
)
def test_backoff_stays_within_full_jitter_bounds(
    attempt: int, base: float, cap: float, seed: int
) -> None:
    """Every delay lies in [0, min(max_delay_s, base_delay_s * 2**(attempt-1))]."""
    config = RetryConfig(base_delay_s=base, max_delay_s=cap)
    ceiling = float(min(Fraction(cap), Fraction(base) * 2 ** (attempt - 1)))  # exact
    delay = backoff_delay(attempt, config, random.Random(seed))
    assert 0.0 <= delay <= ceiling
    assert backoff_delay(attempt, config, TopOfRange()) == ceiling


def test_backoff_is_jittered() -> None:
    """Full jitter: the same attempt gives many different delays, not a lockstep value."""
    config = RetryConfig(base_delay_s=1.0, max_delay_s=30.0)
    rng = random.Random(7)
    delays = {backoff_delay(3, config, rng) for _ in range(50)}
    assert len(delays) == 50
    assert min(delays) < 1.0 < 3.0 < max(delays) <= 4.0


# -- when it stops ------------------------------------------------------------------------


async def test_deadline_stops_before_a_wait_that_would_cross_it(
    run: Run, clock: FakeClock, sleep: FakeSleep
) -> None:
    """It never sleeps past the deadline: when the next wait would reach it, the last error."""
    agent = Agent(failures=10)
    deadline = clock.now + 2.5  # waits are 1, 2, 4: after the first, 1 + 2 would reach 3
    with pytest.raises(Unavailable) as caught:
        await run(agent, config=RetryConfig(max_attempts=10), deadline=deadline)
    assert agent.attempts == [1, 2]
    assert caught.value is agent.errors[-1]
    assert sleep.delays == [1.0]
    assert clock.now <= deadline


async def test_deadline_caps_a_long_retry_after(
    run: Run, sleep: FakeSleep, clock: FakeClock
) -> None:
    """A Retry-After beyond the deadline means giving up now rather than sleeping past it."""
    agent = Agent(failures=1, make_error=lambda attempt: Unavailable(attempt, retry_after=30.0))
    with pytest.raises(Unavailable):
        await run(agent, deadline=clock.now + 10.0)
    assert agent.attempts == [1]
    assert sleep.delays == []


async def test_budget_exhaustion_stops_retries(run: Run, clock: FakeClock) -> None:
    """Once the agent's retry budget is spent, failures are raised without retrying."""
    budget = RetryBudget(RetryBudgetConfig(ratio=0.0, floor=2, window_s=10.0), clock=clock)
    first = Agent(failures=10)
    with pytest.raises(Unavailable):
        await run(first, config=RetryConfig(max_attempts=5, base_delay_s=0.0), budget=budget)
    assert first.attempts == [1, 2, 3]  # two retries, then the budget said no
    second = Agent(failures=10)
    with pytest.raises(Unavailable):
        await run(second, config=RetryConfig(max_attempts=5, base_delay_s=0.0), budget=budget)
    assert second.attempts == [1]


async def test_a_retry_that_would_stop_anyway_costs_no_budget(run: Run, clock: FakeClock) -> None:
    """Running out of attempts or a non-retryable error does not spend the budget."""
    budget = RetryBudget(RetryBudgetConfig(ratio=0.0, floor=1, window_s=10.0), clock=clock)
    with pytest.raises(Unavailable):
        await run(Agent(failures=1), config=RetryConfig(max_attempts=1), budget=budget)
    with pytest.raises(BadRequest):
        await run(Agent(failures=1, make_error=lambda a: BadRequest()), budget=budget)
    assert budget.try_spend() is True
    assert budget.try_spend() is False


def test_budget_memory_stays_bounded_when_no_retry_is_ever_asked(clock: FakeClock) -> None:
    """Calls spread over a long run, with no retry ever asking for a total, do not pile
    up: the window's old time buckets go as new ones start."""

    def held_after(calls: int) -> int:
        for _ in range(calls):
            budget.record_call()
            clock.advance(1.0)  # every call in a time bucket of its own (0.5 s each)
        gc.collect()
        return tracemalloc.get_traced_memory()[0]

    budget = RetryBudget(RetryBudgetConfig(ratio=0.2, floor=1, window_s=10.0), clock=clock)
    tracemalloc.start()
    try:
        warm = held_after(1_000)
        later = held_after(20_000)
    finally:
        tracemalloc.stop()
    # A bucket held per call would be ~2 MB more here; a bounded window, nothing.
    assert later - warm < 16_384
    # And the budget still counts the window's calls: 10 s of calls, 1 a second.
    assert budget.try_spend() is True
    assert budget.try_spend() is True
    assert budget.try_spend() is True
    assert budget.try_spend() is False  # 1 + 0.2 * 10 allows three


def test_budget_allows_ratio_of_recent_calls_plus_floor(clock: FakeClock) -> None:
    """With ratio 0.2 and floor 1, 20 calls allow 1 + 4 retries."""
    budget = RetryBudget(RetryBudgetConfig(ratio=0.2, floor=1, window_s=10.0), clock=clock)
    for _ in range(20):
        budget.record_call()
    spent = sum(budget.try_spend() for _ in range(10))
    assert spent == 5
    assert budget.refusals == 5  # what orch_agent_retry_budget_refusals_total reports


def test_budget_refills_as_the_window_passes(clock: FakeClock) -> None:
    """Spent retries and old calls age out of the window; the floor comes back."""
    budget = RetryBudget(RetryBudgetConfig(ratio=0.5, floor=1, window_s=10.0), clock=clock)
    for _ in range(4):
        budget.record_call()
    assert [budget.try_spend() for _ in range(4)] == [True, True, True, False]
    clock.advance(5.0)
    assert budget.try_spend() is False  # still inside the window
    clock.advance(5.0)
    # the 3 retries and the 4 calls have aged out: only the floor is left
    assert [budget.try_spend() for _ in range(2)] == [True, False]


async def test_budget_counts_each_call_once(run: Run, clock: FakeClock) -> None:
    """Only first attempts count as calls: retries do not earn more retries."""
    budget = RetryBudget(RetryBudgetConfig(ratio=0.5, floor=0, window_s=10.0), clock=clock)
    agent = Agent(failures=10)
    with pytest.raises(Unavailable):
        await run(agent, config=RetryConfig(max_attempts=5, base_delay_s=0.0), budget=budget)
    assert agent.attempts == [1, 2]  # 1 call * 0.5 -> one retry


# -- Retry-After --------------------------------------------------------------------------

NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    "value, expected",
    [
        ("120", 120.0),
        (" 3 ", 3.0),
        ("0", 0.0),
        ("1.5", 1.5),
        ("Sat, 01 Mar 2025 12:00:30 GMT", 30.0),  # IMF-fixdate
        ("Saturday, 01-Mar-25 12:01:00 GMT", 60.0),  # obsolete RFC 850
        ("Sat Mar  1 12:00:10 2025", 10.0),  # obsolete asctime, no zone: GMT
        ("Sat, 01 Mar 2025 11:00:00 GMT", 0.0),  # in the past: no wait, never negative
    ],
)
def test_parse_retry_after_valid(value: str, expected: float) -> None:
    """Delay-seconds and every HTTP-date form give seconds from `now`."""
    assert parse_retry_after(value, now=NOW) == pytest.approx(expected)


@pytest.mark.parametrize(
    "value", [None, "", "   ", "soon", "-5", "-0.5", "nan", "inf", "12 seconds", "Mon, 99 Foo"]
)
def test_parse_retry_after_garbage_is_none(value: str | None) -> None:
    """Absent, negative or unparseable values give None."""
    assert parse_retry_after(value, now=NOW) is None


def test_parse_retry_after_date_defaults_to_the_current_time() -> None:
    """Without `now`, an HTTP-date is taken relative to the wall clock."""
    future = datetime.now(UTC).timestamp() + 3600
    header = format_datetime(datetime.fromtimestamp(future, UTC), usegmt=True)
    parsed = parse_retry_after(header)
    assert parsed is not None
    assert 3500 < parsed <= 3600
