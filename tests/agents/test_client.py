"""AgentClient against fake agents (respx routes, httpx.MockTransport): no network, no waiting."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest
import respx
import structlog

from agents.client import AgentClient
from agents.errors import (
    AgentBadResponse,
    AgentConnectionError,
    AgentHTTPError,
    AgentRejected,
    AgentResponseTooLarge,
    AgentTimeout,
    AgentUnavailable,
    UnknownAgent,
)
from agents.registry import AgentRegistry, AgentSpec, AgentTimeouts
from agents.transport import TransportConnectionError, create_transport
from agents.transport_httpx import HttpxTransport
from circuit.breaker import BreakerState
from circuit.config import BreakerConfig, RetryBudgetConfig, RetryConfig

BASE = "http://data.agent.test"
PROCESS = f"{BASE}/process"
OK = {"status": "success", "data": {"rows": [1, 2, 3]}}


class FakeClock:
    """A monotonic clock that only moves when the client sleeps; records every sleep."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def spec(**overrides: Any) -> AgentSpec:
    fields: dict[str, Any] = {
        "name": "data",
        "url": BASE,
        "breaker": BreakerConfig(policy="consecutive", fail_max=3, reset_timeout_s=60.0),
        "retry": RetryConfig(max_attempts=3, base_delay_s=1.0, max_delay_s=30.0),
        "retry_budget": RetryBudgetConfig(ratio=0.2, floor=10, window_s=10.0),
    }
    fields.update(overrides)
    return AgentSpec(**fields)


def ok(body: object = OK, **kwargs: Any) -> httpx.Response:
    return httpx.Response(200, json=body, **kwargs)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as mock:
        yield mock


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


MakeClient = Callable[..., AgentClient]


@pytest.fixture
def make_client(http: httpx.AsyncClient, clock: FakeClock) -> MakeClient:
    def make(*specs: AgentSpec, client: httpx.AsyncClient | None = None) -> AgentClient:
        return AgentClient(
            AgentRegistry(list(specs) or [spec()]),
            HttpxTransport(client or http),
            clock=clock,
            sleep=clock.sleep,
            rng=random.Random(7),
        )

    return make


async def call(client: AgentClient, agent: str = "data", **kwargs: Any) -> Any:
    return await client.call(
        agent, {"question": "sales by region"}, workflow_id="wf-1", node_id="fetch", **kwargs
    )


# -- success and the request on the wire -----------------------------------------------


async def test_success_returns_data_after_one_attempt(
    router: respx.MockRouter, make_client: MakeClient, clock: FakeClock
) -> None:
    """A 200 success answer gives its `data`, one attempt, and no sleep."""
    route = router.post(PROCESS).mock(return_value=ok())
    result = await call(make_client())
    assert result.data == {"rows": [1, 2, 3]}
    assert result.attempts == 1
    assert route.call_count == 1
    assert clock.sleeps == []


async def test_request_carries_envelope_and_idempotency_key(
    router: respx.MockRouter, make_client: MakeClient
) -> None:
    """The body is the agent envelope as JSON; the Idempotency-Key is workflow:step."""
    route = router.post(PROCESS).mock(return_value=ok())
    await make_client().call("data", {"q": {"nested": [1]}}, workflow_id="wf-9", node_id="step-2")
    request = route.calls.last.request
    assert orjson.loads(request.content) == {
        "workflow_id": "wf-9",
        "step_id": "step-2",
        "input": {"q": {"nested": [1]}},
    }
    assert request.headers["content-type"] == "application/json"
    assert request.headers["idempotency-key"] == "wf-9:step-2"


async def test_per_attempt_timeouts_come_from_the_spec(
    router: respx.MockRouter, make_client: MakeClient
) -> None:
    """Each request carries the agent's connect/read/write/pool timeouts."""
    route = router.post(PROCESS).mock(return_value=ok())
    timeouts = AgentTimeouts(connect=1.5, read=12.0, write=3.0, pool=0.5)
    await call(make_client(spec(timeouts=timeouts)))
    assert route.calls.last.request.extensions["timeout"] == {
        "connect": 1.5,
        "read": 12.0,
        "write": 3.0,
        "pool": 0.5,
    }


