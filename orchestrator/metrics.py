"""Prometheus metrics of one application, and the JSON summary built from the same numbers.

Every app owns a `CollectorRegistry` (never the process-global one), so tests and
several apps in one process stay apart. Three sources feed it:

- `WorkflowMetrics`: workflows started / finished / running and their durations,
  step durations, fallbacks. Recorded by the lifecycle when a workflow starts and
  ends (never per transition).
- `AgentCollector`: agent calls by outcome, attempts, retries, retry-budget
  refusals, breaker state / transitions / rejections, bulkhead waits and in-flight
  calls. Read from the client's own counters at scrape time, so an agent call pays
  nothing for it.
- `StoreMetrics` (filled by `orchestrator.metered_store.MeteredStore`): latency and
  errors of every state-store operation.

Histograms are `orchestrator.histograms.LoopHistogram`s, and the per-workflow counters
`orchestrator.counters.LoopCounter`s: the same exposition as prometheus_client's,
without a lock per observation (everything observes on the event loop).

Label values stay bounded whatever clients send: a definition name is a label only
if it is the built-in chain or listed in `ORCH_METRICS_DEFINITIONS` (else "(other)");
step ids only under such a definition, at most `ORCH_METRICS_MAX_STEPS` distinct ids
each and `ORCH_MAX_METRIC_SERIES` in all (the rest "(other)"). Agent names, statuses
and error codes are fixed sets.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from orchestrator.counters import LoopCounter
from orchestrator.histograms import HistogramChild, LoopHistogram
from state.models import NodeStatus, WorkflowState, WorkflowStatus

if TYPE_CHECKING:
    from agents.client import AgentClient

# Parenthesised so that it can never be a real definition or step name.
OTHER = "(other)"
DEFAULT_MAX_NODE_LABELS = 50
DEFAULT_MAX_SERIES = 500
# Built-in definitions whose names are always labels (the chain, orchestrator/chain.py).
BUILTIN_DEFINITIONS = ("chain",)

# Workflows run from milliseconds (reference agents) to minutes (real models, retries).
_WORKFLOW_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_NODE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_STORE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1)

# Label children remembered by the raw names they were looked up with (a lookup in
# prometheus_client takes a lock and checks every label: it cost more than the count).
# Capped: client-chosen names are unbounded even where the labels they map to are not.
_MAX_CACHED_CHILDREN = 4096

_FINISHED = (
    WorkflowStatus.COMPLETED,
    WorkflowStatus.DEGRADED,
    WorkflowStatus.FAILED,
    WorkflowStatus.CANCELLED,
)


class LabelCap:
    """Maps client-chosen names onto a bounded label set."""

    def __init__(self, definitions: Iterable[str] = (), *, max_nodes: int, max_series: int) -> None:
        self.definitions = frozenset((*BUILTIN_DEFINITIONS, *definitions))
        self.max_nodes = max_nodes
        self.max_series = max_series
        self._nodes: dict[str, set[str]] = {}
        self._total = 0

    def definition(self, name: str) -> str:
        return name if name in self.definitions else OTHER

    def node(self, definition_label: str, node_id: str) -> str:
        if definition_label == OTHER:
            return OTHER
        seen = self._nodes.setdefault(definition_label, set())
        if node_id in seen:
            return node_id
        if len(seen) < self.max_nodes and self._total < self.max_series:
            seen.add(node_id)
            self._total += 1
            return node_id
        return OTHER


class WorkflowMetrics:
    """Workflow and step series in `registry` (a fresh one when not given)."""

    def __init__(
        self,
        *,
        registry: CollectorRegistry | None = None,
        definitions: Iterable[str] = (),
        max_node_labels: int = DEFAULT_MAX_NODE_LABELS,
        max_series: int = DEFAULT_MAX_SERIES,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.labels = LabelCap(definitions, max_nodes=max_node_labels, max_series=max_series)
        r = self.registry
        # Counted twice a workflow: loop counters (no lock per increment).
        self.started = LoopCounter(
            "orch_workflows_started", "Workflows started (or resumed)", ["definition"], registry=r
        )
        self.finished = LoopCounter(
            "orch_workflows_finished",
            "Workflows that reached a terminal status",
            ["definition", "status"],
            registry=r,
        )
        self.running = Gauge(
            "orch_workflows_running", "Workflows running on this replica", registry=r
        )
        self.duration = LoopHistogram(
            "orch_workflow_duration_seconds",
            "Workflow duration, submit to terminal status",
            ["definition", "status"],
            buckets=_WORKFLOW_BUCKETS,
            registry=r,
        )
        self.node_duration = LoopHistogram(
            "orch_step_duration_seconds",
            "Step duration, start to finish (retries and fallback included)",
            ["definition", "step", "status"],
            buckets=_NODE_BUCKETS,
            registry=r,
        )
        self.fallbacks = Counter(
            "orch_step_fallbacks",
            "Steps that completed through their fallback",
            ["definition", "step"],
            registry=r,
        )
        self._started_children: dict[str, Any] = {}
        # (definition name, status) -> (finished counter, duration histogram)
        self._workflow_children: dict[tuple[str, WorkflowStatus], tuple[Any, HistogramChild]] = {}
        # (definition name, step id, status) -> (its duration histogram, its two labels)
        self._node_children: dict[
            tuple[str, str, NodeStatus], tuple[HistogramChild, str, str]
        ] = {}

    def track_running(self, count: Callable[[], int]) -> None:
        """Read the running gauge from the lifecycle at scrape time: a workflow handed off or
        fenced (it never "finishes" here) then leaves it, which counting could miss."""
        self.running.set_function(count)

    def record_started(self, state: WorkflowState) -> None:
        name = state.definition_name
        child = self._started_children.get(name)
        if child is None:
            child = self.started.labels(self.labels.definition(name))
            _remember(self._started_children, name, child)
        child.inc()

    def record_finished(self, state: WorkflowState) -> None:
        name = state.definition_name
        key = (name, state.status)
        children = self._workflow_children.get(key)
        if children is None:
            definition, status = self.labels.definition(name), state.status.value
            children = (
                self.finished.labels(definition, status),
                self.duration.labels(definition, status),
            )
            _remember(self._workflow_children, key, children)
        children[0].inc()
        if state.finished_at is not None:
            took = state.finished_at - state.created_at
            # (Not max(took, 0.0): a builtin call per workflow and per node.)
            children[1].observe(took if took > 0.0 else 0.0)
        nodes = self._node_children
        for run in state.steps.values():
            if run.started_at is None or run.finished_at is None:
                continue
            node_key = (name, run.step_id, run.status)
            node = nodes.get(node_key)
            if node is None:
                node = self._node_series(name, run.step_id, run.status)
                _remember(nodes, node_key, node)
            took = run.finished_at - run.started_at
            node[0].observe(took if took > 0.0 else 0.0)
            if run.fallback is not None:  # looked up only now: a lookup makes the series
                self.fallbacks.labels(node[1], node[2]).inc()

    def _node_series(
        self, name: str, step_id: str, status: NodeStatus
    ) -> tuple[HistogramChild, str, str]:
        # A step id keeps the label it was first given (LabelCap's sets only grow).
        definition = self.labels.definition(name)
        label = self.labels.node(definition, step_id)
        return self.node_duration.labels(definition, label, status.value), definition, label

    def snapshot(self) -> dict[str, Any]:
        """The JSON summary (GET /api/workflow/metrics), read back from the series above."""
        by_status = {s.value: 0 for s in _FINISHED}
        for labels, value in _samples(self.finished, "_total"):
            by_status[labels["status"]] = by_status.get(labels["status"], 0) + int(value)
        started = int(sum(v for _, v in _samples(self.started, "_total")))
        finished = sum(by_status.values())
        answered = by_status["completed"] + by_status["degraded"]
        steps: dict[str, dict[str, Any]] = {}
        for (definition, node), per_status in _histograms(self.node_duration, "step").items():
            completed = per_status.get(NodeStatus.COMPLETED.value)
            # Every step of a client-invented definition is counted under one key.
            key = OTHER if definition == OTHER else f"{definition}.{node}"
            steps[key] = {
                "statuses": {status: h.count for status, h in sorted(per_status.items())},
                **_summary(completed),
            }
        return {
            "workflows": {
                "started": started,
                "finished": finished,
                "in_flight": int(sum(v for _, v in _samples(self.running, "running"))),
                "by_status": by_status,
                # Degraded answers still answered the user: they count as successes.
                "success_rate": round(answered / finished, 4) if finished else None,
                "duration_ms": _summary(_merged(self.duration)),
            },
            "steps": dict(sorted(steps.items())),
            "fallbacks": int(sum(v for _, v in _samples(self.fallbacks, "_total"))),
        }


def _remember(cache: dict[Any, Any], key: Any, children: Any) -> None:
    if len(cache) < _MAX_CACHED_CHILDREN:
        cache[key] = children


class StoreMetrics:
    """State-store operation latency and errors, by backend and operation."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.latency = LoopHistogram(
            "orch_state_store_operation_seconds",
            "State-store operation latency",
            ["backend", "operation"],
            buckets=_STORE_BUCKETS,
            registry=registry,
        )
        self.errors = Counter(
            "orch_state_store_errors",
            "State-store operations that failed",
            ["backend", "operation"],
            registry=registry,
        )


