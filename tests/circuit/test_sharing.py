"""BreakerSync: ops modes reach every replica, followers follow, and calls never wait on it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from structlog.testing import capture_logs

from circuit import AsyncCircuitBreaker, BreakerConfig, BreakerState, CircuitOpenError, Forced
from circuit.board import ForcedMode, MemoryBreakerBoard, ReplicaReport
from circuit.errors import BreakerBoardError
from circuit.sharing import BreakerSync
from tests.fakes import FakeClock


def breakers(clock: FakeClock, **config: Any) -> dict[str, AsyncCircuitBreaker]:
    return {
        name: AsyncCircuitBreaker(name, BreakerConfig(**config), clock=clock)
        for name in ("nlp", "data")
    }


def replica(
    name: str, board: Any, clock: FakeClock, **config: Any
) -> BreakerSync:
    return BreakerSync(breakers(clock, **config), board, replica=name, interval_s=3600)


async def ok() -> str:
    return "ok"


async def boom() -> str:
    raise RuntimeError("agent down")


class DeadBoard:
    """A board whose backend is down: every operation fails (after `hang` awaits, if set)."""

    backend = "redis"

    def __init__(self, *, hang: asyncio.Event | None = None) -> None:
        self.hang = hang
        self.attempts = 0

    async def _fail(self) -> Any:
        self.attempts += 1
        if self.hang is not None:
            await self.hang.wait()
        raise BreakerBoardError("down", backend="redis", operation="x")

    async def publish(self, replica: str, breakers: Mapping[str, Mapping[str, Any]]) -> None:
        await self._fail()

    async def reports(self) -> list[ReplicaReport]:
        return list(await self._fail())

    async def withdraw(self, replica: str) -> None:
        await self._fail()

    async def set_forced(self, agent: str, mode: Forced | None, *, by: str) -> None:
        await self._fail()

    async def forced(self) -> dict[str, ForcedMode]:
        return dict(await self._fail())

    async def resets(self) -> dict[str, int]:
        return dict(await self._fail())

    async def watch(self, on_change: Any, ready: asyncio.Event | None = None) -> None:
        await self._fail()

    async def close(self) -> None:
        return None


async def test_an_ops_action_on_one_replica_reaches_the_other(clock: FakeClock) -> None:
    """open on A: B refuses calls after its next cycle; reset on B: A closes after its next."""
    board = MemoryBreakerBoard()
    a, b = replica("a", board, clock), replica("b", board, clock)
    await a.force("data", Forced.OPEN)
    assert a.breakers["data"].state is BreakerState.OPEN  # at once where it was asked
    await b.refresh()
    with pytest.raises(CircuitOpenError, match="forced|open"):
        await b.breakers["data"].call(ok)
    assert b.breakers["data"].forced is Forced.OPEN
    assert b.breakers["nlp"].state is BreakerState.CLOSED
    await b.force("data", None)
    await a.refresh()
    assert a.breakers["data"].state is BreakerState.CLOSED
    assert a.breakers["data"].forced is None


async def test_disable_and_enable_reach_every_replica(clock: FakeClock) -> None:
    board = MemoryBreakerBoard()
    a, b = replica("a", board, clock, minimum_calls=1), replica("b", board, clock)
    await a.force("data", Forced.DISABLED)
    await b.refresh()
    for sync in (a, b):
        breaker = sync.breakers["data"]
        for _ in range(30):
            with pytest.raises(RuntimeError):
                await breaker.call(boom)
        assert (breaker.state, breaker.forced) == (BreakerState.CLOSED, Forced.DISABLED)
    await b.force("data", None)
    await a.refresh()
    assert a.breakers["data"].forced is None
    with pytest.raises(RuntimeError):
        await a.breakers["data"].call(boom)
    assert a.breakers["data"].state is BreakerState.OPEN  # the policy rules again


async def test_a_starting_replica_applies_the_modes_in_force_before_serving(
    clock: FakeClock,
) -> None:
    board = MemoryBreakerBoard()
    await board.set_forced("data", Forced.OPEN, by="old")
    late = replica("late", board, clock)
    await late.start()
    try:
        assert late.breakers["data"].forced is Forced.OPEN
        assert late.cycles >= 1
    finally:
        await late.close()
    assert await board.reports() == []  # withdrawn on close


async def test_the_view_has_every_replica_and_an_overall_state(clock: FakeClock) -> None:
    board = MemoryBreakerBoard()
    a, b = replica("a", board, clock, minimum_calls=1), replica("b", board, clock)
    with pytest.raises(RuntimeError):
        await a.breakers["data"].call(boom)  # A's data breaker opens on its own
    await a.refresh()
    await b.refresh()
    view = await b.view()
    assert view["replica"] == "b"
    assert view["shared"] == {"backend": "memory", "available": True, "replicas": ["a", "b"]}
    data = view["breakers"]["data"]
    assert data["state"] == "closed"  # B's own breaker
    assert data["replicas"]["a"]["state"] == "open"
    assert data["replicas"]["a"]["window"]["failures"] == 1
    assert data["overall"]["state"] == "partly_open"
    assert (data["overall"]["open"], data["overall"]["closed"]) == (1, 1)
    assert data["overall"]["window"]["calls"] == 1
    await b.force("data", Forced.OPEN)
    overall = (await a.view())["breakers"]["data"]["overall"]
    assert overall["state"] == "open"
    assert overall["forced"]["mode"] == "open" and overall["forced"]["by"] == "b"


async def test_followers_hold_open_while_enough_replicas_opened_it_themselves(
    clock: FakeClock,
) -> None:
    """share="follow": B and C open when A (1 of 3 >= 1/3) opened on its own; they close with it."""
    board = MemoryBreakerBoard()
    config = {"share": "follow", "follow_share": 0.3, "minimum_calls": 1, "reset_timeout_s": 30.0}
    a, b, c = (replica(name, board, clock, **config) for name in "abc")
    for sync in (b, c):
        await sync.refresh()
    with pytest.raises(RuntimeError):
        await a.breakers["data"].call(boom)
    await a.refresh()
    for sync in (b, c):
        await sync.refresh()
        assert sync.breakers["data"].forced is Forced.FOLLOW
        with pytest.raises(CircuitOpenError):
            await sync.breakers["data"].call(ok)
    clock.advance(1000.0)  # followers never half-open on their own: A probes for everyone
    assert b.breakers["data"].state is BreakerState.OPEN
    await b.refresh()
    await c.refresh()  # followers do not count: they do not keep each other open
    assert b.breakers["data"].forced is Forced.FOLLOW
    assert await a.breakers["data"].call(ok) == "ok"  # A's probe succeeds: A closes
    await a.refresh()
    for sync in (b, c):
        await sync.refresh()
        assert (sync.breakers["data"].state, sync.breakers["data"].forced) == (
            BreakerState.CLOSED,
            None,
        )


async def test_without_follow_a_replica_keeps_its_own_state(clock: FakeClock) -> None:
    board = MemoryBreakerBoard()
    a, b = replica("a", board, clock, minimum_calls=1), replica("b", board, clock)
    with pytest.raises(RuntimeError):
        await a.breakers["data"].call(boom)
    await a.refresh()
    await b.refresh()
    assert b.breakers["data"].state is BreakerState.CLOSED


async def test_calls_go_on_while_the_board_hangs_and_the_outage_is_logged_once(
    clock: FakeClock,
) -> None:
    """A board that hangs or fails never holds up a call; the publisher logs and carries on."""
    hang = asyncio.Event()
    board = DeadBoard(hang=hang)
    sync = BreakerSync(breakers(clock), board, replica="a", interval_s=0.001, start_timeout_s=0.05)
    with capture_logs() as logs:
        await sync.start()  # bounded: the start gives up on a hanging board
        assert await sync.breakers["data"].call(ok) == "ok"  # while a cycle hangs on the board
        hang.set()
        while board.attempts < 5:  # the loop keeps trying, without waiting on calls
            assert await sync.breakers["nlp"].call(ok) == "ok"
            await asyncio.sleep(0)
        await sync.close()
    events = [entry["event"] for entry in logs]
    assert events.count("breaker_board_unavailable") == 1


async def test_an_ops_action_on_a_dead_board_changes_nothing(clock: FakeClock) -> None:
    sync = BreakerSync(breakers(clock), DeadBoard(), replica="a")
    with pytest.raises(BreakerBoardError):
        await sync.force("data", Forced.OPEN)
    assert sync.breakers["data"].forced is None
    view = await sync.view()
    assert view["shared"]["available"] is False
    assert view["shared"]["replicas"] == ["a"]
    assert view["breakers"]["data"]["overall"]["state"] == "closed"


async def test_a_cycle_that_read_the_board_before_a_local_action_does_not_undo_it(
    clock: FakeClock,
) -> None:
    """An ops action made while a cycle awaits the board wins over what that cycle read."""
    board = MemoryBreakerBoard()
    sync = replica("a", board, clock)
    gate = asyncio.Event()
    read = asyncio.Event()
    real_forced = board.forced

    async def slow_forced() -> dict[str, ForcedMode]:
        seen = await real_forced()
        read.set()
        await gate.wait()
        return seen

    board.forced = slow_forced  # type: ignore[method-assign]
    cycle = asyncio.create_task(sync.refresh())
    await read.wait()  # the cycle has read "nothing forced"
    board.forced = real_forced  # type: ignore[method-assign]
    await sync.force("data", Forced.OPEN)
    gate.set()
    await cycle
    assert sync.breakers["data"].forced is Forced.OPEN


async def test_a_transition_is_published_at_once_not_at_the_next_tick(clock: FakeClock) -> None:
    board = MemoryBreakerBoard()
    sync = replica("a", board, clock, minimum_calls=1)  # ticks once an hour
    await sync.start()
    try:
        with pytest.raises(RuntimeError):
            await sync.breakers["data"].call(boom)  # opens: the observer wakes the publisher
        for _ in range(100):  # a few loop turns, not an hour
            reports = await board.reports()
            if reports and reports[0].breakers["data"]["state"] == "open":
                break
            await asyncio.sleep(0)
        else:
            raise AssertionError("the transition was not published")
    finally:
        await sync.close()


async def test_a_reset_closes_every_replica_breaker_even_one_that_opened_itself(
    clock: FakeClock,
) -> None:
    """reset on A closes B's breaker that opened on its own (no mode was ever recorded)."""
    board = MemoryBreakerBoard()
    a, b = replica("a", board, clock), replica("b", board, clock, minimum_calls=1)
    for sync in (a, b):
        await sync.refresh()
    with pytest.raises(RuntimeError):
        await b.breakers["data"].call(boom)
    assert b.breakers["data"].state is BreakerState.OPEN
    await b.refresh()
    await a.force("data", None)
    await b.refresh()
    assert b.breakers["data"].state is BreakerState.CLOSED
    with pytest.raises(RuntimeError):
        await b.breakers["data"].call(boom)  # it may open again on its own
    await b.refresh()  # and the old reset is not applied twice
    assert b.breakers["data"].state is BreakerState.OPEN


