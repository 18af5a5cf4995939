"""Failure injection for the reference agents, so a breaker can be watched opening.

Every /process request first sleeps `delay_ms`, then, with probability
`fail_rate`, answers `fail_status` (503 by default) without doing any work.
The settings change live through `POST /control`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Final

from agents.reference.contract import JSONObject, MalformedInput, UnusableInput

MAX_DELAY_MS: Final = 600_000.0
CONTROL_KEYS: Final = frozenset({"delay_ms", "fail_rate", "fail_status", "seed"})


def check_delay_ms(value: float) -> float:
    if not 0 <= value <= MAX_DELAY_MS:
        raise ValueError(f"delay_ms must be between 0 and {MAX_DELAY_MS:.0f}, not {value}")
    return float(value)


def check_fail_rate(value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"fail_rate must be between 0 and 1, not {value}")
    return float(value)


def check_fail_status(value: int) -> int:
    # An injected failure must look like an HTTP error, never like a success.
    if not 400 <= value <= 599:
        raise ValueError(f"fail_status must be an HTTP error status (400-599), not {value}")
    return value


@dataclass
class Faults:
    """The live failure-injection settings of one agent; `rng` decides each failure."""

    delay_ms: float = 0.0
    fail_rate: float = 0.0
    fail_status: int = 503
    rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        check_delay_ms(self.delay_ms)
        check_fail_rate(self.fail_rate)
        check_fail_status(self.fail_status)

    def should_fail(self) -> bool:
        # Drawn only when failures are on, so fail_rate 0 never advances a seeded rng.
        return self.fail_rate > 0 and self.rng.random() < self.fail_rate

    def as_dict(self) -> JSONObject:
        return {
            "delay_ms": self.delay_ms,
            "fail_rate": self.fail_rate,
            "fail_status": self.fail_status,
        }

    def update(self, changes: dict[str, Any]) -> None:
        """Apply a /control body: any of delay_ms, fail_rate, fail_status, seed.

        Checks every key before changing any, so a bad body changes nothing.
        """
        unknown = set(changes) - CONTROL_KEYS
        if unknown:
            raise MalformedInput(
                f"unknown control keys {sorted(unknown)}; known: {sorted(CONTROL_KEYS)}"
            )
        for key in ("delay_ms", "fail_rate"):
            value = changes.get(key, 0)
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise MalformedInput(f"'{key}' must be a number")
        for key in ("fail_status", "seed"):
            value = changes.get(key, 0)
            if key == "seed" and value is None:
                continue  # reseed from the OS
            if not isinstance(value, int) or isinstance(value, bool):
                raise MalformedInput(f"'{key}' must be an integer")
        try:
            delay_ms = check_delay_ms(changes.get("delay_ms", self.delay_ms))
            fail_rate = check_fail_rate(changes.get("fail_rate", self.fail_rate))
            fail_status = check_fail_status(changes.get("fail_status", self.fail_status))
        except ValueError as exc:
            raise UnusableInput(str(exc), code="invalid_control") from exc
        self.delay_ms, self.fail_rate, self.fail_status = delay_ms, fail_rate, fail_status
        if "seed" in changes:
            self.rng.seed(changes["seed"])