class AgentCollector(Collector):
    """Agent, breaker and bulkhead series read from an `AgentClient` at scrape time."""

    def __init__(self, client: AgentClient) -> None:
        self._client = client

    def collect(self) -> Iterator[Metric]:
        client = self._client
        calls = CounterMetricFamily(
            "orch_agent_calls",
            "Agent calls by outcome (success or error code)",
            labels=["agent", "outcome"],
        )
        attempts = CounterMetricFamily(
            "orch_agent_attempts",
            "Requests sent to the agent (first attempts and retries)",
            labels=["agent"],
        )
        retries = CounterMetricFamily("orch_agent_retries", "Retries scheduled", labels=["agent"])
        refusals = CounterMetricFamily(
            "orch_agent_retry_budget_refusals",
            "Retries the retry budget refused",
            labels=["agent"],
        )
        state = GaugeMetricFamily(
            "orch_circuit_breaker_state",
            "1 for the breaker's current state, else 0",
            labels=["agent", "state"],
        )
        transitions = CounterMetricFamily(
            "orch_circuit_breaker_transitions",
            "Breaker state changes",
            labels=["agent", "from_state", "to_state"],
        )
        rejections = CounterMetricFamily(
            "orch_circuit_breaker_rejections",
            "Calls refused by an open (or busy half-open) breaker",
            labels=["agent"],
        )
        failures = CounterMetricFamily(
            "orch_circuit_breaker_failures",
            "Attempts the breaker recorded as failures",
            labels=["agent"],
        )
        waits = CounterMetricFamily(
            "orch_bulkhead_waits",
            "Attempts that found the agent's bulkhead full",
            labels=["agent"],
        )
        wait_s = CounterMetricFamily(
            "orch_bulkhead_wait_seconds",
            "Time spent waiting for a bulkhead slot",
            labels=["agent"],
        )
        in_flight = GaugeMetricFamily(
            "orch_agent_in_flight", "Requests to the agent in flight now", labels=["agent"]
        )
        limit = GaugeMetricFamily(
            "orch_bulkhead_limit", "The agent's concurrency limit", labels=["agent"]
        )
        for name, breaker in client.breakers().items():
            stats = client.stats(name)
            snap = breaker.snapshot()
            for outcome, count in sorted(stats.outcomes.items()):
                calls.add_metric([name, outcome], count)
            attempts.add_metric([name], stats.attempts)
            retries.add_metric([name], stats.retries)
            refusals.add_metric([name], stats.budget_refusals)
            for value in ("closed", "half_open", "open"):
                state.add_metric([name, value], 1.0 if snap.state.value == value else 0.0)
            for (old, new), count in sorted(stats.transitions.items()):
                transitions.add_metric([name, old, new], count)
            rejections.add_metric([name], snap.rejections)
            failures.add_metric([name], snap.failures)
            waits.add_metric([name], stats.bulkhead_waits)
            wait_s.add_metric([name], stats.bulkhead_wait_s)
            in_flight.add_metric([name], stats.in_flight)
            limit.add_metric([name], client.registry[name].concurrency)
        yield from (calls, attempts, retries, refusals, state, transitions, rejections, failures)
        yield from (waits, wait_s, in_flight, limit)