async def test_timeout_override_replaces_the_read_timeout(
    router: respx.MockRouter, make_client: MakeClient
) -> None:
    """`timeout_s` becomes the read timeout; the other phases keep the spec's values."""
    route = router.post(PROCESS).mock(return_value=ok())
    await call(make_client(), timeout_s=2.5)
    timeout = route.calls.last.request.extensions["timeout"]
    assert timeout["read"] == 2.5
    assert timeout["connect"] == AgentTimeouts().connect


async def test_payload_that_is_not_json_serialisable_is_a_type_error(
    router: respx.MockRouter, make_client: MakeClient
) -> None:
    """A payload that cannot be encoded as JSON fails before any request or breaker record."""
    route = router.post(PROCESS).mock(return_value=ok())
    client = make_client()
    with pytest.raises(TypeError):
        await client.call("data", {"x": object()}, workflow_id="wf", node_id="s")
    assert route.call_count == 0
    assert client.breaker("data").snapshot().calls == 0


# -- the response contract -------------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "reason"),
    [
        (httpx.Response(200, content=b"<html>oops</html>"), "not JSON"),
        (httpx.Response(200, json=[1, 2]), "not an object"),
        (httpx.Response(200, json={"status": "error", "data": {}}), "status is 'error'"),
        (httpx.Response(200, json={"data": {"a": 1}}), "status is None"),
        (httpx.Response(200, json={"status": "success"}), "`data` is missing"),
        (httpx.Response(200, json={"status": "success", "data": [1]}), "not an object"),
        (httpx.Response(302, headers={"location": "/elsewhere"}), "unexpected HTTP 302"),
    ],
)
async def test_contract_violation_is_bad_response_not_retried(
    router: respx.MockRouter,
    make_client: MakeClient,
    response: httpx.Response,
    reason: str,
) -> None:
    """An answer that breaks the contract is AgentBadResponse, sent once, a breaker failure."""
    route = router.post(PROCESS).mock(return_value=response)
    client = make_client()
    with pytest.raises(AgentBadResponse) as caught:
        await call(client)
    assert reason in caught.value.reason
    assert caught.value.attempts == 1
    assert route.call_count == 1
    assert client.breaker("data").snapshot().failure_count == 1


# -- retries ---------------------------------------------------------------------------


async def test_500_then_200_takes_two_attempts_and_counts_the_retry(
    router: respx.MockRouter, make_client: MakeClient, clock: FakeClock
) -> None:
    """A 5xx is retried; the result says 2 attempts and the client counted one retry."""
    router.post(PROCESS).mock(side_effect=[httpx.Response(500), ok()])
    client = make_client()
    result = await call(client)
    assert result.attempts == 2
    assert client.retries == {"data": 1}
    assert len(clock.sleeps) == 1
    assert 0.0 <= clock.sleeps[0] <= 1.0  # full jitter under base_delay_s


async def test_idempotency_key_and_body_identical_on_every_retry(
    router: respx.MockRouter, make_client: MakeClient
) -> None:
    """Every attempt of one call sends the same Idempotency-Key and the same body."""
    route = router.post(PROCESS).mock(
        side_effect=[httpx.Response(502), httpx.ConnectError("refused"), ok()]
    )
    result = await call(make_client())
    assert result.attempts == 3
    requests = [c.request for c in route.calls]
    assert {r.headers["idempotency-key"] for r in requests} == {"wf-1:fetch"}
    assert len({r.content for r in requests}) == 1


@pytest.mark.parametrize("status", [400, 404, 409, 422])
async def test_4xx_is_rejected_once_and_does_not_trip_the_breaker(
    router: respx.MockRouter, make_client: MakeClient, clock: FakeClock, status: int
) -> None:
    """A 4xx other than 429 is AgentRejected, never retried, a breaker success."""
    route = router.post(PROCESS).mock(return_value=httpx.Response(status, text="bad field x"))
    client = make_client()
    for _ in range(5):  # more than fail_max
        with pytest.raises(AgentRejected) as caught:
            await call(client)
    assert caught.value.status == status
    assert "bad field x" in str(caught.value)
    assert caught.value.attempts == 1
    assert route.call_count == 5
    assert clock.sleeps == []
    assert client.breaker("data").state is BreakerState.CLOSED
    assert client.breaker("data").snapshot().successes == 5


