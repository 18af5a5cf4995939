"""The retry policy for agent calls: tenacity's `AsyncRetrying` with our stop and wait rules.

- wait: exponential backoff with full jitter, or the agent's `Retry-After` (capped
  at `max_retry_after_s`) when that is longer.
- stop: after `max_attempts`; before a wait that would reach the deadline; when the
  agent's retry budget refuses. The caller then gets the last error unchanged.
- never retried, whatever the caller's classifier says: `asyncio.CancelledError`
  (tenacity catches `BaseException`, so a catch-all predicate would retry it),
  any other non-`Exception`, and `CircuitOpenError`.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import UTC
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception

from circuit.config import RetryBudgetConfig, RetryConfig
from circuit.errors import CircuitOpenError

__all__ = [
    "RetryBudget",
    "backoff_delay",
    "call_with_retry",
    "is_retried",
    "parse_retry_after",
    "retry_after_failure",
]

T = TypeVar("T")

# Budget counts are kept in this many time buckets per window, so memory stays
# constant however busy the agent is; a count expires up to one bucket early.
_BUDGET_BUCKETS = 20

_default_rng = random.Random()


class RetryBudget:
    """Retries allowed for one agent: fewer than `ratio` * recent calls + `floor` per window.

    Shared by every caller of the agent, so that when it fails, retries add at most
    ~`ratio` to the load instead of multiplying it by `max_attempts`.
    """

    def __init__(
        self, config: RetryBudgetConfig, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if config.window_s <= 0:
            raise ValueError(f"window_s must be > 0, got {config.window_s}")
        if config.ratio < 0 or config.floor < 0:
            raise ValueError("ratio and floor must be >= 0")
        self.config = config
        self._clock = clock
        self._bucket_s = config.window_s / _BUDGET_BUCKETS
        self._calls = _WindowCounter()
        self._retries = _WindowCounter()
        self.refusals = 0
        """Retries refused so far (metrics)."""

    def record_call(self) -> None:
        """Count a first attempt."""
        self._calls.add(self._clock(), self._bucket_s, self.config.window_s)

    def try_spend(self) -> bool:
        """Consume one retry and return True if the budget allows it; else False."""
        now = self._clock()
        horizon = now - self.config.window_s
        calls = self._calls.total(horizon)
        retries = self._retries.total(horizon)
        if retries >= self.config.floor + self.config.ratio * calls:
            self.refusals += 1
            return False
        self._retries.add(now, self._bucket_s, self.config.window_s)
        return True


class _WindowCounter:
    """Event counts in time buckets: [[bucket start, count], ...], oldest first."""

    def __init__(self) -> None:
        self._buckets: deque[list[float]] = deque()

    def add(self, now: float, bucket_s: float, window_s: float) -> None:
        buckets = self._buckets
        if buckets and now - buckets[-1][0] < bucket_s:
            buckets[-1][1] += 1
            return
        # A new bucket: drop those out of the window here too, not only in `total`. An
        # agent that never fails never asks for a total, and its calls would otherwise
        # keep a bucket per `bucket_s` for as long as the service runs.
        horizon = now - window_s
        while buckets and buckets[0][0] <= horizon:
            buckets.popleft()
        buckets.append([now, 1])

    def total(self, horizon: float) -> float:
        while self._buckets and self._buckets[0][0] <= horizon:
            self._buckets.popleft()
        return sum(count for _, count in self._buckets)


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header (RFC 9110 §10.2.3).

    Accepts delay-seconds (a non-negative number; fractions are tolerated) or an
    HTTP-date, taken relative to `now` (epoch seconds, default the current time); a
    date in the past gives 0. Returns None when absent or unparseable (including a
    negative number); never a negative value.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        return _seconds_until_http_date(text, time.time() if now is None else now)
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return seconds


def _seconds_until_http_date(text: str, now: float) -> float | None:
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        # HTTP-dates are always GMT; obsolete formats may come without a zone.
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


def backoff_delay(attempt: int, config: RetryConfig, rng: random.Random) -> float:
    """Full-jitter backoff after failed attempt `attempt` (1-based).

    uniform(0, min(max_delay_s, base_delay_s * 2 ** (attempt - 1))).
    """
    try:
        # ldexp scales by a power of two exactly, and raises rather than returning inf.
        ceiling = math.ldexp(config.base_delay_s, max(0, attempt - 1))
    except OverflowError:
        ceiling = math.inf
    return rng.uniform(0.0, min(config.max_delay_s, ceiling))


def _is_never_retried(exc: BaseException) -> bool:
    return not isinstance(exc, Exception) or isinstance(exc, CircuitOpenError)


async def call_with_retry(
    fn: Callable[[int], Awaitable[T]],
    *,
    config: RetryConfig,
    is_retryable: Callable[[BaseException], bool],
    retry_after_s: Callable[[BaseException], float | None] = lambda e: None,
    budget: RetryBudget | None = None,
    deadline: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    rng: random.Random | None = None,
    on_retry: Callable[[int, BaseException, float], None] | None = None,
) -> T:
    """Call `fn(attempt)` (attempt 1-based) until it returns or the policy gives up.

    An exception is retried only if `is_retryable` says so and it is neither a
    cancellation (nor any other non-`Exception`) nor a `CircuitOpenError`. Waits are
    `max(backoff_delay(...), min(retry_after_s(error), config.max_retry_after_s))`.
    Stops after `config.max_attempts`, when the next wait would reach `deadline`
    (on `clock`), or when `budget` refuses a retry; then re-raises the last error
    itself (never `tenacity.RetryError`). `on_retry(next_attempt, error, delay_s)` is
    called once before each wait.
    """
    if budget is not None:
        budget.record_call()
    # Fast path: most calls succeed on the first attempt, so make it before building
    # tenacity's machinery.
    try:
        return await fn(1)
    except BaseException as exc:
        if not is_retried(exc, is_retryable):
            raise
        first_error = exc
    return await retry_after_failure(
        first_error,
        fn,
        config=config,
        is_retryable=is_retryable,
        retry_after_s=retry_after_s,
        budget=budget,
        deadline=deadline,
        clock=clock,
        sleep=sleep,
        rng=rng,
        on_retry=on_retry,
    )


def is_retried(exc: BaseException, is_retryable: Callable[[BaseException], bool]) -> bool:
    """Whether `call_with_retry` would consider retrying after `exc`: `is_retryable`
    says so and it is neither a cancellation (nor any other non-`Exception`) nor a
    `CircuitOpenError`."""
    return not _is_never_retried(exc) and is_retryable(exc)


async def retry_after_failure(
    first_error: BaseException,
    fn: Callable[[int], Awaitable[T]],
    *,
    config: RetryConfig,
    is_retryable: Callable[[BaseException], bool],
    retry_after_s: Callable[[BaseException], float | None] = lambda e: None,
    budget: RetryBudget | None = None,
    deadline: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    rng: random.Random | None = None,
    on_retry: Callable[[int, BaseException, float], None] | None = None,
) -> T:
    """`call_with_retry` from its second attempt on, for a caller that made the first
    itself (and recorded it in `budget`) and got `first_error`, which `is_retried`.

    `first_error` is handed to tenacity as attempt 1's outcome (`replay` below), so the
    stop, wait and before-sleep decisions are tenacity's, exactly as if it had made
    the first attempt itself.
    """
    retrying = _policy(
        first_error,
        config=config,
        is_retryable=is_retryable,
        retry_after_s=retry_after_s,
        budget=budget,
        deadline=deadline,
        clock=clock,
        sleep=sleep,
        jitter=rng if rng is not None else _default_rng,
        on_retry=on_retry,
    )
    async for attempt in retrying:
        with attempt:
            number = attempt.retry_state.attempt_number
            if number == 1:
                raise first_error  # replay: attempt 1 was made by the caller
            return await fn(number)
    raise AssertionError("unreachable: tenacity returns or re-raises the last error")


def _policy(
    first_error: BaseException,
    *,
    config: RetryConfig,
    is_retryable: Callable[[BaseException], bool],
    retry_after_s: Callable[[BaseException], float | None],
    budget: RetryBudget | None,
    deadline: float | None,
    clock: Callable[[], float],
    sleep: Callable[[float], Awaitable[None]],
    jitter: random.Random,
    on_retry: Callable[[int, BaseException, float], None] | None,
) -> AsyncRetrying:
    """tenacity's `AsyncRetrying` with our stop and wait rules (see `call_with_retry`)."""

    def should_retry(exc: BaseException) -> bool:
        if exc is first_error:
            return True  # already classified by call_with_retry: ask once per error
        return not _is_never_retried(exc) and is_retryable(exc)

    def wait(state: RetryCallState) -> float:
        delay = backoff_delay(state.attempt_number, config, jitter)
        hinted = retry_after_s(_error(state))
        if hinted is not None and hinted > 0:
            delay = max(delay, min(hinted, config.max_retry_after_s))
        return delay

    def stop(state: RetryCallState) -> bool:
        # tenacity runs `wait` before `stop`, so the upcoming sleep is known here.
        if state.attempt_number >= config.max_attempts:
            return True
        if deadline is not None and clock() + state.upcoming_sleep >= deadline:
            return True
        # Spend last, so a retry that was going to stop anyway costs no budget.
        return budget is not None and not budget.try_spend()

    def before_sleep(state: RetryCallState) -> None:
        if on_retry is not None:
            on_retry(state.attempt_number + 1, _error(state), state.upcoming_sleep)

    return AsyncRetrying(
        sleep=sleep,
        stop=stop,
        wait=wait,
        retry=retry_if_exception(should_retry),
        before_sleep=before_sleep,
        reraise=True,
    )


def _error(state: RetryCallState) -> BaseException:
    outcome = state.outcome
    error = None if outcome is None else outcome.exception()
    if error is None:
        raise AssertionError("tenacity asked to retry without a failed attempt")
    return error