# -- reading series back for the JSON summary ---------------------------------------------


class _Hist:
    __slots__ = ("buckets", "count", "sum")

    def __init__(self) -> None:
        self.buckets: dict[float, float] = {}
        self.count = 0
        self.sum = 0.0

    def add(self, other: _Hist) -> None:
        for bound, n in other.buckets.items():
            self.buckets[bound] = self.buckets.get(bound, 0.0) + n
        self.count += other.count
        self.sum += other.sum


def _samples(
    metric: Counter | Gauge | LoopCounter, suffix: str
) -> Iterator[tuple[Mapping[str, str], float]]:
    for family in metric.collect():
        for sample in family.samples:
            if sample.name.endswith(suffix):
                yield sample.labels, sample.value


def _histograms(metric: LoopHistogram, key_label: str) -> dict[tuple[str, str], dict[str, _Hist]]:
    """{(definition, key): {status: histogram}} from a histogram's samples."""
    out: dict[tuple[str, str], dict[str, _Hist]] = {}
    for family in metric.collect():
        for sample in family.samples:
            labels = sample.labels
            key = (labels["definition"], labels[key_label])
            hist = out.setdefault(key, {}).setdefault(labels["status"], _Hist())
            if sample.name.endswith("_bucket"):
                hist.buckets[float(labels["le"])] = sample.value
            elif sample.name.endswith("_count"):
                hist.count = int(sample.value)
            elif sample.name.endswith("_sum"):
                hist.sum = sample.value
    return out


