"""The breaker board: where replicas publish their breakers and ops modes are kept.

Contract (tests/circuit/test_board_contract.py runs one suite against both
implementations, the in-process `MemoryBreakerBoard` and `RedisBreakerBoard`):

- `publish(replica, breakers)` stores that replica's report (agent -> summary, a
  JSON-able mapping); `reports()` returns the reports of every replica that
  published within `report_ttl_s`, so a replica that died drops out by itself.
  `withdraw(replica)` removes one at once (clean shutdown).
- `set_forced(agent, mode, by=...)` records an ops mode (`Forced.OPEN` or
  `Forced.DISABLED`) for an agent, or clears it with None; `forced()` returns
  every recorded mode. Modes outlive the replicas that set them (a restarted
  replica picks them up) until cleared.
- clearing (None) also counts a reset for the agent: `resets()` returns each
  agent's count, so every replica closes its breaker once per ops `reset` /
  `enable`, even one that had opened by itself with no mode recorded.
- `watch(on_change)` calls `on_change()` soon after any replica records or clears a
  mode, until cancelled, so replicas need not wait for their next poll; it may end
  with `BreakerBoardError` when the backend fails (the poll still covers it).
- Backend failures surface as `BreakerBoardError`; nothing here is ever awaited on
  an agent call's path (see `circuit.sharing.BreakerSync`).

With the memory board the deployment is this one process, so the view is itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from circuit.breaker import Forced

__all__ = [
    "BreakerBoard",
    "ForcedMode",
    "MemoryBreakerBoard",
    "ReplicaReport",
    "check_ops_mode",
]

# Modes an ops action may record; FOLLOW is a replica's own decision and never stored.
OPS_MODES = (Forced.OPEN, Forced.DISABLED)


@dataclass(frozen=True, slots=True)
class ReplicaReport:
    """One replica's breakers as it last published them (`at`: its epoch seconds)."""

    replica: str
    at: float
    breakers: Mapping[str, Mapping[str, Any]]


@dataclass(frozen=True, slots=True)
class ForcedMode:
    """An ops mode in force for an agent: which, since when (epoch s), set by which replica."""

    mode: Forced
    at: float
    by: str

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode.value, "at": self.at, "by": self.by}


class BreakerBoard(Protocol):
    @property
    def backend(self) -> str:
        """"memory" or "redis", for logs and the status endpoint."""
        ...

    async def publish(self, replica: str, breakers: Mapping[str, Mapping[str, Any]]) -> None: ...

    async def reports(self) -> list[ReplicaReport]:
        """Reports of the replicas that published within the report TTL, by replica id."""
        ...

    async def withdraw(self, replica: str) -> None: ...

    async def set_forced(self, agent: str, mode: Forced | None, *, by: str) -> None:
        """Record `mode` (OPEN or DISABLED) for `agent`, or clear it with None."""
        ...

    async def forced(self) -> dict[str, ForcedMode]: ...

    async def resets(self) -> dict[str, int]:
        """How many times each agent's mode was cleared (ops reset / enable) so far."""
        ...

    async def watch(
        self, on_change: Callable[[], None], ready: asyncio.Event | None = None
    ) -> None:
        """Call `on_change()` after every mode change anywhere; runs until cancelled.

        Sets `ready` once listening (changes from then on are heard).
        """
        ...

    async def close(self) -> None: ...


class MemoryBreakerBoard:
    """The board of a one-process deployment. `clock` (epoch seconds) ages the reports."""

    def __init__(
        self, *, report_ttl_s: float = 5.0, clock: Callable[[], float] = time.time
    ) -> None:
        self._ttl_s = report_ttl_s
        self._clock = clock
        self._reports: dict[str, ReplicaReport] = {}
        self._forced: dict[str, ForcedMode] = {}
        self._resets: dict[str, int] = {}
        self._watchers: set[Callable[[], None]] = set()

    @property
    def backend(self) -> str:
        return "memory"

    async def publish(self, replica: str, breakers: Mapping[str, Mapping[str, Any]]) -> None:
        self._reports[replica] = ReplicaReport(replica, self._clock(), dict(breakers))

    async def reports(self) -> list[ReplicaReport]:
        oldest = self._clock() - self._ttl_s
        for replica in [r for r, report in self._reports.items() if report.at <= oldest]:
            del self._reports[replica]
        return sorted(self._reports.values(), key=lambda report: report.replica)

    async def withdraw(self, replica: str) -> None:
        self._reports.pop(replica, None)

    async def set_forced(self, agent: str, mode: Forced | None, *, by: str) -> None:
        check_ops_mode(mode)
        if mode is None:
            self._forced.pop(agent, None)
            self._resets[agent] = self._resets.get(agent, 0) + 1
        else:
            self._forced[agent] = ForcedMode(mode, self._clock(), by)
        for on_change in list(self._watchers):
            on_change()

    async def forced(self) -> dict[str, ForcedMode]:
        return dict(self._forced)

    async def resets(self) -> dict[str, int]:
        return dict(self._resets)

    async def watch(
        self, on_change: Callable[[], None], ready: asyncio.Event | None = None
    ) -> None:
        self._watchers.add(on_change)
        if ready is not None:
            ready.set()
        try:
            await asyncio.Future()  # until cancelled
        finally:
            self._watchers.discard(on_change)

    async def close(self) -> None:
        return None


def check_ops_mode(mode: Forced | None) -> None:
    """Only ops modes are recorded on a board; FOLLOW is each replica's own business."""
    if mode is not None and mode not in OPS_MODES:
        raise ValueError(f"only {[m.value for m in OPS_MODES]} can be recorded, got {mode!r}")