async def test_429_sleeps_exactly_the_retry_after(
    router: respx.MockRouter, make_client: MakeClient, clock: FakeClock
) -> None:
    """A 429's Retry-After (longer than the backoff) is the exact wait before the retry."""
    router.post(PROCESS).mock(side_effect=[httpx.Response(429, headers={"Retry-After": "7"}), ok()])
    result = await call(make_client())
    assert result.attempts == 2
    assert clock.sleeps == [7.0]


async def test_503_retry_after_is_honoured_too(
    router: respx.MockRouter, make_client: MakeClient, clock: FakeClock
) -> None:
    """A 503 with Retry-After waits that long before retrying."""
    router.post(PROCESS).mock(
        side_effect=[httpx.Response(503, headers={"Retry-After": "12"}), ok()]
    )
    await call(make_client())
    assert clock.sleeps == [12.0]


async def test_429_is_neutral_for_the_breaker(
    router: respx.MockRouter, make_client: MakeClient
) -> None:
    """Back-pressure never opens the breaker, however many 429s come back."""
    route = router.post(PROCESS).mock(return_value=httpx.Response(429))
    client = make_client(spec(retry=RetryConfig(max_attempts=1)))
    for _ in range(6):
        with pytest.raises(AgentHTTPError) as caught:
            await call(client)
        assert caught.value.status == 429
    assert route.call_count == 6
    assert client.breaker("data").state is BreakerState.CLOSED
    assert client.breaker("data").snapshot().failure_count == 0


async def test_timeout_is_retried_until_max_attempts(
    router: respx.MockRouter, make_client: MakeClient, clock: FakeClock
) -> None:
    """A read timeout on every attempt ends in AgentTimeout after max_attempts."""
    route = router.post(PROCESS).mock(side_effect=httpx.ReadTimeout("slow"))
    client = make_client(spec(breaker=BreakerConfig(policy="consecutive", fail_max=10)))
    with pytest.raises(AgentTimeout) as caught:
        await call(client)
    error = caught.value
    assert error.attempts == 3
    assert (error.phase, error.timeout_s) == ("read", AgentTimeouts().read)
    assert str(error) == (
        f"agent 'data' timed out after {AgentTimeouts().read} s (read timeout) (after 3 attempts)"
    )
    assert route.call_count == 3
    assert len(clock.sleeps) == 2
    assert client.retries["data"] == 2
    assert client.breaker("data").snapshot().failure_count == 3


async def test_connection_error_is_agent_unreachable(
    router: respx.MockRouter, make_client: MakeClient
) -> None:
    """A refused connection is AgentConnectionError carrying the transport's reason."""
    router.post(PROCESS).mock(side_effect=httpx.ConnectError("connection refused"))
    with pytest.raises(AgentConnectionError) as caught:
        await call(make_client(spec(retry=RetryConfig(max_attempts=2))))
    assert caught.value.code == "agent_unreachable"
    assert "connection refused" in caught.value.reason
    assert caught.value.attempts == 2
    # The chain of causes keeps httpx's own error, translated once by the transport.
    assert isinstance(caught.value.__cause__, TransportConnectionError)
    assert isinstance(caught.value.__cause__.__cause__, httpx.ConnectError)


async def test_per_node_retry_override(router: respx.MockRouter, make_client: MakeClient) -> None:
    """`retry=` replaces the agent's retry policy for that one call, in both directions."""
    route = router.post(PROCESS).mock(return_value=httpx.Response(500))
    client = make_client(spec(breaker=BreakerConfig(policy="consecutive", fail_max=50)))
    with pytest.raises(AgentHTTPError) as caught:
        await call(client, retry=RetryConfig(max_attempts=1))
    assert (caught.value.attempts, route.call_count) == (1, 1)
    with pytest.raises(AgentHTTPError) as caught:
        await call(client, retry=RetryConfig(max_attempts=5))
    assert (caught.value.attempts, route.call_count) == (5, 6)


