"""One circuit breaker per agent: pybreaker's state machine behind an asyncio-safe gate.

pybreaker keeps the state (closed / open / half-open), the failure and success
counters, and notifies its listeners. It is not asyncio-aware, though:
`breaker.call(async_fn)` records a success for the un-awaited coroutine, half-open
admits every concurrent caller, a cancelled call counts as a failure, and its
open -> half-open timer reads `datetime.now` so it cannot be driven by a test clock.

So `AsyncCircuitBreaker` admits calls itself and only *records* outcomes into
pybreaker, after the `await`:

- what opens it is the policy: `consecutive` leaves it to pybreaker's `fail_max`;
  `rate` (the default) keeps a `SlidingWindow` of closed-state outcomes here and
  opens pybreaker when the failure or slow-call rate reaches its threshold over at
  least `minimum_calls` calls (pybreaker's own counter is then never the trigger).
- open: refuse with `CircuitOpenError`; nothing is called. Once the open wait has
  passed on the injected clock the gate moves pybreaker to half-open. The wait is
  `reset_timeout_s` after a close, and grows by `backoff_multiplier` (jittered,
  capped at `max_reset_timeout_s`) each time a half-open probe fails.
- half-open: at most `half_open_max_calls` probes run at once; the rest are refused.
- every state change bumps a generation; an outcome is recorded only if the
  generation is still the one the call was admitted under, so a slow call from an
  earlier state can neither re-open nor close the breaker.
- cancellation (and other non-`Exception` exits) records nothing and frees the
  probe slot.
- a forced mode set by ops (or by `share = "follow"`) overrides all of that:
  `Forced.OPEN` / `Forced.FOLLOW` hold it open (no half-open), `Forced.DISABLED`
  holds it closed and admits every call, recording nothing into the state machine.

It is meant for one event loop; nothing here is thread-safe, and nothing needs to
be, because admission and recording never await.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import NamedTuple, NoReturn, TypeVar

import structlog

from circuit.config import BreakerConfig
from circuit.errors import CircuitOpenError
from circuit.statemachine import pybreaker
from circuit.window import SlidingWindow, WindowCounts

__all__ = [
    "AsyncCircuitBreaker",
    "BreakerSnapshot",
    "BreakerState",
    "CircuitOpenError",
    "Forced",
    "Outcome",
    "StateChangeCallback",
    "open_wait_s",
    "validate_config",
]

T = TypeVar("T")

log = structlog.get_logger(__name__)


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Forced(StrEnum):
    """A mode that overrides the policy until it is lifted."""

    OPEN = "open"  # ops: open, no probes, until reset
    DISABLED = "disabled"  # ops: closed, every call admitted, nothing recorded, until enabled
    FOLLOW = "follow"  # share="follow": open while enough other replicas have it open


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

    `failure_count` is pybreaker's consecutive-failure counter; `window` the rate policy's
    sliding-window counts (None under `consecutive`). `open_wait_s` is the wait of the
    current (or last) opening and `backoff_level` how many failed probes grew it since
    the last close; `forced` is the mode ops (or following) imposed. `calls` counts admitted
    calls; `successes` / `failures` count classified outcomes, including late ones the
    state machine ignored; `rejections` counts refused calls; `trips` counts entries
    into the open state. `opened_at` (epoch s) is when it last opened, kept after it
    closes; `half_open_at` (epoch s) is set only while open.
    """

    name: str
    state: BreakerState
    policy: str
    forced: Forced | None
    failure_count: int
    fail_max: int
    window: WindowCounts | None
    window_type: str
    window_size: int
    failure_rate_threshold: float
    slow_call_duration_s: float
    slow_call_rate_threshold: float
    minimum_calls: int
    reset_timeout_s: float
    open_wait_s: float
    backoff_level: int
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
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["state"] = self.state.value
        data["forced"] = None if self.forced is None else self.forced.value
        data["window"] = None if self.window is None else self.window.to_dict()
        return data


# tuple.__new__: builds a NamedTuple from its fields in C, where calling the class
# runs its generated Python-level __new__ (a frame more on the hot path).
_new_tuple = tuple.__new__

# An enum member read from its class is a lookup through the enum's metaclass (~80 ns,
# a field read ~6): the happy path compares with this one, read once.
_CLOSED = BreakerState.CLOSED


