"""The BreakerBoard contract, run against the memory board and a real Redis."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from circuit import Forced
from circuit.board import BreakerBoard, MemoryBreakerBoard
from circuit.board_redis import RedisBreakerBoard
from circuit.errors import BreakerBoardError
from state.connect import connect

BoardFactory = Callable[..., BreakerBoard]

# Each board command's bound. Generous: it only turns a Redis that never answers into a
# failure, and a loaded machine (a Cluster's first command loads its slot table from
# three nodes) once took longer than the 1 s used before. How fast a board answers is
# bench/breaker_soak.py's question, not this suite's.
COMMAND_TIMEOUT_S = 15.0


@pytest.fixture(
    params=[
        "memory",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("cluster", marks=pytest.mark.redis),
    ]
)
async def make_board(request: pytest.FixtureRequest) -> AsyncIterator[BoardFactory]:
    """Boards of one kind sharing one namespace (a fresh key prefix on the test Redis)."""
    boards: list[BreakerBoard] = []
    if request.param == "memory":
        shared: dict[str, MemoryBreakerBoard] = {}

        def make_memory(**kwargs: Any) -> BreakerBoard:
            # One process: every "replica" holds the same board object.
            return shared.setdefault("board", MemoryBreakerBoard(**kwargs))

        yield make_memory
        return
    if request.param == "cluster":
        # The board on a Redis Cluster: its own client, the test's keys deleted by the fixture.
        cluster_url: str = request.getfixturevalue("redis_cluster_url")
        cluster_prefix: str = request.getfixturevalue("redis_cluster_prefix")
        clients = []

        def make_cluster(**kwargs: Any) -> BreakerBoard:
            client = connect(cluster_url)
            clients.append(client)
            kwargs.setdefault("timeout_s", COMMAND_TIMEOUT_S)
            board = RedisBreakerBoard(client, prefix=cluster_prefix, **kwargs)
            boards.append(board)
            return board

        yield make_cluster
        for board in boards:
            await board.close()
        for client in clients:
            await client.aclose()
        return
    url: str = request.getfixturevalue("redis_url")
    prefix = f"test:{uuid.uuid4().hex[:8]}:"

    def make_redis(**kwargs: Any) -> BreakerBoard:
        kwargs.setdefault("timeout_s", COMMAND_TIMEOUT_S)
        board = RedisBreakerBoard.from_url(url, prefix=prefix, **kwargs)
        boards.append(board)
        return board

    yield make_redis
    for board in boards:
        await board.close()
    client = aioredis.Redis.from_url(url)
    try:  # remove only this test's keys: never flush a Redis another run may share
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


async def test_reports_of_every_replica_are_read_back(make_board: BoardFactory) -> None:
    a, b = make_board(), make_board()
    await a.publish("a", {"data": {"state": "open", "window": {"calls": 3}}})
    await b.publish("b", {"data": {"state": "closed", "window": None}})
    reports = await b.reports()
    assert [r.replica for r in reports] == ["a", "b"]
    assert reports[0].breakers["data"] == {"state": "open", "window": {"calls": 3}}
    await a.publish("a", {"data": {"state": "closed", "window": None}})
    assert (await b.reports())[0].breakers["data"]["state"] == "closed"  # the latest one


async def test_withdraw_removes_a_replica_at_once(make_board: BoardFactory) -> None:
    a = make_board()
    await a.publish("a", {})
    await a.publish("b", {})
    await a.withdraw("a")
    assert [r.replica for r in await a.reports()] == ["b"]


async def test_a_replica_that_stops_publishing_drops_out(make_board: BoardFactory) -> None:
    """Reports expire after the report TTL: a dead replica leaves the view by itself."""
    board = make_board(report_ttl_s=0.2)
    await board.publish("gone", {})
    for _ in range(100):  # bounded: the TTL is 0.2 s
        if not await board.reports():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the report never expired")


async def test_forced_modes_are_shared_and_cleared(make_board: BoardFactory) -> None:
    a, b = make_board(), make_board()
    assert await b.forced() == {}
    await a.set_forced("data", Forced.OPEN, by="a")
    await a.set_forced("viz", Forced.DISABLED, by="a")
    seen = await b.forced()
    assert {agent: m.mode for agent, m in seen.items()} == {
        "data": Forced.OPEN,
        "viz": Forced.DISABLED,
    }
    assert seen["data"].by == "a"
    await b.set_forced("data", None, by="b")
    assert set(await a.forced()) == {"viz"}
    await b.set_forced("data", None, by="b")  # clearing twice is fine
    assert set(await a.forced()) == {"viz"}


async def test_clearing_a_mode_counts_a_reset(make_board: BoardFactory) -> None:
    """Every clear counts, whether or not a mode was recorded: replicas act on each once."""
    a, b = make_board(), make_board()
    assert await b.resets() == {}
    await a.set_forced("data", None, by="a")
    await a.set_forced("data", Forced.DISABLED, by="a")
    await b.set_forced("data", None, by="b")
    await b.set_forced("viz", None, by="b")
    assert await a.resets() == {"data": 2, "viz": 1}


async def test_forced_modes_outlive_the_board_that_set_them(make_board: BoardFactory) -> None:
    a = make_board()
    await a.set_forced("data", Forced.OPEN, by="a")
    await a.close()
    later = make_board()
    assert (await later.forced())["data"].mode is Forced.OPEN


async def test_only_ops_modes_are_recorded(make_board: BoardFactory) -> None:
    with pytest.raises(ValueError, match="follow"):
        await make_board().set_forced("data", Forced.FOLLOW, by="a")


async def test_an_unreachable_redis_is_a_board_error_within_the_timeout() -> None:
    """A dead Redis surfaces as BreakerBoardError, never as redis-py's own exceptions."""
    board = RedisBreakerBoard.from_url("redis://127.0.0.1:1/0", prefix="t:", timeout_s=0.5)
    try:
        for operation in (
            board.publish("a", {}),
            board.reports(),
            board.forced(),
            board.set_forced("data", Forced.OPEN, by="a"),
            board.resets(),
            board.withdraw("a"),
        ):
            with pytest.raises(BreakerBoardError) as caught:
                await operation
            assert caught.value.backend == "redis"
    finally:
        await board.close()


async def test_watchers_hear_of_every_mode_change(make_board: BoardFactory) -> None:
    """watch() calls back soon after any board records or clears a mode."""
    a, b = make_board(), make_board()
    heard, listening = asyncio.Event(), asyncio.Event()
    watcher = asyncio.create_task(b.watch(heard.set, listening))
    try:
        await listening.wait()
        for mode in (Forced.OPEN, None, Forced.DISABLED):
            heard.clear()
            await a.set_forced("data", mode, by="a")
            await heard.wait()  # bounded by the test timeout
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
