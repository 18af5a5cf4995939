"""MeteredStore: every state-store operation timed, failures counted, behaviour unchanged."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from orchestrator.metered_store import MeteredStore
from orchestrator.metrics import StoreMetrics
from state.memory import MemoryStateStore
from state.models import WorkflowState
from state.store import StateStoreError


class BrokenStore(MemoryStateStore):
    """A memory store whose `get` fails as an unreachable backend would."""

    async def get(self, workflow_id: str) -> WorkflowState | None:
        raise StateStoreError("down", backend="memory", operation="get", workflow_id=workflow_id)


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def test_operations_are_timed_and_failures_counted() -> None:
    """Saves and event appends are observed by operation; a failing get counts an error."""
    registry = CollectorRegistry()
    inner = BrokenStore()
    store = MeteredStore(inner, StoreMetrics(registry))
    state = WorkflowState(workflow_id="w1", definition_name="chain")
    assert await store.save(state) is True
    assert await store.append_event("w1", {"type": "x"}) == 1
    assert await store.events_since("w1") == [(1, {"type": "x"})]
    with pytest.raises(StateStoreError):
        await store.get("w1")
    assert await store.ping() is True

    count = "orch_state_store_operation_seconds_count"
    errors = "orch_state_store_errors_total"
    assert sample(registry, count, backend="memory", operation="save") == 1
    assert sample(registry, count, backend="memory", operation="append_event") == 1
    assert sample(registry, count, backend="memory", operation="get") == 1
    assert sample(registry, errors, backend="memory", operation="get") == 1
    assert sample(registry, errors, backend="memory", operation="save") == 0
    assert store.backend == "memory" and store.ttl_s == inner.ttl_s
    await store.close()
    assert await store.ping() is False
    assert sample(registry, errors, backend="memory", operation="ping") == 1


class SuspendingStore(MemoryStateStore):
    @property
    def completes_in_turn(self) -> bool:
        return False


async def test_metering_keeps_the_inner_stores_completes_in_turn() -> None:
    """Timing adds no await: a metered in-process store still completes in its caller's
    turn (its accept, driven one step, is done), and a suspending one still says so."""
    registry = CollectorRegistry()
    metered = MeteredStore(MemoryStateStore(), StoreMetrics(registry))
    assert metered.completes_in_turn is True
    accepting = metered.accept(WorkflowState(workflow_id="w1", definition_name="chain"))
    with pytest.raises(StopIteration):
        accepting.send(None)
    assert await metered.get("w1") is not None
    other = MeteredStore(SuspendingStore(), StoreMetrics(CollectorRegistry()))
    assert other.completes_in_turn is False
