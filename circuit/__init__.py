"""Resilience for agent calls: one asyncio-safe circuit breaker per agent and the retry policy.

Also the breaker board (memory, or Redis to share breakers across replicas) and the
publisher that keeps a replica's breakers in step with it. Imports nothing of ours;
`agents/` and `orchestrator/` build on it. `RedisBreakerBoard` is loaded when first
asked for (it needs redis-py, which a service on the memory store never loads).
"""

from typing import TYPE_CHECKING, Any

from circuit.board import BreakerBoard, MemoryBreakerBoard
from circuit.breaker import (
    AsyncCircuitBreaker,
    BreakerSnapshot,
    BreakerState,
    Forced,
    Outcome,
    StateChangeCallback,
    open_wait_s,
)
from circuit.config import BreakerConfig, RetryBudgetConfig, RetryConfig
from circuit.errors import BreakerBoardError, CircuitError, CircuitOpenError
from circuit.retry import RetryBudget, backoff_delay, call_with_retry, parse_retry_after
from circuit.sharing import BreakerSync
from circuit.window import SlidingWindow, WindowCounts

if TYPE_CHECKING:
    from circuit.board_redis import RedisBreakerBoard


def __getattr__(name: str) -> Any:
    if name == "RedisBreakerBoard":
        from circuit.board_redis import RedisBreakerBoard

        return RedisBreakerBoard
    raise AttributeError(f"module 'circuit' has no attribute {name!r}")


__all__ = [
    "AsyncCircuitBreaker",
    "BreakerBoard",
    "BreakerBoardError",
    "BreakerConfig",
    "BreakerSnapshot",
    "BreakerState",
    "BreakerSync",
    "CircuitError",
    "CircuitOpenError",
    "Forced",
    "MemoryBreakerBoard",
    "Outcome",
    "RedisBreakerBoard",
    "RetryBudget",
    "RetryBudgetConfig",
    "RetryConfig",
    "SlidingWindow",
    "StateChangeCallback",
    "WindowCounts",
    "backoff_delay",
    "call_with_retry",
    "open_wait_s",
    "parse_retry_after",
]
