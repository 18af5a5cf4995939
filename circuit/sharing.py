"""`BreakerSync`: one replica's breakers kept in step with the deployment, off the call path.

A background task, every `interval_s`, and at once when woken (by a local
transition, or by the board when any replica changes an ops mode):

1. reads the ops modes on the board and applies them to the local breakers (an
   ops `open` or `disable` set on any replica reaches this one within a cycle,
   and a replica that starts picks up the modes in force before it serves); a
   `reset` / `enable` made anywhere since the last cycle closes the local breaker,
   whatever opened it;
2. for agents with `share = "follow"`, holds the local breaker open while at least
   `follow_share` of the live replicas have opened it *themselves* (followers are
   not counted, so followers never keep each other open), and lets go when they
   close, so a dead agent is probed by the replicas that found it dead, not by all;
3. publishes this replica's breakers (state, mode, window counts, open wait).

Agent calls never wait for any of this: the breakers are plain in-memory objects
and the task only reads and sets them between its own awaits. A slow or
unreachable board delays the next cycle and is logged (once per outage); calls
go on with the last modes applied.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any

import structlog

from circuit.board import BreakerBoard, ForcedMode, ReplicaReport
from circuit.breaker import AsyncCircuitBreaker, BreakerSnapshot, BreakerState, Forced
from circuit.errors import BreakerBoardError

__all__ = ["BreakerSync", "summary"]

log = structlog.get_logger(__name__)

# Ops modes a board can hold; a local FOLLOW is never overwritten by their absence.
# How often a replica publishes its breakers and applies the deployment's ops modes
# (the settings model's default of ORCH_BREAKER_SYNC_S).
DEFAULT_SYNC_INTERVAL_S = 0.25

_OPS = (Forced.OPEN, Forced.DISABLED)


def summary(snap: BreakerSnapshot) -> dict[str, Any]:
    """What a replica publishes about one breaker."""
    return {
        "state": snap.state.value,
        "forced": None if snap.forced is None else snap.forced.value,
        "window": None if snap.window is None else snap.window.to_dict(),
        "open_wait_s": snap.open_wait_s,
        "backoff_level": snap.backoff_level,
        "opened_at": snap.opened_at,
        "half_open_at": snap.half_open_at,
        "calls": snap.calls,
        "failures": snap.failures,
        "rejections": snap.rejections,
        "trips": snap.trips,
    }


class BreakerSync:
    """Publishes `breakers` to `board` as `replica` and applies the deployment's modes."""

    def __init__(
        self,
        breakers: Mapping[str, AsyncCircuitBreaker],
        board: BreakerBoard,
        *,
        replica: str,
        interval_s: float = DEFAULT_SYNC_INTERVAL_S,
        start_timeout_s: float = 2.0,
    ) -> None:
        self.breakers = breakers
        self.board = board
        self.replica = replica
        self._interval_s = interval_s
        self._start_timeout_s = start_timeout_s
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        # Bumped by every local ops action, so a cycle that read the board before the
        # action does not undo it with what it read.
        self._version = 0
        self._board_ok = True
        self._stopping = False
        # Reset counts already acted on; None until the first cycle, which only records
        # them (a starting replica's breakers are fresh anyway).
        self._resets_seen: dict[str, int] | None = None
        self.cycles = 0
        for breaker in breakers.values():
            # Publish a transition at once rather than at the next tick. Setting an
            # event is all the call path pays.
            breaker.add_observer(self._on_transition)

    async def start(self) -> None:
        """Apply the modes in force (bounded wait; a dead board is retried later), then run."""
        try:
            async with asyncio.timeout(self._start_timeout_s):
                await self._cycle()
        except (BreakerBoardError, TimeoutError) as exc:
            self._board_failed(exc)
        self._task = asyncio.create_task(self._run(), name=f"breaker-sync:{self.replica}")
        listening = asyncio.Event()
        self._watcher = asyncio.create_task(
            self._watch(listening), name=f"breaker-watch:{self.replica}"
        )
        # Serve once listening, so no ops action after start-up waits for a poll; a
        # board that will not listen only costs the bounded wait.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._start_timeout_s):
                await listening.wait()

    def _on_transition(self, name: str, old: BreakerState, new: BreakerState) -> None:
        self._wake.set()

    async def refresh(self) -> None:
        """Run one cycle now and wait for it (raises `BreakerBoardError`)."""
        await self._cycle()

    def wake(self) -> None:
        """Run a cycle now rather than at the next tick (e.g. after a transition)."""
        self._wake.set()

    async def close(self) -> None:
        # The flag as well as the cancel: on Python 3.11 a cancel that lands as a board
        # call's timeout expires can come out as a TimeoutError, which the loop survives.
        self._stopping = True
        if self._watcher is not None:
            await _cancel_until_done(self._watcher)
            self._watcher = None
        if self._task is not None:
            self._wake.set()
            await _cancel_until_done(self._task)
            self._task = None
        try:
            async with asyncio.timeout(self._start_timeout_s):
                await self.board.withdraw(self.replica)
        except (BreakerBoardError, TimeoutError):
            pass  # its report expires on its own

    async def force(self, agent: str, mode: Forced | None) -> AsyncCircuitBreaker:
        """An ops action for every replica: record it on the board, then apply it here.

        Raises `BreakerBoardError` (nothing changed anywhere) when the board fails.
        """
        breaker = self.breakers[agent]
        await self.board.set_forced(agent, mode, by=self.replica)
        self._version += 1
        if mode is None:
            breaker.reset()  # lift any mode and close, whatever opened it
            if self._resets_seen is not None:  # done here: the next cycle must not redo it
                self._resets_seen[agent] = self._resets_seen.get(agent, 0) + 1
        else:
            breaker.set_forced(mode)
        self.wake()
        return breaker

    async def view(self) -> dict[str, Any]:
        """This replica's breakers, every live replica's, and an overall view per agent."""
        local = {name: b.snapshot() for name, b in self.breakers.items()}
        try:
            reports = await self.board.reports()
            forced = await self.board.forced()
            available = True
        except BreakerBoardError:
            reports, forced, available = [], {}, False
        per_replica: dict[str, Mapping[str, Mapping[str, Any]]] = {
            r.replica: r.breakers for r in reports
        }
        per_replica[self.replica] = {name: summary(snap) for name, snap in local.items()}
        agents = {}
        for name, snap in local.items():
            states = {
                replica: dict(breakers[name])
                for replica, breakers in sorted(per_replica.items())
                if name in breakers
            }
            agents[name] = {
                **snap.to_dict(),
                "replicas": states,
                "overall": _overall(states, forced.get(name)),
            }
        return {
            "replica": self.replica,
            "shared": {
                "backend": self.board.backend,
                "available": available,
                "replicas": sorted(per_replica),
            },
            "breakers": agents,
        }

    # -- the cycle ------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping:
            # A timer that sets the event rather than a timeout around the wait: nothing
            # here can turn a cancellation into a timeout.
            tick = loop.call_later(self._interval_s, self._wake.set)
            try:
                await self._wake.wait()
            finally:
                tick.cancel()
            self._wake.clear()
            if self._stopping:
                return
            try:
                await self._cycle()
            except BreakerBoardError as exc:
                self._board_failed(exc)
            except Exception:
                # A bug here must not end sharing for the life of the process.
                log.exception("breaker_sync_failed", replica=self.replica)

    async def _watch(self, listening: asyncio.Event) -> None:
        """Wake the cycle when any replica changes a mode; the poll covers any gap."""
        while not self._stopping:
            try:
                await self.board.watch(self.wake, listening)
            except BreakerBoardError:
                pass  # the cycle logs the outage; listen again after a pause
            except Exception:
                log.exception("breaker_watch_failed", replica=self.replica)
            listening.set()  # not listening, but start() need not wait any longer
            await asyncio.sleep(max(1.0, self._interval_s))

    async def _cycle(self) -> None:
        version = self._version
        resets = await self.board.resets()
        forced = await self.board.forced()
        if version == self._version:
            self._apply_resets(resets)
            self._apply_ops(forced)
        if any(b.config.share == "follow" for b in self.breakers.values()):
            self._apply_follow(await self.board.reports())
        await self.board.publish(
            self.replica, {name: summary(b.snapshot()) for name, b in self.breakers.items()}
        )
        self.cycles += 1
        if not self._board_ok:
            self._board_ok = True
            log.info("breaker_board_back", replica=self.replica)

    def _apply_resets(self, resets: Mapping[str, int]) -> None:
        seen, self._resets_seen = self._resets_seen, dict(resets)
        if seen is None:
            return
        for name, count in resets.items():
            breaker = self.breakers.get(name)
            if breaker is not None and count > seen.get(name, 0):
                log.warning("breaker_reset_by_ops", agent=name)
                breaker.reset()

    def _apply_ops(self, forced: Mapping[str, ForcedMode]) -> None:
        for name, breaker in self.breakers.items():
            entry = forced.get(name)
            if entry is not None:
                if breaker.forced is not entry.mode:
                    log.warning("breaker_forced", agent=name, mode=entry.mode.value, by=entry.by)
                breaker.set_forced(entry.mode)
            elif breaker.forced in _OPS:
                log.warning("breaker_forced", agent=name, mode=None)
                breaker.set_forced(None)  # lifted on another replica

    def _apply_follow(self, reports: list[ReplicaReport]) -> None:
        others = [r for r in reports if r.replica != self.replica]
        live = len(others) + 1
        for name, breaker in self.breakers.items():
            if breaker.config.share != "follow" or breaker.forced in _OPS:
                continue
            opened = sum(1 for r in others if _opened_itself(r.breakers.get(name)))
            follow = opened / live >= breaker.config.follow_share
            if follow and breaker.forced is None and breaker.state is BreakerState.CLOSED:
                log.warning("breaker_follows", agent=name, opened=opened, replicas=live)
                breaker.set_forced(Forced.FOLLOW)
            elif not follow and breaker.forced is Forced.FOLLOW:
                breaker.set_forced(None)

    def _board_failed(self, exc: BaseException) -> None:
        if self._board_ok:
            log.warning("breaker_board_unavailable", replica=self.replica, reason=str(exc))
        self._board_ok = False