async def test_reset_closes_a_breaker_opened_by_its_own_policy(clock: FakeClock) -> None:
    """Closed at once where it was asked, and not reset a second time by the next cycle."""
    sync = replica("a", MemoryBreakerBoard(), clock, minimum_calls=1)
    await sync.refresh()
    with pytest.raises(RuntimeError):
        await sync.breakers["data"].call(boom)
    await sync.force("data", None)
    assert sync.breakers["data"].state is BreakerState.CLOSED
    with pytest.raises(RuntimeError):
        await sync.breakers["data"].call(boom)
    await sync.refresh()
    assert sync.breakers["data"].state is BreakerState.OPEN


async def test_an_ops_action_wakes_the_other_replicas_without_waiting_for_their_poll(
    clock: FakeClock,
) -> None:
    board = MemoryBreakerBoard()
    a, b = replica("a", board, clock), replica("b", board, clock)  # they poll once an hour
    await a.start()  # returns once listening
    await b.start()
    try:
        await a.force("data", Forced.OPEN)
        for _ in range(100):  # a few loop turns, not an hour
            if b.breakers["data"].forced is Forced.OPEN:
                break
            await asyncio.sleep(0)
        assert b.breakers["data"].forced is Forced.OPEN
    finally:
        await a.close()
        await b.close()


