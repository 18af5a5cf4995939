"""What the agent client counts and tells, for metrics, progress events and traces.

`AgentStats` are plain per-agent counters the client keeps on its own path (an
integer add each); the Prometheus collector reads them at scrape time, so a call
costs nothing more when nobody scrapes.

`retry_listener` is a context variable a workflow sets once where its work starts
(the lifecycle); every agent call made in that context, in any node task it spawns,
reports its retries to it (step progress events). Unset, a retry costs one
`ContextVar.get`.

`log_node` and `log_attempt` are what every log line inside a node carries (merged
into it by `orchestrator.logs.merge_node_context`): the DAG engine sets the node and
its agent for each node; the client sets the attempt it makes, paired with the node it
is made in (the `log_node` value, None outside any node). A line takes the attempt
only when its pair's node is the line's own: a node that has made none yet says
attempt 0, and an attempt of an earlier node (a chain's nodes run one after the other
in one task) never leaks into the next one's lines, with no reset of `log_attempt`
per node. Two context variables of our own, set on the hot path, where binding the
same three keys through `structlog.contextvars` (a ContextVar, an f-string and a token
each, bound then reset) cost ~7 us a node.
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

# (node id, its agent or None): the node the current line is about. A tuple of its own
# per node run: `log_attempt` tells nodes apart by its identity.
LogNode = tuple[str, str | None]
log_node: ContextVar[LogNode | None] = ContextVar("log_node", default=None)
# (the `log_node` value it was made under, the number of the agent attempt): the attempt
# the current line is about, when that node is still the line's own.
log_attempt: ContextVar[tuple[LogNode | None, int] | None] = ContextVar(
    "log_attempt", default=None
)


def attempt_of(node: LogNode | None) -> int | None:
    """The attempt a line logged in `node` (None: outside any node) is about: the
    client's latest one made in it; 0 in a node that has made none; None outside one."""
    attempt = log_attempt.get()
    if attempt is not None and attempt[0] is node:
        return attempt[1]
    return None if node is None else 0
