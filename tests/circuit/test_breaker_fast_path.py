"""The breaker's fast paths behave exactly like its general path.

`AsyncCircuitBreaker` answers the happy path from its own fields: `admit` when closed
is a field read, and a closed success that would change nothing in pybreaker (its
failure counter already 0, no listener of the caller's to tell) skips pybreaker.
A breaker given a pybreaker listener always takes the general path, so running the
same calls through one breaker of each kind and comparing them after every step
shows the fast paths change nothing: state, counters, window, transitions. The
listener also hands the test pybreaker's own breaker, whose stored state the
fast path's cached field must always match.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

import pybreaker
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from circuit import AsyncCircuitBreaker, BreakerConfig, BreakerState, CircuitOpenError, Forced
from circuit.breaker import Outcome
from tests.fakes import FakeClock

_PYBREAKER_NAMES = {
    pybreaker.STATE_CLOSED: BreakerState.CLOSED,
    pybreaker.STATE_OPEN: BreakerState.OPEN,
    pybreaker.STATE_HALF_OPEN: BreakerState.HALF_OPEN,
}


class Down(Exception):
    """A failed attempt (connection error, 5xx)."""


class Busy(Exception):
    """A 429: neutral."""


def classify(exc: BaseException) -> Outcome:
    return Outcome.NEUTRAL if isinstance(exc, Busy) else Outcome.FAILURE


class Watcher(pybreaker.CircuitBreakerListener):
    """Keeps pybreaker's own breaker, to read its stored state; counts outcomes."""

    def __init__(self) -> None:
        self.cb: pybreaker.CircuitBreaker | None = None
        self.successes = 0

    def before_call(self, cb: pybreaker.CircuitBreaker, func: Any, *args: Any, **kw: Any) -> None:
        self.cb = cb

    def success(self, cb: pybreaker.CircuitBreaker) -> None:
        self.successes += 1


class Pair:
    """Two breakers fed the same calls: `fast` (no listener) and `slow` (with one).

    Each has its own clocks and jitter source, moved and drawn identically."""

    def __init__(self, config: BreakerConfig) -> None:
        self.watcher = Watcher()
        self.transitions: dict[str, list[tuple[BreakerState, BreakerState]]] = {
            "fast": [],
            "slow": [],
        }
        self.breakers: list[tuple[AsyncCircuitBreaker, FakeClock]] = []
        for name in ("fast", "slow"):
            clock = FakeClock()
            seen = self.transitions[name]

            def observe(
                _name: str,
                old: BreakerState,
                new: BreakerState,
                seen: list[tuple[BreakerState, BreakerState]] = seen,
            ) -> None:
                seen.append((old, new))

            self.breakers.append(
                (
                    AsyncCircuitBreaker(
                        "nlp",
                        config,
                        clock=clock,
                        wall_clock=FakeClock(start=1_700_000_000.0),
                        rng=random.Random(3),
                        on_state_change=observe,
                        listeners=[self.watcher] if name == "slow" else [],
                    ),
                    clock,
                )
            )

    async def run(self, step: str) -> None:
        results = [await _one(breaker, step, clock) for breaker, clock in self.breakers]
        assert results[0] == results[1], step

    def check(self) -> None:
        (fast, _), (slow, _) = self.breakers
        assert fast.snapshot().to_dict() == slow.snapshot().to_dict()
        assert self.transitions["fast"] == self.transitions["slow"]
        assert fast.state is slow.state
        cb = self.watcher.cb
        if cb is not None:  # the general path's pybreaker agrees with the cached field
            assert _PYBREAKER_NAMES[cb.current_state] is slow.snapshot().state