async def test_retry_budget_stops_a_storm(
    router: respx.MockRouter, make_client: MakeClient
) -> None:
    """Once the agent's retry budget is spent, failing calls are sent once, not max_attempts."""
    route = router.post(PROCESS).mock(return_value=httpx.Response(500))
    client = make_client(
        spec(
            breaker=BreakerConfig(policy="consecutive", fail_max=1000),
            retry=RetryConfig(max_attempts=5),
            retry_budget=RetryBudgetConfig(ratio=0.0, floor=3, window_s=3600.0),
        )
    )
    attempts = []
    for _ in range(10):
        with pytest.raises(AgentHTTPError) as caught:
            await call(client)
        attempts.append(caught.value.attempts)
    assert attempts == [4] + [1] * 9
    assert route.call_count == 13
    assert client.retries["data"] == 3


async def test_deadline_stops_retries_that_would_overrun_it(
    router: respx.MockRouter, make_client: MakeClient, clock: FakeClock
) -> None:
    """A Retry-After beyond the deadline ends the call instead of sleeping past it."""
    route = router.post(PROCESS).mock(
        return_value=httpx.Response(503, headers={"Retry-After": "30"})
    )
    with pytest.raises(AgentHTTPError) as caught:
        await call(make_client(), deadline=clock.now + 10.0)
    assert caught.value.attempts == 1
    assert route.call_count == 1
    assert clock.sleeps == []


async def test_passed_deadline_sends_nothing(
    router: respx.MockRouter, make_client: MakeClient, clock: FakeClock
) -> None:
    """A call whose deadline has passed fails at once without a request or a breaker record."""
    route = router.post(PROCESS).mock(return_value=ok())
    client = make_client()
    with pytest.raises(AgentTimeout) as caught:
        await call(client, deadline=clock.now)
    assert caught.value.phase == "deadline"
    assert caught.value.attempts == 0
    assert route.call_count == 0
    assert client.breaker("data").snapshot().calls == 0


# -- the breaker -----------------------------------------------------------------------


async def test_breaker_opens_after_fail_max_then_sends_nothing(
    router: respx.MockRouter, make_client: MakeClient
) -> None:
    """fail_max failed calls open the breaker; the next call is AgentUnavailable, unsent."""
    route = router.post(PROCESS).mock(return_value=httpx.Response(500))
    client = make_client(spec(retry=RetryConfig(max_attempts=1)))
    for _ in range(3):
        with pytest.raises(AgentHTTPError):
            await call(client)
    assert client.breaker("data").state is BreakerState.OPEN
    with pytest.raises(AgentUnavailable) as caught:
        await call(client)
    assert route.call_count == 3
    error = caught.value
    assert error.attempts == 0
    assert error.retry_after_s == pytest.approx(60.0)
    assert error.code == "agent_unavailable"
    assert "circuit breaker open" in str(error)


async def test_open_breaker_ends_the_retries_of_a_call(
    router: respx.MockRouter, make_client: MakeClient, clock: FakeClock
) -> None:
    """When a call's own failures open the breaker, its next retry is refused unsent."""
    route = router.post(PROCESS).mock(return_value=httpx.Response(500))
    client = make_client(
        spec(
            breaker=BreakerConfig(policy="consecutive", fail_max=2),
            retry=RetryConfig(max_attempts=5),
        )
    )
    with pytest.raises(AgentUnavailable) as caught:
        await call(client)
    assert route.call_count == 2
    assert caught.value.attempts == 2
    assert len(clock.sleeps) == 2  # two retries were planned; the second was refused


async def test_breaker_half_opens_after_reset_timeout_and_closes_on_success(
    router: respx.MockRouter, make_client: MakeClient, clock: FakeClock
) -> None:
    """After reset_timeout_s a probe goes through; its success closes the breaker."""
    router.post(PROCESS).mock(side_effect=[httpx.Response(500), ok()])
    client = make_client(
        spec(
            breaker=BreakerConfig(policy="consecutive", fail_max=1, reset_timeout_s=60.0),
            retry=RetryConfig(max_attempts=1),
        )
    )
    with pytest.raises(AgentHTTPError):
        await call(client)
    clock.now += 60.0
    assert (await call(client)).data == OK["data"]
    assert client.breaker("data").state is BreakerState.CLOSED