class Ticket(NamedTuple):
    """An admitted call: the generation it was admitted under, whether it holds a
    half-open probe slot, and when it started (on the breaker's clock)."""

    generation: int
    probe: bool
    started: float


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

    `clock` (monotonic seconds) drives the open -> half-open timer, the time-based
    window and slow-call timing; `wall_clock` (epoch seconds) only stamps
    `opened_at` / `half_open_at` for reporting; `rng` jitters the backed-off waits.
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
        rng: random.Random | None = None,
        on_state_change: StateChangeCallback | None = None,
        listeners: Iterable[pybreaker.CircuitBreakerListener] = (),
    ) -> None:
        validate_config(config)
        self.name = name
        self.config = config
        self._clock = clock
        self._wall_clock = wall_clock
        self._rng = rng if rng is not None else random.Random()
        self._observers: list[StateChangeCallback] = (
            [] if on_state_change is None else [on_state_change]
        )
        self._rate = config.policy == "rate"
        self._window = SlidingWindow(config.window_type, config.window_size, clock=clock)
        self._forced: Forced | None = None
        # Bumped on every transition; outcomes of calls admitted under an older one are ignored.
        self._generation = 0
        # Probes of the current generation only; a transition starts a fresh count.
        self._probes = 0
        self._opened_mono: float | None = None
        self._opened_wall: float | None = None
        self._open_wait_s = config.reset_timeout_s
        self._backoff_level = 0
        self._pending: list[tuple[BreakerState, BreakerState]] = []
        # pybreaker's state, kept here as it changes (every change goes through
        # `_on_transition`): the happy path's check is a field read, not a walk through
        # pybreaker's state-storage properties.
        self._state = BreakerState.CLOSED
        # Whether pybreaker's consecutive-failure counter is 0 (it is reset by a success
        # and by every close). A success that would change nothing in pybreaker — closed,
        # counter 0, no listeners of the caller's to tell — then skips pybreaker.
        self._counter_clean = True
        self._quiet = True
        self._calls = 0
        self._successes = 0
        self._failures = 0
        self._rejections = 0
        self._trips = 0
        self._breaker = pybreaker.CircuitBreaker(
            # Under the rate policy the window decides when to open; pybreaker's
            # consecutive counter must never get there first.
            fail_max=config.fail_max if not self._rate else sys.maxsize,
            # Informational only: the gate never hands pybreaker a call while open,
            # so pybreaker's own datetime-based timer never runs.
            reset_timeout=config.reset_timeout_s,
            success_threshold=config.success_threshold,
            listeners=[_TransitionListener(self._on_transition), *listeners],
            name=name,
        )
        self._quiet = len(self._breaker.listeners) == 1

    @property
    def state(self) -> BreakerState:
        """The current state; OPEN turns HALF_OPEN here once the open wait has passed."""
        if self._state is BreakerState.OPEN:
            self._refresh()
        return self._state

    @property
    def forced(self) -> Forced | None:
        return self._forced

    def add_observer(self, on_state_change: StateChangeCallback) -> None:
        """Also call `on_state_change(name, old, new)` on every state change (see __init__)."""
        self._observers.append(on_state_change)

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
        ticket = self.admit()
        try:
            result = await fn()
        except asyncio.CancelledError:
            # Cancellation says nothing about the agent's health: record nothing.
            raise
        except Exception as exc:
            self.record(ticket, classify(exc), exc)
            raise
        else:
            self.record_success(ticket)
            return result
        finally:
            self.release(ticket)

    # The three steps of `call`, for a caller that awaits its work in its own frame
    # (agents/client.py: one coroutine less per attempt). Used exactly as `call` uses
    # them: `admit`; then `record` or `record_success` unless the work was cancelled;
    # then `release` in a `finally`.

    def admit(self) -> Ticket:
        """Admit a call or raise `CircuitOpenError` (nothing may then be sent)."""
        if self._state is _CLOSED and self._forced is None:
            # The happy path: closed needs no refresh (only OPEN has a timer), and a
            # closed call takes no probe slot.
            self._calls += 1
            # Ticket(...) without the NamedTuple's Python-level __new__ (every call).
            return _new_tuple(Ticket, (self._generation, False, self._clock()))
        return self._admit()

    def record(self, ticket: Ticket, outcome: Outcome, exc: Exception | None) -> None:
        """Record how an admitted call ended (`exc`: its exception, if it raised one)."""
        self._settle(ticket, outcome, exc)

    def record_success(self, ticket: Ticket) -> None:
        """Record that an admitted call returned."""
        if (
            ticket.generation == self._generation
            and self._state is _CLOSED
            and self._counter_clean
            and self._quiet
            and self._forced is None
        ):
            # pybreaker would reset a counter that is already 0 and tell no one: skip it.
            self._successes += 1
            if self._rate:
                config = self.config
                slow = self._clock() - ticket.started >= config.slow_call_duration_s
                window = self._window
                # _window_says_open, written out, when the success may have changed its
                # answer (closed, the window said no after every call recorded in it).
                if window.record_success(slow, config.minimum_calls) and window.exceeds(
                    config.minimum_calls,
                    config.failure_rate_threshold,
                    config.slow_call_rate_threshold,
                ):
                    self._breaker.open()
                    self._flush()
            return
        self._settle(ticket, Outcome.SUCCESS, None)

    def release(self, ticket: Ticket) -> None:
        """Free what `admit` took (a half-open probe slot); always, in a `finally`."""
        if ticket.probe and ticket.generation == self._generation:
            self._probes -= 1

    def snapshot(self) -> BreakerSnapshot:
        self._refresh()
        state = self._current()
        config = self.config
        half_open_at = None
        if state is BreakerState.OPEN and self._opened_wall is not None and self._forced is None:
            half_open_at = self._opened_wall + self._open_wait_s
        return BreakerSnapshot(
            name=self.name,
            state=state,
            policy=config.policy,
            forced=self._forced,
            failure_count=self._breaker.fail_counter,
            fail_max=config.fail_max,
            window=self._window.counts() if self._rate else None,
            window_type=config.window_type,
            window_size=config.window_size,
            failure_rate_threshold=config.failure_rate_threshold,
            slow_call_duration_s=config.slow_call_duration_s,
            slow_call_rate_threshold=config.slow_call_rate_threshold,
            minimum_calls=config.minimum_calls,
            reset_timeout_s=config.reset_timeout_s,
            open_wait_s=self._open_wait_s,
            backoff_level=self._backoff_level,
            success_threshold=config.success_threshold,
            half_open_max_calls=config.half_open_max_calls,
            opened_at=self._opened_wall,
            half_open_at=half_open_at,
            probes_in_flight=self._probes,
            calls=self._calls,
            successes=self._successes,
            failures=self._failures,
            rejections=self._rejections,
            trips=self._trips,
        )

    def reset(self) -> None:
        """Close now, lift any forced mode, clear the counters and the window.

        In-flight outcomes are ignored; the open wait goes back to its base.
        """
        self._forced = None
        self._breaker.close()
        self._flush()

    def set_forced(self, forced: Forced | None) -> None:
        """Impose a mode (see `Forced`), or lift it with None (the breaker then closes).

        Setting the mode already in force changes nothing, so a replica can re-apply
        the deployment's modes as often as it likes.
        """
        if forced is self._forced:
            return
        self._forced = forced
        if forced is Forced.OPEN or forced is Forced.FOLLOW:
            self._breaker.open()
        else:
            # DISABLED, or lifted: a fresh closed breaker (new generation, empty window).
            self._breaker.close()
        self._flush()

    # -- gate ---------------------------------------------------------------------

    def _admit(self) -> Ticket:
        if self._forced is Forced.DISABLED:
            self._calls += 1
            return Ticket(self._generation, False, self._clock())
        self._refresh()
        state = self._current()
        if state is BreakerState.OPEN:
            self._rejections += 1
            raise CircuitOpenError(
                f"circuit {self.name!r} is open"
                + ("" if self._forced is None else f" ({self._forced.value})"),
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
        return Ticket(self._generation, probe, self._clock())

    def _settle(self, ticket: Ticket, outcome: Outcome, exc: Exception | None) -> None:
        if outcome is Outcome.NEUTRAL:
            return
        if outcome is Outcome.SUCCESS:
            self._successes += 1
        else:
            self._failures += 1
        if ticket.generation != self._generation or self._forced is not None:
            return  # late (the breaker moved on since admission), or a forced mode rules
        failed = outcome is Outcome.FAILURE
        slow = self._rate and self._clock() - ticket.started >= self.config.slow_call_duration_s
        if ticket.probe and slow:
            failed = True  # a probe that answers slowly has not shown the agent recovered
        if not failed:
            self._breaker.call(_succeed)
            # pybreaker reset its counter; a half-open success may also have closed it.
            self._counter_clean = True
        else:
            self._counter_clean = False
            self._record_failure(exc if exc is not None else _SlowCall(self.name))
        if self._rate and not ticket.probe and self._current() is BreakerState.CLOSED:
            self._window.record(failed=outcome is Outcome.FAILURE, slow=slow)
            if self._window_says_open():
                self._breaker.open()
        self._flush()

    def _window_says_open(self) -> bool:
        config = self.config
        return self._window.exceeds(
            config.minimum_calls, config.failure_rate_threshold, config.slow_call_rate_threshold
        )

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
        if (
            self._forced is None
            and self._current() is BreakerState.OPEN
            and self._remaining_open_s() <= 0.0
        ):
            self._breaker.half_open()
            self._flush()

    def _current(self) -> BreakerState:
        return self._state

    def _remaining_open_s(self) -> float:
        if self._opened_mono is None:
            return 0.0
        return max(0.0, self._opened_mono + self._open_wait_s - self._clock())

    # -- transitions --------------------------------------------------------------

    def _on_transition(self, old_name: str | None, new_name: str) -> None:
        # Called by pybreaker in the middle of its transition: bookkeeping only, no
        # user code (see `_flush`), and no reads of pybreaker's not-yet-stored state.
        new = _FROM_PYBREAKER[new_name]
        old = None if old_name is None else _FROM_PYBREAKER[old_name]
        self._generation += 1
        self._probes = 0
        self._state = new
        if new is BreakerState.OPEN:
            if old is BreakerState.HALF_OPEN:
                self._backoff_level += 1  # the probe failed: wait longer this time
            self._open_wait_s = open_wait_s(self.config, self._backoff_level, self._rng)
            self._opened_mono = self._clock()
            self._opened_wall = self._wall_clock()
            if old is not BreakerState.OPEN:
                self._trips += 1
        else:
            self._opened_mono = None
        if new is BreakerState.CLOSED:
            self._counter_clean = True  # pybreaker reset the counter before telling us
            self._backoff_level = 0
            self._open_wait_s = self.config.reset_timeout_s
            self._window.reset()
        if old is not None and old is not new:
            self._pending.append((old, new))

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        for old, new in pending:
            for observer in self._observers:
                try:
                    observer(self.name, old, new)
                except Exception:
                    # An observer's bug must not break the call path or the state machine.
                    log.exception("breaker_listener_failed", breaker=self.name)


class _SlowCall(Exception):
    """What pybreaker's listeners see when a half-open probe succeeded too slowly."""

    def __init__(self, name: str) -> None:
        super().__init__(f"circuit {name!r}: the half-open probe was slow")


def open_wait_s(config: BreakerConfig, level: int, rng: random.Random) -> float:
    """How long an opening lasts after `level` failed probes since the last close.

    Level 0 waits exactly `reset_timeout_s`; each level multiplies it by
    `backoff_multiplier`, capped at `max_reset_timeout_s`, then draws it from
    `[wait * (1 - backoff_jitter), wait]` so replicas that opened together do not
    all probe together again.
    """
    if level <= 0:
        return config.reset_timeout_s
    exponent = min(level, 64)  # far beyond any cap; keeps the power finite
    cap = max(config.max_reset_timeout_s, config.reset_timeout_s)
    wait = min(cap, config.reset_timeout_s * config.backoff_multiplier**exponent)
    return wait * (1.0 - config.backoff_jitter * rng.random())


def validate_config(config: BreakerConfig) -> None:
    """Raise `ValueError` naming the first field with a value no breaker can work with."""
    checks: list[tuple[str, bool]] = [
        ("fail_max", config.fail_max >= 1),
        ("success_threshold", config.success_threshold >= 1),
        ("half_open_max_calls", config.half_open_max_calls >= 1),
        ("reset_timeout_s", config.reset_timeout_s >= 0),
        ("window_size", config.window_size >= 1),
        ("minimum_calls", config.minimum_calls >= 1),
        ("failure_rate_threshold", 0 < config.failure_rate_threshold <= 100),
        ("slow_call_rate_threshold", 0 < config.slow_call_rate_threshold <= 100),
        ("slow_call_duration_s", config.slow_call_duration_s > 0),
        ("backoff_multiplier", config.backoff_multiplier >= 1),
        ("max_reset_timeout_s", config.max_reset_timeout_s >= 0),
        ("backoff_jitter", 0 <= config.backoff_jitter < 1),
        ("follow_share", 0 < config.follow_share <= 1),
        ("policy", config.policy in ("consecutive", "rate")),
        ("window_type", config.window_type in ("count", "time")),
        ("share", config.share in ("view", "follow")),
    ]
    for field, ok in checks:
        if not ok:
            raise ValueError(f"{field} has a nonsensical value: {getattr(config, field)!r}")
