"""api/admission.py: which slots a submit holds, and that a submit no cap applies to holds none."""

from __future__ import annotations

import asyncio

import pytest

from orchestrator.access.config import AccessConfig
from orchestrator.access.principal import UNLIMITED, Limits, Principal, Role
from orchestrator.api.admission import Admission
from state.ratelimit import MemoryQuotas


class CountingQuotas(MemoryQuotas):
    """The memory quotas, counting what admission asks of them."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []
        self.released = asyncio.Event()

    async def acquire(self, pool: str, member: str, *, limit: int, ttl_s: float) -> bool:
        self.calls.append(f"acquire {pool}")
        return await super().acquire(pool, member, limit=limit, ttl_s=ttl_s)

    async def release(self, pool: str, member: str) -> None:
        self.calls.append(f"release {pool}")
        await super().release(pool, member)
        self.released.set()


def who(limits: Limits) -> Principal:
    return Principal(key_id="k1", tenant="t1", roles=frozenset({Role.USER}), limits=limits)


@pytest.mark.parametrize("is_async", [False, True])
async def test_no_cap_applies_so_nothing_is_held_or_released(is_async: bool) -> None:
    """An open service (no in-flight limit, no async cap): no quota is asked at all, and
    abandoning or finishing the workflow releases nothing."""
    quotas = CountingQuotas()
    admission = Admission(quotas, AccessConfig(max_async_workflows=0), state_ttl_s=60)
    ticket = await admission.admit(who(UNLIMITED), is_async=is_async, timeout_s=None)
    assert ticket.pool is None
    finished = asyncio.get_running_loop().create_future()
    admission.release_when(ticket, lambda: finished)
    await admission.abandon(ticket)
    assert quotas.calls == []
    await admission.close()


async def test_a_key_with_an_in_flight_limit_holds_its_slot_until_the_workflow_ends() -> None:
    """The same admit with a cap (what the fast path above skips): acquired, then
    released once the workflow is finished."""
    quotas = CountingQuotas()
    admission = Admission(quotas, AccessConfig(max_async_workflows=0), state_ttl_s=60)
    ticket = await admission.admit(who(Limits(max_in_flight=1)), is_async=False, timeout_s=5)
    assert ticket.pool == "inflight:k1"
    finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    admission.release_when(ticket, lambda: finished)
    finished.set_result(None)
    await quotas.released.wait()
    assert quotas.calls == ["acquire inflight:k1", "release inflight:k1"]
    await admission.close()
