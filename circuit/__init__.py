"""Resilience for agent calls: one asyncio-safe circuit breaker per agent and the retry policy.

Imports nothing of ours; `agents/` builds on it.
"""

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
from circuit.errors import CircuitError, CircuitOpenError
from circuit.retry import RetryBudget, backoff_delay, call_with_retry, parse_retry_after

__all__ = [
    "AsyncCircuitBreaker",
    "BreakerConfig",
    "BreakerSnapshot",
    "BreakerState",
    "CircuitError",
    "CircuitOpenError",
    "Forced",
    "Outcome",
    "RetryBudget",
    "RetryBudgetConfig",
    "RetryConfig",
    "StateChangeCallback",
    "backoff_delay",
    "call_with_retry",
    "open_wait_s",
    "parse_retry_after",
]