class LosingCancelBoard(MemoryBreakerBoard):
    """Its watch loses the first cancel, as redis-py's reads can on Python 3.11 (a cancel
    landing as an `asyncio.wait_for` completes), and goes on reading in bounded polls."""

    def __init__(self) -> None:
        super().__init__()
        self.cancels_lost = 0

    async def watch(
        self, on_change: Callable[[], None], ready: asyncio.Event | None = None
    ) -> None:
        if ready is not None:
            ready.set()
        while True:
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                if self.cancels_lost:
                    raise
                self.cancels_lost += 1
                asyncio.current_task().uncancel()  # type: ignore[union-attr]


async def test_close_ends_a_watch_that_lost_its_cancel(clock: FakeClock) -> None:
    """close() cancels the board watch until it has ended, not once (it hung for good)."""
    board = LosingCancelBoard()
    sync = replica("a", board, clock)
    await sync.start()
    closing = asyncio.create_task(sync.close())
    # A hang guard, far above the 0.5 s re-cancel; wait() does not cancel close() itself.
    done, _ = await asyncio.wait([closing], timeout=30)
    if not done:
        closing.cancel()  # its second cancel reaches the watch and ends it
        await asyncio.wait([closing])
    assert done, "close() waited on a watch that lost its cancel"
    assert board.cancels_lost == 1