async def test_state_changes_and_retries_are_logged_once_each(
    router: respx.MockRouter, make_client: MakeClient
) -> None:
    """One warning per retry (with agent, workflow, step, attempt) and per breaker transition."""
    router.post(PROCESS).mock(return_value=httpx.Response(500))
    client = make_client(spec(breaker=BreakerConfig(policy="consecutive", fail_max=2)))
    with structlog.testing.capture_logs() as logs, pytest.raises(AgentUnavailable):
        await call(client)
    retries = [e for e in logs if e["event"] == "agent_retry"]
    changes = [e for e in logs if e["event"] == "breaker_state_change"]
    assert [(e["attempt"], e["log_level"]) for e in retries] == [(2, "warning"), (3, "warning")]
    assert {(e["agent"], e["workflow_id"], e["node"]) for e in retries} == {
        ("data", "wf-1", "fetch")
    }
    assert [(e["agent"], e["old"], e["new"], e["log_level"]) for e in changes] == [
        ("data", "closed", "open", "warning")
    ]


# -- unknown agents --------------------------------------------------------------------


async def test_unknown_agent_sends_nothing(
    router: respx.MockRouter, make_client: MakeClient
) -> None:
    """A name outside the registry is UnknownAgent, and no request leaves at all."""
    anything = router.route().mock(return_value=ok())
    client = make_client()
    with pytest.raises(UnknownAgent) as caught:
        await call(client, "https://evil.example/steal")
    assert caught.value.known == ["data"]
    assert (caught.value.workflow_id, caught.value.node_id) == ("wf-1", "fetch")
    assert anything.call_count == 0
    with pytest.raises(UnknownAgent):
        client.breaker("viz")
    with pytest.raises(UnknownAgent):
        await client.health("viz")
    assert anything.call_count == 0


def test_one_breaker_per_registered_agent(make_client: MakeClient) -> None:
    """Every registered agent has its own breaker, named after it, and no other exists."""
    client = make_client(spec(), spec(name="viz", url="http://viz.test"))
    breakers = client.breakers()
    assert set(breakers) == {"data", "viz"}
    assert breakers["viz"] is client.breaker("viz")
    assert breakers["viz"] is not breakers["data"]
    assert client.retries == {"data": 0, "viz": 0}


# -- cancellation, bulkhead, per-attempt cap (MockTransport) ---------------------------