def _opened_itself(entry: Mapping[str, Any] | None) -> bool:
    """Open or half-open on its own (or by ops), not because it follows the others."""
    if entry is None:
        return False
    return entry.get("state") in ("open", "half_open") and entry.get("forced") != "follow"


def _overall(states: Mapping[str, Mapping[str, Any]], forced: ForcedMode | None) -> dict[str, Any]:
    counts = {"open": 0, "half_open": 0, "closed": 0}
    calls = failures = slow = 0
    for entry in states.values():
        counts[str(entry.get("state"))] = counts.get(str(entry.get("state")), 0) + 1
        window = entry.get("window") or {}
        calls += int(window.get("calls", 0))
        failures += int(window.get("failures", 0))
        slow += int(window.get("slow", 0))
    if forced is not None:
        state = "open" if forced.mode is Forced.OPEN else "disabled"
    elif counts["closed"] == len(states):
        state = "closed"
    elif counts["open"] == len(states):
        state = "open"
    else:
        state = "partly_open"
    return {
        "state": state,
        "forced": None if forced is None else forced.to_dict(),
        "replicas": len(states),
        **counts,
        "window": {
            "calls": calls,
            "failures": failures,
            "slow": slow,
            "failure_rate": round(100.0 * failures / calls, 2) if calls else 0.0,
            "slow_rate": round(100.0 * slow / calls, 2) if calls else 0.0,
        },
    }


# How long close() waits for a task to end before cancelling it again.
_RECANCEL_S = 0.5


async def _cancel_until_done(task: asyncio.Task[None]) -> None:
    """Cancel `task` until it has ended (its outcome retrieved, nothing raised).

    One cancel is not always enough on Python 3.11: redis-py runs socket writes under
    `asyncio.wait_for`, which returns the write's result instead of raising when the
    cancel lands as the write completes (CPython gh-86296). The board's watch loop then
    went on reading and close() waited on it forever. A copy of state/tasks.py's
    `cancel_until_done` (circuit/ does not import state/).
    """
    while not task.done():
        task.cancel()
        # wait() rather than awaiting the task: a cancellation of *our* caller
        # still propagates, the task's own CancelledError does not.
        await asyncio.wait([task], timeout=_RECANCEL_S)
    if not task.cancelled():
        task.exception()  # retrieved: the loops log their own failures
