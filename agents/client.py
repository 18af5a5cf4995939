"""`AgentClient`: every call to an agent, and the one place foreign errors become ours.

One call is `deadline( retry( breaker( bulkhead( timeout( HTTP ) ) ) ) )`:

- **retry** (`circuit.retry`: the first attempt is made here, the rest by
  `retry_after_failure`, exactly as `call_with_retry` would): retries timeouts,
  connection errors, 5xx and 429 (honouring `Retry-After`), bounded by the attempts,
  the deadline and the agent's retry budget. Every attempt carries the same
  `Idempotency-Key`.
- **breaker** (one `AsyncCircuitBreaker` per agent): every attempt goes through it.
  Connection errors, timeouts, 5xx and contract violations are failures; other 4xx are
  successes (the agent is alive); a 429 is neutral back-pressure. Open: the call fails
  with `AgentUnavailable` and nothing is sent.
- **bulkhead**: a `circuit.bulkhead.Bulkhead(spec.concurrency)` per agent, inside the
  breaker so a refused call never queues.
- **timeout**: the transport's per-agent connect/read/write/pool timeouts for each
  attempt (agents/transport.py), plus an overall cap when the caller gives `timeout_s`
  or a deadline, and the agent's cap on the answer's size.

The layers cost (nearly) nothing on the happy path, and add no coroutine of their
own: an attempt is one frame (`_gated`) around the transport's request, and so is a
whole call that succeeds at once (`call` hands back its first attempt's coroutine).
tenacity is entered only after a first failure; the breaker, closed, is a field read and two
counters; the bulkhead, free, is a counter (its wait and its timer only when it is
full); the attempt cap (only when the caller gives a timeout or a deadline) shares
one timer of the event loop with every other attempt in flight, so it usually arms
none.

Cancellation propagates untouched: never retried, never counted, the request aborted.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple

import msgspec
import orjson
import structlog
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from agents.errors import (
    AgentBadResponse,
    AgentConnectionError,
    AgentError,
    AgentHTTPError,
    AgentRejected,
    AgentResponseTooLarge,
    AgentTaskFailed,
    AgentTimeout,
    AgentUnavailable,
    TimeoutPhase,
    UnknownAgent,
)
from agents.observe import AgentStats, log_attempt, log_node, retry_listener
from agents.registry import AgentRegistry, AgentSpec, AgentTimeouts
from agents.transport import (
    AgentTransport,
    ResponseTooLarge,
    TransportConnectionError,
    TransportError,
    TransportResponse,
    TransportTimeout,
    create_transport,
)
from circuit.breaker import AsyncCircuitBreaker, BreakerState, CircuitOpenError, Outcome
from circuit.bulkhead import Bulkhead
from circuit.cap import NO_CAP, Cap, CapTimer
from circuit.config import RetryConfig
from circuit.retry import RetryBudget, is_retried, parse_retry_after, retry_after_failure

if TYPE_CHECKING:  # the A2A SDK is imported on first use only (see AgentClient._a2a)
    from agents.a2a import Peer
    from agents.a2a_calls import A2ACalls

__all__ = ["AgentCallResult", "AgentClient", "create_transport"]

log = structlog.get_logger(__name__)

# Everything below us that is not ours yet: the transport's errors, our own per-attempt
# cap (TimeoutError) and the breaker refusing the call.
_FOREIGN_ERRORS = (TransportError, TimeoutError, CircuitOpenError)

_PROPAGATOR = TraceContextTextMapPropagator()

_new_tuple = tuple.__new__


class AgentCallResult(NamedTuple):
    """An agent's `data` object, how many attempts it took, and how long in all;
    `source`, the JSON body orjson read `data` from (None for an A2A answer): so `data`
    holds only what orjson yields (dicts with str keys, lists, str, ints within 64
    bits, finite floats, bool, None), and is no larger nor deeper than `source`.

    A NamedTuple: made once per call, at a third of a frozen dataclass's cost."""

    data: dict[str, Any]
    attempts: int
    duration_s: float
    source: bytes | None = None


