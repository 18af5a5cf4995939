"""Tuning knobs of the breaker and the retry policy, as frozen value types."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    # Consecutive failures that open the breaker.
    fail_max: int = 5
    # Seconds the breaker stays open before it admits half-open probes.
    reset_timeout_s: float = 60.0
    # Successful probes in half-open needed to close again.
    success_threshold: int = 1
    # Probes admitted at once in half-open; every other caller fails fast.
    half_open_max_calls: int = 1


@dataclass(frozen=True, slots=True)
class RetryConfig:
    # Attempts in all, the first one included (1 = no retry).
    max_attempts: int = 3
    base_delay_s: float = 1.0
    max_delay_s: float = 30.0
    # A Retry-After longer than this is capped to it, so an agent cannot park us.
    max_retry_after_s: float = 60.0


@dataclass(frozen=True, slots=True)
class RetryBudgetConfig:
    """Retries allowed per agent: at most `ratio` of recent calls plus `floor` per window.

    Keeps a failing agent from being stormed by every caller's retries at once.
    """

    ratio: float = 0.2
    floor: int = 10
    window_s: float = 10.0