class HangingAgent:
    """A MockTransport handler that holds every request until `release` is set."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self.in_flight = 0
        self.max_in_flight = 0
        self.requests = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.entered.set()
        try:
            await self.release.wait()
        finally:
            self.in_flight -= 1
        return ok()


async def test_cancelled_call_propagates_and_is_not_a_failure(make_client: MakeClient) -> None:
    """Cancelling an in-flight call raises CancelledError: no retry, no breaker record."""
    agent = HangingAgent()
    async with httpx.AsyncClient(transport=httpx.MockTransport(agent)) as http:
        client = make_client(
            spec(concurrency=1, breaker=BreakerConfig(policy="consecutive", fail_max=1)),
            client=http,
        )
        task = asyncio.create_task(call(client))
        await agent.entered.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        snapshot = client.breaker("data").snapshot()
        assert (snapshot.state, snapshot.failures, snapshot.successes) == ("closed", 0, 0)
        assert client.retries["data"] == 0
        assert agent.requests == 1
        # The bulkhead slot (concurrency=1) was given back: the next call goes through.
        agent.release.set()
        assert (await call(client)).attempts == 1


async def test_bulkhead_caps_calls_in_flight(make_client: MakeClient) -> None:
    """No more than spec.concurrency calls to one agent are in flight at once."""
    agent = HangingAgent()
    async with httpx.AsyncClient(transport=httpx.MockTransport(agent)) as http:
        client = make_client(spec(concurrency=2), client=http)
        tasks = [asyncio.create_task(call(client)) for _ in range(6)]
        await agent.entered.wait()
        for _ in range(5):
            await asyncio.sleep(0)  # let every task reach the bulkhead
        assert agent.in_flight == 2
        agent.release.set()
        results = await asyncio.gather(*tasks)
    assert agent.max_in_flight == 2
    assert [r.attempts for r in results] == [1] * 6


async def test_timeout_override_caps_the_whole_attempt(make_client: MakeClient) -> None:
    """`timeout_s` bounds an attempt as a whole: a hanging agent is an AgentTimeout."""
    agent = HangingAgent()
    async with httpx.AsyncClient(transport=httpx.MockTransport(agent)) as http:
        client = make_client(spec(retry=RetryConfig(max_attempts=1)), client=http)
        with pytest.raises(AgentTimeout) as caught:
            await call(client, timeout_s=0.01)
    assert (caught.value.phase, caught.value.timeout_s) == ("attempt", 0.01)
    assert client.breaker("data").snapshot().failure_count == 1


async def test_waiting_for_the_bulkhead_past_the_deadline_is_neutral(
    make_client: MakeClient, clock: FakeClock
) -> None:
    """A call still queued at its deadline fails as a bulkhead timeout, not against the agent."""
    agent = HangingAgent()
    async with httpx.AsyncClient(transport=httpx.MockTransport(agent)) as http:
        client = make_client(spec(concurrency=1), client=http)
        holder = asyncio.create_task(call(client))
        await agent.entered.wait()
        with pytest.raises(AgentTimeout) as caught:
            await call(client, deadline=clock.now + 0.01)
        agent.release.set()
        await holder
    assert caught.value.phase == "bulkhead"
    assert caught.value.attempts == 0
    assert agent.requests == 1
    assert client.breaker("data").snapshot().failures == 0


async def test_deadline_nearer_than_the_agent_timeout_caps_the_attempt(
    make_client: MakeClient, clock: FakeClock
) -> None:
    """The deadline, when nearer than `timeout_s`, is the attempt's cap: a deadline
    timeout, not retried, neutral for the breaker."""
    agent = HangingAgent()
    async with httpx.AsyncClient(transport=httpx.MockTransport(agent)) as http:
        client = make_client(spec(), client=http)
        with pytest.raises(AgentTimeout) as caught:
            await call(client, timeout_s=30.0, deadline=clock.now + 0.01)
    assert (caught.value.phase, caught.value.attempts) == ("deadline", 1)
    assert caught.value.timeout_s == pytest.approx(0.01)
    assert agent.requests == 1
    snapshot = client.breaker("data").snapshot()
    assert (snapshot.failures, snapshot.successes, snapshot.calls) == (0, 0, 1)
    assert client.stats("data").in_flight == 0


async def test_cancel_under_the_attempt_cap_stays_a_cancellation(
    make_client: MakeClient, clock: FakeClock
) -> None:
    """Cancelled from outside while the cap is armed: CancelledError, nothing recorded,
    the bulkhead slot given back."""
    agent = HangingAgent()
    async with httpx.AsyncClient(transport=httpx.MockTransport(agent)) as http:
        client = make_client(spec(concurrency=1), client=http)
        task = asyncio.create_task(call(client, deadline=clock.now + 60.0))
        await agent.entered.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        snapshot = client.breaker("data").snapshot()
        assert (snapshot.failures, snapshot.successes) == (0, 0)
        agent.release.set()
        assert (await call(client, deadline=clock.now + 60.0)).attempts == 1
    assert client.stats("data").in_flight == 0


async def test_a_call_cancelled_while_queued_at_the_bulkhead_leaks_no_slot(
    make_client: MakeClient,
) -> None:
    """A call waiting for a full bulkhead and cancelled there frees its place; the next
    queued call gets the slot when the holder finishes."""
    agent = HangingAgent()
    async with httpx.AsyncClient(transport=httpx.MockTransport(agent)) as http:
        client = make_client(spec(concurrency=1), client=http)
        holder = asyncio.create_task(call(client))
        await agent.entered.wait()
        queued = asyncio.create_task(call(client))
        behind = asyncio.create_task(call(client))
        for _ in range(5):
            await asyncio.sleep(0)  # both reach the bulkhead and wait
        assert client.stats("data").bulkhead_waits == 2
        queued.cancel()
        with pytest.raises(asyncio.CancelledError):
            await queued
        agent.release.set()
        results = await asyncio.gather(holder, behind)
    assert [r.attempts for r in results] == [1, 1]
    assert agent.requests == 2 and agent.max_in_flight == 1
    assert client.breaker("data").snapshot().successes == 2


async def queue_behind_the_only_slot(
    client: AgentClient, agent: HangingAgent, clock: FakeClock
) -> tuple[asyncio.Task[Any], asyncio.Task[Any]]:
    """A call holding the agent's one bulkhead slot, and one queued behind it under a
    deadline (the client's shared timer caps its wait)."""
    holder = asyncio.create_task(call(client))
    await agent.entered.wait()
    queued = asyncio.create_task(call(client, deadline=clock.now + 60.0))
    for _ in range(5):
        await asyncio.sleep(0)
    return holder, queued


async def test_a_call_queued_with_a_deadline_and_cancelled_stays_a_cancellation(
    make_client: MakeClient, clock: FakeClock
) -> None:
    """Queued at the bulkhead under a deadline's cap (the client's shared timer) and
    cancelled from outside: CancelledError, not a bulkhead timeout; no slot leaks."""
    agent = HangingAgent()
    async with httpx.AsyncClient(transport=httpx.MockTransport(agent)) as http:
        client = make_client(spec(concurrency=1), client=http)
        holder, queued = await queue_behind_the_only_slot(client, agent, clock)
        assert client.stats("data").bulkhead_waits == 1
        queued.cancel()
        with pytest.raises(asyncio.CancelledError):
            await queued
        agent.release.set()
        await holder
        assert (await call(client, deadline=clock.now + 60.0)).attempts == 1
    assert client.breaker("data").snapshot().failures == 0
    assert client.stats("data").in_flight == 0


async def test_a_call_queued_with_a_deadline_goes_on_when_a_slot_frees(
    make_client: MakeClient, clock: FakeClock
) -> None:
    """Queued under a deadline, handed the slot in time: the call is made, and its cap
    on the wait is gone (the client's timer holds nothing for it)."""
    agent = HangingAgent()
    async with httpx.AsyncClient(transport=httpx.MockTransport(agent)) as http:
        client = make_client(spec(concurrency=1), client=http)
        holder, queued = await queue_behind_the_only_slot(client, agent, clock)
        agent.release.set()
        results = await asyncio.gather(holder, queued)
    assert [r.attempts for r in results] == [1, 1]
    assert client.stats("data").bulkhead_waits == 1
    assert not client._caps._caps
    assert agent.requests == 2 and agent.max_in_flight == 1


# -- health ----------------------------------------------------------------------------


async def test_health_is_true_only_for_a_200(
    router: respx.MockRouter, make_client: MakeClient
) -> None:
    """health() is True on 200, False on another status or a transport error; never raises."""
    route = router.get(f"{BASE}/health")
    client = make_client()
    route.mock(return_value=httpx.Response(200))
    assert await client.health("data") is True
    route.mock(return_value=httpx.Response(503))
    assert await client.health("data") is False
    route.mock(side_effect=httpx.ConnectError("refused"))
    assert await client.health("data") is False
    assert client.breaker("data").snapshot().calls == 0


def test_create_transport_rejects_an_unknown_transport() -> None:
    """Only the two measured transports can be asked for."""
    with pytest.raises(ValueError, match="unknown transport"):
        create_transport("curl")  # type: ignore[arg-type]


async def test_answer_past_the_size_cap_is_too_large_and_not_retried(
    router: respx.MockRouter, make_client: MakeClient
) -> None:
    """A body past max_response_bytes is AgentResponseTooLarge: one attempt, a breaker failure."""
    big = {"status": "success", "data": {"blob": "x" * 5_000}}
    route = router.post(PROCESS).mock(return_value=ok(big))
    client = make_client(spec(max_response_bytes=4_096))
    with pytest.raises(AgentResponseTooLarge) as caught:
        await call(client)
    assert route.call_count == 1
    assert (caught.value.code, caught.value.limit, caught.value.attempts) == (
        "agent_response_too_large",
        4_096,
        1,
    )
    assert client.breaker("data").snapshot().failure_count == 1
    # Just within the cap is fine.
    route.mock(return_value=ok({"status": "success", "data": {"blob": "x" * 100}}))
    assert (await call(make_client(spec(max_response_bytes=4_096)))).data["blob"] == "x" * 100