def _merged(metric: LoopHistogram) -> _Hist:
    total = _Hist()
    for family in metric.collect():
        per_series: dict[tuple[tuple[str, str], ...], _Hist] = {}
        for sample in family.samples:
            key = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "le"))
            hist = per_series.setdefault(key, _Hist())
            if sample.name.endswith("_bucket"):
                hist.buckets[float(sample.labels["le"])] = sample.value
            elif sample.name.endswith("_count"):
                hist.count = int(sample.value)
            elif sample.name.endswith("_sum"):
                hist.sum = sample.value
        for hist in per_series.values():
            total.add(hist)
    return total


def quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """Prometheus' `histogram_quantile`: linear interpolation inside the bucket."""
    bounds: Sequence[tuple[float, float]] = sorted(buckets.items())
    if not bounds or bounds[-1][1] == 0:
        return None
    rank = q * bounds[-1][1]
    lower, below = 0.0, 0.0
    for bound, cumulative in bounds:
        if cumulative >= rank:
            if math.isinf(bound):
                return lower  # above the top bucket: its lower edge is all we know
            in_bucket = cumulative - below
            if in_bucket == 0:
                return bound
            return lower + (bound - lower) * (rank - below) / in_bucket
        lower, below = bound, cumulative
    return lower


def _summary(hist: _Hist | None) -> dict[str, Any]:
    if hist is None or hist.count == 0:
        return {"count": 0, "avg_ms": None, "p95_ms": None}
    p95 = quantile(0.95, hist.buckets)
    return {
        "count": hist.count,
        "avg_ms": round(hist.sum / hist.count * 1000.0, 3),
        "p95_ms": None if p95 is None else round(p95 * 1000.0, 3),
    }
