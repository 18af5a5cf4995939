"""One circuit breaker per agent: pybreaker's state machine behind an asyncio-safe gate.

pybreaker keeps the state (closed / open / half-open), the failure and success
counters, and notifies its listeners. It is not asyncio-aware, though:
`breaker.call(async_fn)` records a success for the un-awaited coroutine, half-open
admits every concurrent caller, a cancelled call counts as a failure, and its
open -> half-open timer reads `datetime.now` so it cannot be driven by a test clock.

So `AsyncCircuitBreaker` admits calls itself and only *records* outcomes into
pybreaker, after the `await`:

- open: refuse with `CircuitOpenError`; nothing is called. Once `reset_timeout_s`
  has passed on the injected clock the gate moves pybreaker to half-open.
- half-open: at most `half_open_max_calls` probes run at once; the rest are refused.
- every state change bumps a generation; an outcome is recorded only if the
  generation is still the one the call was admitted under, so a slow call from an
  earlier state can neither re-open nor close the breaker.
- cancellation (and other non-`Exception` exits) records nothing and frees the
  probe slot.

It is meant for one event loop; nothing here is thread-safe, and nothing needs to
be, because admission and recording never await.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import NoReturn, TypeVar

import pybreaker
import structlog

from circuit.config import BreakerConfig
from circuit.errors import CircuitOpenError

__all__ = [
    "AsyncCircuitBreaker",
    "BreakerSnapshot",
    "BreakerState",
    "CircuitOpenError",
    "Outcome",
    "StateChangeCallback",
]

T = TypeVar("T")

logger = structlog.get_logger(__name__)


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Outcome(Enum):
    """How a finished call counts for the breaker."""

    SUCCESS = "success"
    FAILURE = "failure"
    # Neither: e.g. a 429, back-pressure from a live agent. Frees a probe slot, records nothing.
    NEUTRAL = "neutral"


StateChangeCallback = Callable[[str, BreakerState, BreakerState], None]

_FROM_PYBREAKER: dict[str, BreakerState] = {
    pybreaker.STATE_CLOSED: BreakerState.CLOSED,
    pybreaker.STATE_OPEN: BreakerState.OPEN,
    pybreaker.STATE_HALF_OPEN: BreakerState.HALF_OPEN,
}


def _always_failure(_: BaseException) -> Outcome:
    return Outcome.FAILURE


def _succeed() -> None:
    return None


@dataclass(frozen=True, slots=True)
class BreakerSnapshot:
    """A breaker's state and counters at one moment, for the status endpoint and metrics.

    `failure_count` is pybreaker's consecutive-failure counter. `calls` counts admitted
    calls; `successes` / `failures` count classified outcomes, including late ones the
    state machine ignored; `rejections` counts refused calls; `trips` counts entries
    into the open state. `opened_at` (epoch s) is when it last opened, kept after it
    closes; `half_open_at` (epoch s) is set only while open.
    """

    name: str
    state: BreakerState
    failure_count: int
    fail_max: int
    reset_timeout_s: float
    success_threshold: int
    half_open_max_calls: int
    opened_at: float | None
    half_open_at: float | None
    probes_in_flight: int
    calls: int
    successes: int
    failures: int
    rejections: int
    trips: int

    def to_dict(self) -> dict[str, object]:
        data = dataclasses.asdict(self)
        data["state"] = self.state.value
        return data


@dataclass(frozen=True, slots=True)
class _Ticket:
    generation: int
    probe: bool


class _TransitionListener(pybreaker.CircuitBreakerListener):
    def __init__(self, on_transition: Callable[[str | None, str], None]) -> None:
        self._on_transition = on_transition

    def state_change(
        self,
        cb: pybreaker.CircuitBreaker,
        old_state: pybreaker.CircuitBreakerState | None,
        new_state: pybreaker.CircuitBreakerState,
    ) -> None:
        self._on_transition(None if old_state is None else old_state.name, new_state.name)


class AsyncCircuitBreaker:
    """An asyncio-safe circuit breaker around one pybreaker state machine.

    `clock` (monotonic seconds) drives the open -> half-open timer; `wall_clock`
    (epoch seconds) only stamps `opened_at` / `half_open_at` for reporting.
    `on_state_change(name, old, new)` is called once per state change, after the
    state machine has settled; an exception from it is logged, never propagated
    into the call path. `listeners` are extra pybreaker listeners, which see every
    transition as pybreaker reports it.
    """

    def __init__(
        self,
        name: str,
        config: BreakerConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        on_state_change: StateChangeCallback | None = None,
        listeners: Iterable[pybreaker.CircuitBreakerListener] = (),
    ) -> None:
        _validate(config)
        self.name = name
        self.config = config
        self._clock = clock
        self._wall_clock = wall_clock
        self._on_state_change = on_state_change
        # Bumped on every transition; outcomes of calls admitted under an older one are ignored.
        self._generation = 0
        # Probes of the current generation only; a transition starts a fresh count.
        self._probes = 0
        self._opened_mono: float | None = None
        self._opened_wall: float | None = None
        self._pending: list[tuple[BreakerState, BreakerState]] = []
        self._calls = 0
        self._successes = 0
        self._failures = 0
        self._rejections = 0
        self._trips = 0
        self._breaker = pybreaker.CircuitBreaker(
            fail_max=config.fail_max,
            # Informational only: the gate never hands pybreaker a call while open,
            # so pybreaker's own datetime-based timer never runs.
            reset_timeout=config.reset_timeout_s,
            success_threshold=config.success_threshold,
            listeners=[_TransitionListener(self._on_transition), *listeners],
            name=name,
        )

    @property
    def state(self) -> BreakerState:
        """The current state; OPEN turns HALF_OPEN here once the reset timeout has passed."""
        self._refresh()
        return self._current()

    async def call(
        self,
        fn: Callable[[], Awaitable[T]],
        *,
        classify: Callable[[BaseException], Outcome] = _always_failure,
    ) -> T:
        """Run `await fn()` if the breaker admits it, record the outcome, return its result.

        Raises `CircuitOpenError` without calling `fn` when refused. An exception from
        `fn` is classified by `classify` and re-raised unchanged; a returned value is a
        success. `asyncio.CancelledError` is never recorded.
        """
        ticket = self._admit()
        try:
            result = await fn()
        except asyncio.CancelledError:
            # Cancellation says nothing about the agent's health: record nothing.
            raise
        except Exception as exc:
            self._settle(ticket, classify(exc), exc)
            raise
        else:
            self._settle(ticket, Outcome.SUCCESS, None)
            return result
        finally:
            self._release(ticket)

    def snapshot(self) -> BreakerSnapshot:
        self._refresh()
        state = self._current()
        half_open_at = None
        if state is BreakerState.OPEN and self._opened_wall is not None:
            half_open_at = self._opened_wall + self.config.reset_timeout_s
        return BreakerSnapshot(
            name=self.name,
            state=state,
            failure_count=self._breaker.fail_counter,
            fail_max=self.config.fail_max,
            reset_timeout_s=self.config.reset_timeout_s,
            success_threshold=self.config.success_threshold,
            half_open_max_calls=self.config.half_open_max_calls,
            opened_at=self._opened_wall,
            half_open_at=half_open_at,
            probes_in_flight=self._probes,
            calls=self._calls,
            successes=self._successes,
            failures=self._failures,
            rejections=self._rejections,
            trips=self._trips,
        )

    def force_open(self) -> None:
        """Open now (a trip, unless already open); the reset timer restarts now."""
        self._breaker.open()
        self._flush()

    def reset(self) -> None:
        """Close now and clear the state machine's counters; in-flight outcomes are ignored."""
        self._breaker.close()
        self._flush()

    # -- gate ---------------------------------------------------------------------

    def _admit(self) -> _Ticket:
        self._refresh()
        state = self._current()
        if state is BreakerState.OPEN:
            self._rejections += 1
            raise CircuitOpenError(
                f"circuit {self.name!r} is open",
                name=self.name,
                retry_after_s=self._remaining_open_s(),
            )
        probe = state is BreakerState.HALF_OPEN
        if probe:
            if self._probes >= self.config.half_open_max_calls:
                self._rejections += 1
                raise CircuitOpenError(
                    f"circuit {self.name!r} is half-open and all "
                    f"{self.config.half_open_max_calls} probe slot(s) are taken",
                    name=self.name,
                    retry_after_s=0.0,
                )
            self._probes += 1
        self._calls += 1
        return _Ticket(generation=self._generation, probe=probe)

    def _release(self, ticket: _Ticket) -> None:
        if ticket.probe and ticket.generation == self._generation:
            self._probes -= 1

    def _settle(self, ticket: _Ticket, outcome: Outcome, exc: Exception | None) -> None:
        if outcome is Outcome.NEUTRAL:
            return
        if outcome is Outcome.SUCCESS:
            self._successes += 1
        else:
            self._failures += 1
        if ticket.generation != self._generation:
            return  # late: the breaker has moved on since this call was admitted
        if outcome is Outcome.SUCCESS:
            self._breaker.call(_succeed)
        else:
            assert exc is not None, "a FAILURE outcome always comes from an exception"
            self._record_failure(exc)
        self._flush()

    def _record_failure(self, exc: Exception) -> None:
        # Feed the real exception through pybreaker so its listeners see it; keep the
        # caller's traceback free of pybreaker's frames.
        traceback = exc.__traceback__

        def fail() -> NoReturn:
            raise exc

        try:
            self._breaker.call(fail)
        except pybreaker.CircuitBreakerError:
            pass  # this failure tripped the breaker; the caller still gets `exc`
        except Exception as raised:
            if raised is not exc:
                raise
        finally:
            exc.__traceback__ = traceback

    def _refresh(self) -> None:
        if self._current() is BreakerState.OPEN and self._remaining_open_s() <= 0.0:
            self._breaker.half_open()
            self._flush()

    def _current(self) -> BreakerState:
        return _FROM_PYBREAKER[self._breaker.current_state]

    def _remaining_open_s(self) -> float:
        if self._opened_mono is None:
            return 0.0
        return max(0.0, self._opened_mono + self.config.reset_timeout_s - self._clock())

    # -- transitions --------------------------------------------------------------

    def _on_transition(self, old_name: str | None, new_name: str) -> None:
        # Called by pybreaker in the middle of its transition: bookkeeping only, no
        # user code (see `_flush`), and no reads of pybreaker's not-yet-stored state.
        new = _FROM_PYBREAKER[new_name]
        old = None if old_name is None else _FROM_PYBREAKER[old_name]
        self._generation += 1
        self._probes = 0
        if new is BreakerState.OPEN:
            self._opened_mono = self._clock()
            self._opened_wall = self._wall_clock()
            if old is not BreakerState.OPEN:
                self._trips += 1
        else:
            self._opened_mono = None
        if old is not None and old is not new:
            self._pending.append((old, new))

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        if self._on_state_change is None:
            return
        for old, new in pending:
            try:
                self._on_state_change(self.name, old, new)
            except Exception:
                # An observer's bug must not break the call path or the state machine.
                logger.exception("breaker_listener_failed", breaker=self.name)


def _validate(config: BreakerConfig) -> None:
    if config.fail_max < 1:
        raise ValueError(f"fail_max must be >= 1, got {config.fail_max}")
    if config.success_threshold < 1:
        raise ValueError(f"success_threshold must be >= 1, got {config.success_threshold}")
    if config.half_open_max_calls < 1:
        raise ValueError(f"half_open_max_calls must be >= 1, got {config.half_open_max_calls}")
    if config.reset_timeout_s < 0:
        raise ValueError(f"reset_timeout_s must be >= 0, got {config.reset_timeout_s}")