@dataclass(frozen=True, slots=True)
class _Lane:
    """One agent's resilience state, found with one lookup per call."""

    spec: AgentSpec
    breaker: AsyncCircuitBreaker
    bulkhead: Bulkhead
    budget: RetryBudget
    stats: AgentStats
    # spec.process_url, worked out once (a property building the string every call).
    process_url: str


class _Call(msgspec.Struct):
    """One `AgentClient.call`: what every attempt sends, and the attempts so far. (A
    Struct, one per call: built in C, with no Python `__init__` frame.)"""

    lane: _Lane
    spec: AgentSpec
    workflow_id: str
    node_id: str
    body: bytes
    headers: dict[str, str]
    timeouts: AgentTimeouts
    timeout_s: float | None
    deadline: float | None
    attempts: int = 0
    # A2A agents: the node's input, sent as a data part by agents/a2a.py.
    payload: Mapping[str, Any] | None = None
    # The backoff slept before the next attempt (its span says so).
    retry_delay_s: float | None = None
    # The body the successful attempt's answer was read from (AgentCallResult.source).
    source: bytes | None = None
    # The node's retry policy, when it replaces the agent's for this call.
    retry: RetryConfig | None = None
    # When the call began (on `clock`): its duration is measured from here.
    started: float = 0.0