async def _one(breaker: AsyncCircuitBreaker, step: str, clock: FakeClock) -> str:
    async def ok() -> str:
        return "ok"

    async def slow_ok() -> str:
        clock.advance(breaker.config.slow_call_duration_s)
        return "ok"

    async def down() -> str:
        raise Down

    async def busy() -> str:
        raise Busy

    ops: dict[str, Callable[[], None]] = {
        "wait": lambda: clock.advance(breaker.config.reset_timeout_s / 2),
        "reset": breaker.reset,
        "force_open": lambda: breaker.set_forced(Forced.OPEN),
        "disable": lambda: breaker.set_forced(Forced.DISABLED),
        "lift": lambda: breaker.set_forced(None),
    }
    work = {"ok": ok, "slow_ok": slow_ok, "down": down, "busy": busy}.get(step)
    if work is None:
        ops[step]()
        return step
    try:
        return await breaker.call(work, classify=classify)
    except CircuitOpenError:
        return "refused"
    except (Down, Busy) as exc:
        return type(exc).__name__


STEPS = st.lists(
    st.sampled_from(
        ["ok"] * 6
        + ["slow_ok", "down", "down", "busy", "wait", "reset", "force_open", "disable", "lift"]
    ),
    max_size=60,
)


def _configs() -> list[BreakerConfig]:
    return [
        BreakerConfig(
            policy="consecutive", fail_max=3, reset_timeout_s=10.0, backoff_multiplier=1.0
        ),
        BreakerConfig(
            policy="rate",
            window_size=6,
            minimum_calls=4,
            failure_rate_threshold=50.0,
            slow_call_duration_s=1.0,
            reset_timeout_s=10.0,
            success_threshold=2,
            backoff_multiplier=1.0,
        ),
        BreakerConfig(
            policy="rate",
            window_type="time",
            window_size=5,
            minimum_calls=3,
            failure_rate_threshold=60.0,
            slow_call_duration_s=1.0,
            reset_timeout_s=10.0,
            backoff_multiplier=1.0,
        ),
    ]


@pytest.mark.parametrize("config", _configs(), ids=["consecutive", "rate-count", "rate-time"])
@settings(max_examples=60, deadline=None)
@given(steps=STEPS)
def test_the_fast_paths_match_the_general_path(config: BreakerConfig, steps: list[str]) -> None:
    """Any sequence of calls and ops leaves both breakers in the same state, step by step."""

    async def scenario() -> None:
        pair = Pair(config)
        for step in steps:
            await pair.run(step)
            pair.check()

    asyncio.run(scenario())


async def test_a_success_after_a_failure_still_resets_pybreakers_counter() -> None:
    """The skip needs a clean counter: a success after a failure goes through pybreaker."""
    clock = FakeClock()
    config = BreakerConfig(policy="consecutive", fail_max=2, reset_timeout_s=10.0)
    breaker = AsyncCircuitBreaker("nlp", config, clock=clock)

    async def ok() -> str:
        return "ok"

    async def down() -> str:
        raise Down

    with pytest.raises(Down):
        await breaker.call(down)
    assert breaker.snapshot().failure_count == 1
    await breaker.call(ok)
    assert breaker.snapshot().failure_count == 0
    with pytest.raises(Down):
        await breaker.call(down)
    assert breaker.state is BreakerState.CLOSED  # one failure since the success, not two


async def test_the_ticket_steps_are_what_call_does() -> None:
    """admit / record / release by hand count exactly as `call` does."""
    clock = FakeClock()
    config = BreakerConfig(policy="consecutive", fail_max=1, reset_timeout_s=10.0)
    wall = FakeClock(start=1_700_000_000.0)
    by_hand = AsyncCircuitBreaker("a", config, clock=clock, wall_clock=wall)
    by_call = AsyncCircuitBreaker("a", config, clock=clock, wall_clock=wall)

    async def down() -> str:
        raise Down

    ticket = by_hand.admit()
    by_hand.record(ticket, Outcome.FAILURE, Down())
    by_hand.release(ticket)
    with pytest.raises(Down):
        await by_call.call(down)
    assert by_hand.snapshot() == by_call.snapshot()
    assert by_hand.state is BreakerState.OPEN
    with pytest.raises(CircuitOpenError):
        by_hand.admit()
