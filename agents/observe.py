"""What the agent client counts and tells, for metrics, progress events and traces.

`AgentStats` are plain per-agent counters the client keeps on its own path (an
integer add each); the Prometheus collector reads them at scrape time, so a call
costs nothing more when nobody scrapes.

`retry_listener` is a context variable a workflow sets once where its work starts
(the lifecycle); every agent call made in that context, in any node task it spawns,
reports its retries to it (step progress events). Unset, a retry costs one
`ContextVar.get`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field


@dataclass(slots=True)
class AgentStats:
    """Counters for one agent since the client started.

    `outcomes` counts finished calls by outcome ("success" or the error code);
    `attempts` every request sent; `retries` every retry scheduled; `budget_refusals`
    retries the retry budget refused; `bulkhead_waits` / `bulkhead_wait_s` calls that
    found the bulkhead full and how long they waited in all; `in_flight` requests in
    the bulkhead now; `transitions` breaker state changes by (old, new).
    """

    outcomes: Counter[str] = field(default_factory=Counter)
    attempts: int = 0
    retries: int = 0
    budget_refusals: int = 0
    bulkhead_waits: int = 0
    bulkhead_wait_s: float = 0.0
    in_flight: int = 0
    transitions: Counter[tuple[str, str]] = field(default_factory=Counter)


# (agent, node_id, next attempt, delay_s, error code) -> None
RetryListener = Callable[[str, str, int, float, str], None]

retry_listener: ContextVar[RetryListener | None] = ContextVar("retry_listener", default=None)