class AgentClient:
    """Calls registered agents over one shared `AgentTransport`.

    `clock` (monotonic seconds; deadlines are on it), `sleep` (retry backoff) and `rng`
    (jitter) are injectable so tests run instantly. The caller owns `transport` and
    closes it. With a `tracer` every attempt is a span and sends its W3C `traceparent`;
    without one nothing of tracing runs.
    """

    def __init__(
        self,
        registry: AgentRegistry,
        transport: AgentTransport,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        self.registry = registry
        self._tracer = tracer
        self._transport = transport
        self._clock = clock
        self._sleep = sleep
        self._rng = rng
        self._stats = {name: AgentStats() for name in registry}
        self._breakers = {
            name: AsyncCircuitBreaker(
                name, spec.breaker, clock=clock, on_state_change=self._on_state_change
            )
            for name, spec in registry.items()
        }
        self._lanes = {
            name: _Lane(
                spec=spec,
                breaker=self._breakers[name],
                bulkhead=Bulkhead(spec.concurrency),
                budget=RetryBudget(spec.retry_budget, clock=clock),
                stats=self._stats[name],
                process_url=spec.process_url,
            )
            for name, spec in registry.items()
        }
        self._a2a_calls: A2ACalls | None = None
        # Every attempt's time cap, on one timer of the event loop (circuit/cap.py).
        self._caps = CapTimer()
        self._retries = dict.fromkeys(registry, 0)
        self.retries: Mapping[str, int] = MappingProxyType(self._retries)
        """Retries made so far per agent (metrics)."""

    def deadline_bound(self) -> frozenset[str]:
        """The agents whose every call made with a `deadline` ends by that deadline by
        itself, however the agent answers or fails to: each wait of such a call (an
        attempt, a wait for the bulkhead, a retry's backoff) is capped by it, on the
        clock it is given on (the event loop's, i.e. monotonic; a cap's timer may come
        a little late, as any timer of the loop). Not so for an A2A agent (its card is
        read outside the attempt's cap), nor with an injected clock or sleep (neither
        need keep the loop's time). The DAG engine arms no backstop of its own around
        a call to one of these."""
        if self._clock is not time.monotonic or self._sleep is not asyncio.sleep:
            return frozenset()
        return frozenset(name for name, spec in self.registry.items() if spec.protocol != "a2a")

    def breaker(self, agent: str) -> AsyncCircuitBreaker:
        """The breaker of a registered agent; `UnknownAgent` otherwise."""
        self._spec(agent)
        return self._breakers[agent]

    def breakers(self) -> Mapping[str, AsyncCircuitBreaker]:
        return MappingProxyType(self._breakers)

    def stats(self, agent: str) -> AgentStats:
        """The live counters of a registered agent (read them, do not change them)."""
        self._spec(agent)
        stats = self._stats[agent]
        stats.budget_refusals = self._lanes[agent].budget.refusals
        return stats

    @property
    def _a2a(self) -> A2ACalls:
        """The A2A side, made on first use: the A2A SDK (protobuf, pydantic: ~12 MB of
        memory) is imported only by a service that calls an A2A agent."""
        if self._a2a_calls is None:
            from agents.a2a_calls import A2ACalls

            self._a2a_calls = A2ACalls(
                self._transport,
                clock=self._clock,
                sleep=self._sleep,
                translate=_translate,
                check_status=_check_status,
            )
        return self._a2a_calls

    async def aclose(self) -> None:
        """Wait for side requests still in flight (CancelTask forwarded to A2A agents).
        The transport is the caller's and stays open."""
        if self._a2a_calls is not None:
            await self._a2a_calls.aclose()

    @property
    def a2a_peers(self) -> Mapping[str, Peer]:
        """The A2A agents whose card has been read, as their cards describe them."""
        if self._a2a_calls is None:
            return MappingProxyType({})
        return self._a2a_calls.peers

    async def discover(self) -> dict[str, str | None]:
        """Read the card of every A2A agent, all at once (at start-up): agent -> None when
        it was read, else why not. An agent unreachable now is tried again on its first
        call."""
        names = [name for name, spec in self.registry.items() if spec.protocol == "a2a"]
        outcomes = await asyncio.gather(
            *(self._a2a.discover(self.registry[name]) for name in names),
            return_exceptions=True,
        )
        found: dict[str, str | None] = {}
        for name, outcome in zip(names, outcomes, strict=True):
            if isinstance(outcome, AgentError):
                found[name] = str(outcome)
                log.warning(
                    "a2a_card_unavailable", agent=name, error=outcome.code, reason=str(outcome)
                )
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                found[name] = None
                log.info("a2a_card_read", agent=name, **outcome.summary())
        return found

    def call(
        self,
        agent: str,
        payload: Mapping[str, Any],
        *,
        workflow_id: str,
        node_id: str,
        retry: RetryConfig | None = None,
        timeout_s: float | None = None,
        deadline: float | None = None,
    ) -> Coroutine[Any, Any, AgentCallResult]:
        """POST `payload` to the agent's `/process`; return its `data`.

        `retry` replaces the agent's retry policy for this call; `timeout_s` replaces its
        read timeout and caps each attempt as a whole; `deadline` (on `clock`) bounds
        every attempt and every backoff. Raises an `AgentError` whose `attempts` is the
        number of attempts sent, `TypeError` if `payload` is not JSON-serialisable, and
        lets `asyncio.CancelledError` through untouched.

        A plain function handing back the call's coroutine (awaited, it raises what an
        `async def` would): without a tracer that coroutine is the first attempt's own
        (`_gated`, the whole call when it succeeds), one coroutine fewer per call.
        """
        lane = self._lanes.get(agent)
        if lane is None:
            return _raising(
                UnknownAgent(
                    agent=agent, known=self.registry, workflow_id=workflow_id, node_id=node_id
                )
            )
        spec = lane.spec
        timeouts = spec.timeouts
        if timeout_s is not None:
            timeouts = AgentTimeouts(
                connect=timeouts.connect, read=timeout_s, write=timeouts.write, pool=timeouts.pool
            )
        a2a_agent = spec.protocol == "a2a"
        try:
            if a2a_agent:
                # Built per attempt (the agent's card decides the version); a payload that
                # is not JSON still fails here, before anything is sent.
                _encode(payload)
                body = b""
            else:
                body = _ENCODER.encode(
                    {"workflow_id": workflow_id, "step_id": node_id, "input": payload}
                )
        except Exception as exc:  # TypeError: not JSON (awaited, the call raises it)
            return _raising(exc)
        # Positional, in _Call's field order (mypy checks each type): one per call.
        call = _Call(
            lane,
            spec,
            workflow_id,
            node_id,
            body,
            {"content-type": "application/json", "idempotency-key": f"{workflow_id}:{node_id}"},
            timeouts,
            timeout_s,
            deadline,
            0,  # attempts
            payload if a2a_agent else None,
            None,  # retry_delay_s
            None,  # source
            retry,
        )
        if self._tracer is not None:
            return self._traced_call(call)
        return self._gated(call, None)

    async def _traced_call(self, call: _Call) -> AgentCallResult:
        """A call with a tracer: each attempt in a span of its own (`_traced_attempt`)."""
        call.started = self._clock()
        # The first attempt is made here, not through call_with_retry: tenacity only
        # after a failure that may be retried (retry_after_failure).
        call.lane.budget.record_call()
        try:
            data = await self._attempt(call)
        except AgentError as exc:
            data = await self._after_first_failure(call, exc)
        return self._succeeded(call, data)

    async def _after_first_failure(self, call: _Call, exc: AgentError) -> dict[str, Any]:
        """The first attempt failed with `exc`: the retries' data, or the final error."""
        if not is_retried(exc, _is_retryable):
            self._failed(call, exc)
            raise exc
        try:
            return await self._retry(call, exc, call.retry)
        except AgentError as final:
            self._failed(call, final)
            raise

    def _succeeded(self, call: _Call, data: dict[str, Any]) -> AgentCallResult:
        call.lane.stats.outcomes["success"] += 1
        # No log line for a success: even filtered out, a structlog call costs ~2.7 us
        # (its lazy proxy, the keywords), more than the rest of the breaker. The step's
        # state, events and metrics say it; failures and retries are logged below.
        duration_s = self._clock() - call.started
        # AgentCallResult(...), built in C (its NamedTuple __new__ is a Python frame).
        return _new_tuple(AgentCallResult, (data, call.attempts, duration_s, call.source))

    async def _retry(
        self, call: _Call, first_error: AgentError, retry: RetryConfig | None
    ) -> dict[str, Any]:
        """The attempts after a first one failed with `first_error`, under the policy."""
        lane = call.lane
        agent = lane.spec.name
        stats = lane.stats

        def on_retry(attempt: int, exc: BaseException, delay_s: float) -> None:
            call.retry_delay_s = delay_s
            self._retries[agent] += 1
            stats.retries += 1
            code = getattr(exc, "code", type(exc).__name__)
            listener = retry_listener.get()
            if listener is not None:
                listener(agent, call.node_id, attempt, delay_s, code)
            log.warning(
                "agent_retry",
                agent=agent,
                workflow_id=call.workflow_id,
                node=call.node_id,
                attempt=attempt,
                delay_s=round(delay_s, 3),
                error=code,
                reason=str(exc),
            )

        return await retry_after_failure(
            first_error,
            lambda _attempt: self._attempt(call),
            config=lane.spec.retry if retry is None else retry,
            is_retryable=_is_retryable,
            retry_after_s=_retry_after_s,
            # The first attempt was recorded in the budget; each retry spends from it.
            budget=lane.budget,
            deadline=call.deadline,
            clock=self._clock,
            sleep=self._sleep,
            rng=self._rng,
            on_retry=on_retry,
        )

    def _failed(self, call: _Call, exc: AgentError) -> None:
        exc.attempts = call.attempts
        call.lane.stats.outcomes[exc.code] += 1
        log.info(
            "agent_call_failed",
            agent=call.spec.name,
            workflow_id=call.workflow_id,
            node=call.node_id,
            attempts=call.attempts,
            error=exc.code,
            reason=str(exc),
        )

    async def health(self, agent: str) -> bool:
        """True when the agent's `GET /health` answers 200. Bypasses breaker and retries."""
        spec = self._spec(agent)
        try:
            response = await self._transport.request(
                "GET",
                spec.health_url,
                timeouts=spec.timeouts,
                max_body_bytes=spec.max_response_bytes,
            )
        except _FOREIGN_ERRORS as exc:
            error = _translate(exc, agent=agent)
            log.info("agent_health_failed", agent=agent, error=error.code, reason=str(error))
            return False
        return response.status == 200

    # -- one attempt: breaker( bulkhead( timeout( HTTP ) ) ) ---------------------------

    def _attempt(self, call: _Call) -> Coroutine[Any, Any, dict[str, Any]]:
        # A plain function, not a coroutine: it picks the attempt's coroutine (one frame
        # less per attempt) after the one check that needs none. The time it finds left
        # is the attempt's cap (`_attempt_cap`): the clock is read once per attempt.
        remaining = 0.0
        if call.deadline is not None:
            remaining = call.deadline - self._clock()
            if remaining <= 0:
                raise AgentTimeout(phase="deadline", timeout_s=None, **_ctx(call))
        if self._tracer is not None:
            return self._traced_attempt(call, self._tracer, remaining)
        return self._gated(call, remaining)

    async def _traced_attempt(
        self, call: _Call, tracer: Tracer, remaining: float
    ) -> dict[str, Any]:
        name = call.spec.name
        attributes: dict[str, str | int | float] = {
            "agent": name,
            "attempt": call.attempts + 1,
            "breaker.state": self._breakers[name].state.value,
            "workflow.id": call.workflow_id,
            "node": call.node_id,
        }
        if call.retry_delay_s is not None:
            attributes["retry.delay_s"] = round(call.retry_delay_s, 6)
        with tracer.start_as_current_span(
            f"agent {name}",
            kind=SpanKind.CLIENT,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            # The span is current: the agent gets it as its parent.
            _PROPAGATOR.inject(call.headers)
            try:
                data: dict[str, Any] = await self._gated(call, remaining)
            except AgentError as exc:
                span.set_attribute("outcome", exc.code)
                span.set_attribute("error.type", exc.code)
                if isinstance(exc, AgentHTTPError):
                    span.set_attribute("http.response.status_code", exc.status)
                span.set_status(Status(StatusCode.ERROR, str(exc)))
                raise
            span.set_attribute("outcome", "success")
            span.set_attribute("http.response.status_code", 200)
            return data

    async def _gated(self, call: _Call, remaining: float | None) -> Any:
        """One attempt, `remaining` its time left until the deadline (0.0 without one):
        its `data`. `remaining` None: the first attempt of an untraced call, made in this
        frame as the whole call (`call` hands back this coroutine): it retries after a
        failure that may be retried and returns the `AgentCallResult`, as `_traced_call`
        does around `_attempt`. One frame either way: per attempt the layers add no
        coroutine of their own, and a call that succeeds at once is this one frame."""
        whole = remaining is None
        try:
            if remaining is None:
                remaining = self._begun(call)
            lane = call.lane
            breaker = lane.breaker
            # Every line logged from here on in this task (the node's own) carries the
            # number of the attempt it is about, up to the call's final result.
            log_attempt.set((log_node.get(), call.attempts + 1))
            try:
                ticket = breaker.admit()
            except CircuitOpenError as exc:
                raise _translate(exc, **_ctx(call)) from exc
            # What breaker.call does, in this frame: record the outcome after the await,
            # nothing on cancellation, free the probe slot in any case.
            try:
                bulkhead = lane.bulkhead
                if not bulkhead.try_acquire():
                    remaining = await self._wait_for_slot(call)
                stats = lane.stats
                stats.in_flight += 1
                try:
                    cap_s, cap_phase = _attempt_cap(call, remaining)
                    stats.attempts += 1
                    if call.payload is not None:
                        data = await self._a2a.send(call, cap_s, cap_phase)
                    else:
                        call.attempts += 1
                        request = self._transport.request(
                            "POST",
                            lane.process_url,
                            body=call.body,
                            headers=call.headers,
                            timeouts=call.timeouts,
                            max_body_bytes=call.spec.max_response_bytes,
                        )
                        # asyncio.timeout's semantics, on the client's one timer (start_at
                        # itself: `start` is one frame more around it); none without a cap.
                        cap = NO_CAP if cap_s is None else self._caps.start_at(None, cap_s)
                        try:
                            response = await request
                        except BaseException as exc:
                            raise _request_failed(exc, cap, call, cap_s, cap_phase)  # noqa: B904
                        cap.stop(None)
                        data = _parse(response, call)
                finally:
                    stats.in_flight -= 1
                    bulkhead.release()
            except asyncio.CancelledError:
                raise  # says nothing about the agent's health: record nothing
            except Exception as exc:
                breaker.record(ticket, _classify(exc), exc)
                raise
            else:
                breaker.record_success(ticket)
            finally:
                breaker.release(ticket)
        except AgentError as exc:
            if not whole:
                raise
            data = await self._after_first_failure(call, exc)
        if whole:
            return self._succeeded(call, data)
        return data

    def _begun(self, call: _Call) -> float:
        """A call's start, before its first attempt: the time it had left until its
        deadline (0.0 without one), or the deadline's `AgentTimeout` (nothing sent)."""
        started = call.started = self._clock()
        call.lane.budget.record_call()
        if call.deadline is None:
            return 0.0
        remaining = call.deadline - started
        if remaining <= 0:
            raise AgentTimeout(phase="deadline", timeout_s=None, **_ctx(call))
        return remaining

    async def _wait_for_slot(self, call: _Call) -> float:
        """The bulkhead is full: wait in line for a slot, at most until the deadline.
        Returns the time then left until the deadline (0.0 without one)."""
        stats = call.lane.stats
        bulkhead = call.lane.bulkhead
        stats.bulkhead_waits += 1
        waited_from = self._clock()
        try:
            if call.deadline is None:
                await bulkhead.acquire()
                return 0.0
            # asyncio.timeout's semantics on the client's one timer (circuit/cap.py): a
            # fan-out wider than the bulkhead waits here on most of its calls, and a timer
            # of the loop per wait (armed, then cancelled) was a heap push and pop each.
            wait_s = call.deadline - waited_from
            cap = self._caps.start(wait_s)
            try:
                await bulkhead.acquire()
            except BaseException as exc:
                if cap.stop(exc):
                    raise AgentTimeout(phase="bulkhead", timeout_s=wait_s, **_ctx(call)) from exc
                raise
            cap.stop(None)
            waited_to = self._clock()
            return call.deadline - waited_to
        finally:
            stats.bulkhead_wait_s += self._clock() - waited_from

    def _on_state_change(self, name: str, old: BreakerState, new: BreakerState) -> None:
        self._stats[name].transitions[(old.value, new.value)] += 1
        log.warning("breaker_state_change", agent=name, old=old.value, new=new.value)

    def _spec(
        self, agent: str, *, workflow_id: str | None = None, node_id: str | None = None
    ) -> AgentSpec:
        try:
            return self.registry[agent]
        except KeyError:
            raise UnknownAgent(
                agent=agent, known=self.registry, workflow_id=workflow_id, node_id=node_id
            ) from None


# -- translation and classification -----------------------------------------------------


def _attempt_cap(call: _Call, remaining: float) -> tuple[float | None, TimeoutPhase]:
    """The whole attempt's time limit: `timeout_s`, or less if the deadline is nearer
    (`remaining`: the time left until it). Raises the deadline's `AgentTimeout` when it
    has passed (nothing is sent)."""
    if call.deadline is not None:
        if remaining <= 0:
            raise AgentTimeout(phase="deadline", timeout_s=None, **_ctx(call))
        if call.timeout_s is None or remaining < call.timeout_s:
            return remaining, "deadline"
    return call.timeout_s, "attempt"


def _request_failed(
    exc: BaseException, cap: Cap, call: _Call, cap_s: float | None, cap_phase: TimeoutPhase
) -> BaseException:
    """What to raise for a request that raised `exc`: ours for what came from below, a
    `TimeoutError` (as asyncio.timeout's) when it is the attempt's cap that ended it,
    `exc` itself otherwise (a cancellation from outside, a bug). Its cause is `exc`."""
    error = exc
    if cap.stop(exc):
        error = TimeoutError()
        error.__cause__ = exc
    if isinstance(error, _FOREIGN_ERRORS):
        translated = _translate(error, **_ctx(call), cap_s=cap_s, cap_phase=cap_phase)
        translated.__cause__ = error
        return translated
    return error


def _ctx(call: _Call) -> dict[str, Any]:
    return {"agent": call.spec.name, "workflow_id": call.workflow_id, "node_id": call.node_id}


def _translate(
    exc: BaseException,
    *,
    agent: str,
    workflow_id: str | None = None,
    node_id: str | None = None,
    cap_s: float | None = None,
    cap_phase: TimeoutPhase = "attempt",
) -> AgentError:
    """The one place what comes from below (transport, our time cap, the breaker) becomes ours."""
    ctx: dict[str, Any] = {"agent": agent, "workflow_id": workflow_id, "node_id": node_id}
    if isinstance(exc, CircuitOpenError):
        return AgentUnavailable(retry_after_s=exc.retry_after_s, **ctx)
    if isinstance(exc, TransportTimeout):
        return AgentTimeout(phase=exc.phase, timeout_s=exc.timeout_s, **ctx)
    if isinstance(exc, ResponseTooLarge):
        return AgentResponseTooLarge(limit=exc.limit_bytes, **ctx)
    if isinstance(exc, TransportConnectionError):
        # The library's text names addresses and ports: the log keeps it, the error
        # (which clients see in step errors) says only what kind of failure it was.
        log.info("agent_connection_error", agent=agent, node=node_id, detail=exc.detail)
        return AgentConnectionError(reason=exc.reason, **ctx)
    if isinstance(exc, TimeoutError):
        return AgentTimeout(phase=cap_phase, timeout_s=cap_s, **ctx)
    raise TypeError(f"not an agent-call error from below: {exc!r}") from exc


def _check_status(response: TransportResponse, call: _Call) -> None:
    """The HTTP status of an answer: 429/5xx, other 4xx and non-2xx become our errors."""
    status = response.status
    if 200 <= status < 300:
        return
    ctx = _ctx(call)
    if status == 429 or status >= 500:
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        raise AgentHTTPError(status=status, body=response.body, retry_after_s=retry_after, **ctx)
    if 400 <= status < 500:
        raise AgentRejected(status=status, body=response.body, **ctx)
    raise AgentBadResponse(
        reason=f"unexpected HTTP {status}", status=status, body=response.body, **ctx
    )


def _parse(response: TransportResponse, call: _Call) -> dict[str, Any]:
    """Check an answer against the agent contract: 2xx `{"status": "success", "data": {...}}`."""
    if not 200 <= response.status < 300:
        _check_status(response, call)  # raises
    try:
        document = orjson.loads(response.body)
    except orjson.JSONDecodeError as exc:
        raise AgentBadResponse(
            reason="body is not JSON", status=response.status, body=response.body, **_ctx(call)
        ) from exc
    if type(document) is dict:
        data = document.get("data")
        if type(data) is dict and document.get("status") == "success":
            call.source = response.body
            return data  # the contract's answer: checked by type, cheapest first
    if not isinstance(document, dict):
        reason = f"body is a JSON {type(document).__name__}, not an object"
    elif document.get("status") != "success":
        reason = f"status is {document.get('status')!r}, not 'success'"
    else:
        reason = "`data` is missing or not an object"
    raise AgentBadResponse(reason=reason, status=response.status, body=response.body, **_ctx(call))


def _classify(exc: BaseException) -> Outcome:
    """How an attempt's error counts for the agent's breaker."""
    if isinstance(exc, AgentTaskFailed):
        # An A2A agent that answered: its fault only if its task failed on its side.
        return Outcome.FAILURE if exc.agent_fault else Outcome.SUCCESS
    if isinstance(exc, AgentTimeout) and exc.phase in ("deadline", "bulkhead"):
        return Outcome.NEUTRAL  # the caller's budget ran out, not the agent's fault
    if isinstance(exc, AgentRejected):
        return Outcome.SUCCESS  # the agent is alive; our request was bad
    if isinstance(exc, AgentHTTPError) and exc.status == 429:
        return Outcome.NEUTRAL  # back-pressure from a live agent, handled by retry
    return Outcome.FAILURE


def _is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, AgentTimeout):
        return exc.phase not in ("deadline", "bulkhead")
    if isinstance(exc, AgentRejected):
        return False
    return isinstance(exc, AgentHTTPError | AgentConnectionError)


def _retry_after_s(exc: BaseException) -> float | None:
    return exc.retry_after_s if isinstance(exc, AgentHTTPError) else None


def _encode(document: Mapping[str, Any]) -> bytes:
    # msgspec, not orjson: orjson (3.12 on) hands back its whole 4 KB write buffer as the
    # bytes, and a request body lives as long as its call: 50 fan-outs in flight held
    # 3.6 MB of bodies of ~150 bytes (bench.targets' peak RSS row). msgspec's are sized.
    return _ENCODER.encode(document)


async def _raising(exc: BaseException) -> AgentCallResult:
    """A call that fails before anything is sent, failing when awaited (as an
    `async def call` would), not when made."""
    raise exc


def _json_default(value: object) -> object:
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


_ENCODER = msgspec.json.Encoder(enc_hook=_json_default)
