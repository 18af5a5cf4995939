"""Owner leases: a workflow's owner, per-replica liveness, and takeover of a dead replica's work.

Liveness is per *replica*, not per workflow: a replica beats one heartbeat entry
(`renew`), whatever it runs; the workflows it owns are listed under it. Only when
a replica's heartbeat lapses is its list examined — by one survivor, which
reserves the dead replica for a while (`orphans`), claims each workflow with
the dead owner as `previous`, then `bury`s it. Nothing grows with replicas x
running workflows: a heartbeat is one command, a reconcile one command while
nobody died.

Contract (both implementations, one suite in tests/state/test_leases.py):

- `claim(w, owner)` makes `owner` the owner of `w` if it has none (or its owner
  is `previous`, a replica `orphans` reported dead), bumps the workflow's lease
  generation, lists `w` under `owner` and keeps `owner`'s heartbeat alive; it
  returns the new generation, the fencing token every write of the document then
  carries (`StateStore.save(..., token=)`), or None when someone else owns it.
- `renew(held, owner)` is the heartbeat. It returns the workflows of `held` (id ->
  token) still `owner`'s: all of them, unless `owner` was declared dead since its
  last beat (or the backend lost its heartbeat) — then exactly those nobody took
  over (checked one by one, only then), and `owner` is alive again from this beat
  on. A workflow the backend lost entirely (a Redis restart without persistence)
  is taken back under the same token and listed again.
- `release(w, owner)` drops `owner`'s ownership of `w` (not a newer owner's).
- `orphans()` declares the replicas whose heartbeat lapsed dead, reserves them
  for the caller (for `lease_s`; another survivor takes over a reservation that
  lapses) and returns their listed workflows with the dead owner; `bury(dead)`
  drops a dead replica's list once its workflows were claimed or found finished
  (`orphans` buries a dead replica that owned nothing itself).

A heartbeat lives `lease_s` seconds; the lifecycle beats every `lease_s / 3`.
`RedisLeases` is in state/leases_redis.py (redis-py is loaded only where Redis is used).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from state import keys


@dataclass(frozen=True, slots=True)
class Orphan:
    workflow_id: str
    # The replica that owned it and stopped beating.
    owner: str


class LeaseStore(Protocol):
    async def claim(
        self, workflow_id: str, owner: str, *, lease_s: float, previous: str | None = None
    ) -> int | None:
        """Take ownership; the new generation (fencing token), or None if someone holds it."""
        ...

    async def renew(self, held: Mapping[str, int], owner: str, *, lease_s: float) -> set[str]:
        """Heartbeat of `owner`; returns the workflows of `held` (id -> token) still its own."""
        ...

    async def release(self, workflow_id: str, owner: str) -> None: ...

    async def orphans(self, *, lease_s: float = keys.DEFAULT_LEASE_S) -> list[Orphan]: ...

    async def bury(self, dead: str) -> None: ...


@dataclass(slots=True)
class _MemoryLease:
    generation: int = 0
    owner: str | None = None


@dataclass(slots=True)
class MemoryLeases:
    """Leases for the embedded store: one process, so they only guard against our own bugs.

    The memory store reads `generation()` to fence its saves.
    """

    clock: Callable[[], float] = time.monotonic
    _leases: dict[str, _MemoryLease] = field(default_factory=dict)
    _beats: dict[str, float] = field(default_factory=dict)  # replica -> deadline
    _dead: set[str] = field(default_factory=set)
    _reaping: dict[str, float] = field(default_factory=dict)
    _lists: dict[str, set[str]] = field(default_factory=dict)

    def generation(self, workflow_id: str) -> int | None:
        """The current fencing token of `workflow_id` (None: never claimed)."""
        lease = self._leases.get(workflow_id)
        return lease.generation if lease is not None else None

    def owner(self, workflow_id: str) -> str | None:
        lease = self._leases.get(workflow_id)
        return lease.owner if lease is not None else None

    def restore(self, workflow_id: str, token: int, owner: str | None) -> bool:
        """For the store's save: nothing of the workflow is left, so `token` is current again."""
        if workflow_id in self._leases:
            return False
        self._leases[workflow_id] = _MemoryLease(token, owner)
        return True

    def forget(self, workflow_id: str) -> None:
        """The workflow's document expired: its generation goes with it."""
        self._leases.pop(workflow_id, None)

    async def claim(
        self, workflow_id: str, owner: str, *, lease_s: float, previous: str | None = None
    ) -> int | None:
        lease = self._leases.setdefault(workflow_id, _MemoryLease())
        if lease.owner is not None and lease.owner != previous:
            return None
        lease.generation += 1
        lease.owner = owner
        self._lists.setdefault(owner, set()).add(workflow_id)
        if owner not in self._dead:
            self._beats[owner] = max(self._beats.get(owner, 0.0), self.clock() + lease_s)
        return lease.generation

    async def renew(self, held: Mapping[str, int], owner: str, *, lease_s: float) -> set[str]:
        if owner in self._dead or owner not in self._beats:
            kept = set()
            for wid, token in held.items():
                lease = self._leases.get(wid)
                if lease is None:  # everything was lost: take it back
                    lease = self._leases[wid] = _MemoryLease(token, owner)
                    self._lists.setdefault(owner, set()).add(wid)
                if lease.owner == owner and lease.generation == token:
                    kept.add(wid)
            self._dead.discard(owner)
        else:
            kept = set(held)
        self._beats[owner] = self.clock() + lease_s
        return kept

    async def release(self, workflow_id: str, owner: str) -> None:
        lease = self._leases.get(workflow_id)
        if lease is not None and lease.owner == owner:
            lease.owner = None
        self._lists.get(owner, set()).discard(workflow_id)

    async def orphans(self, *, lease_s: float = keys.DEFAULT_LEASE_S) -> list[Orphan]:
        now = self.clock()
        for replica in [r for r, deadline in self._beats.items() if deadline <= now]:
            del self._beats[replica]
            self._dead.add(replica)
            self._reaping[replica] = 0.0
        mine = [r for r, until in self._reaping.items() if until <= now]
        for replica in mine:
            self._reaping[replica] = now + lease_s
            if not self._lists.get(replica):
                await self.bury(replica)  # it owned nothing: nothing to resume
        return [
            Orphan(wid, replica)
            for replica in sorted(mine)
            for wid in sorted(self._lists.get(replica, ()))
        ]

    async def bury(self, dead: str) -> None:
        self._reaping.pop(dead, None)
        self._lists.pop(dead, None)
