"""Resilience for agent calls: one asyncio-safe circuit breaker per agent and the retry policy.

Also the breaker board (memory, or Redis to share breakers across replicas) and the
publisher that keeps a replica's breakers in step with it. Imports nothing of ours;
`agents/` and `orchestrator/` build on it.
"""

from circuit.board import BreakerBoard, MemoryBreakerBoard
from circuit.board_redis import RedisBreakerBoard
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
