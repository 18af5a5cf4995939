"""Tuning knobs of the breaker and the retry policy, as frozen value types.

These are part of the settings model (orchestrator/settings.py reads them from the
TOML file): each field's default here is the only one, and its type carries the
constraint a configured value is checked against (`Annotated[..., msgspec.Meta]`).
Per-agent defaults that differ from a field's are in agents/registry.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from msgspec import Meta

# A count or a duration: zero or negative would make no sense anywhere these are used.
PositiveInt = Annotated[int, Meta(gt=0)]
PositiveFloat = Annotated[float, Meta(gt=0)]

BreakerPolicy = Literal["consecutive", "rate"]
WindowType = Literal["count", "time"]
SharePolicy = Literal["view", "follow"]


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """One agent's breaker. Defaults keep a ~30 %-flaky agent closed and cut a dead one off.

    `policy = "rate"` (the default) opens on the sliding window's failure or slow-call
    rate, the model Resilience4j users know; `policy = "consecutive"` opens after
    `fail_max` failures in a row (the original behaviour).
    """

    policy: BreakerPolicy = "rate"
    # consecutive: failures in a row that open the breaker.
    fail_max: PositiveInt = 5
    # rate: the window is the last `window_size` calls ("count") or seconds ("time").
    window_type: WindowType = "count"
    window_size: PositiveInt = 100
    # rate: open when at least this share (%) of the window's calls failed ...
    failure_rate_threshold: PositiveFloat = 60.0
    # ... or when at least this share (%) took `slow_call_duration_s` or longer ...
    slow_call_duration_s: PositiveFloat = 10.0
    slow_call_rate_threshold: PositiveFloat = 80.0
    # ... but never on fewer calls than this (a cold window proves nothing).
    minimum_calls: PositiveInt = 20
    # Seconds the breaker stays open before it admits half-open probes (the base wait).
    reset_timeout_s: PositiveFloat = 60.0
    # A failed probe re-opens with the wait multiplied by this, jittered, capped below.
    backoff_multiplier: PositiveFloat = 2.0
    max_reset_timeout_s: PositiveFloat = 600.0
    # A re-open's wait is drawn from [wait * (1 - jitter), wait], so replicas drift apart.
    backoff_jitter: Annotated[float, Meta(ge=0)] = 0.2
    # Successful probes in half-open needed to close again.
    success_threshold: PositiveInt = 1
    # Probes admitted at once in half-open; every other caller fails fast.
    half_open_max_calls: PositiveInt = 1
    # Across replicas: "view" publishes and obeys ops actions; "follow" also opens
    # when `follow_share` of the live replicas have opened this breaker themselves.
    share: SharePolicy = "view"
    follow_share: PositiveFloat = 0.5


@dataclass(frozen=True, slots=True)
class RetryConfig:
    # Attempts in all, the first one included (1 = no retry).
    max_attempts: PositiveInt = 3
    base_delay_s: PositiveFloat = 1.0
    max_delay_s: PositiveFloat = 30.0
    # A Retry-After longer than this is capped to it, so an agent cannot park us.
    max_retry_after_s: PositiveFloat = 60.0


@dataclass(frozen=True, slots=True)
class RetryBudgetConfig:
    """Retries allowed per agent: at most `ratio` of recent calls plus `floor` per window.

    Keeps a failing agent from being stormed by every caller's retries at once.
    """

    ratio: PositiveFloat = 0.2
    floor: PositiveInt = 10
    window_s: PositiveFloat = 10.0
