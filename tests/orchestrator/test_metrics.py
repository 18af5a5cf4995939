"""WorkflowMetrics: bounded labels whatever clients name things, and the JSON summary."""

from __future__ import annotations

import random
import uuid

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from orchestrator.metrics import OTHER, WorkflowMetrics, quantile
from state.models import NodeRun, NodeStatus, WorkflowState, WorkflowStatus


def finished_workflow(name: str, node_ids: list[str], rng: random.Random) -> WorkflowState:
    state = WorkflowState(workflow_id=uuid.uuid4().hex, definition_name=name, created_at=100.0)
    for node_id in node_ids:
        state.steps[node_id] = NodeRun(
            step_id=node_id,
            kind="agent",
            agent="data",
            status=rng.choice([NodeStatus.COMPLETED, NodeStatus.FAILED]),
            started_at=100.0,
            finished_at=100.0 + rng.random(),
        )
    state.status = rng.choice([WorkflowStatus.COMPLETED, WorkflowStatus.FAILED])
    state.finished_at = 101.0 + rng.random()
    return state


def series_count(registry: CollectorRegistry) -> int:
    text = generate_latest(registry).decode()
    return sum(len(f.samples) for f in text_string_to_metric_families(text))


def test_label_cardinality_stays_bounded_after_1000_random_workflows() -> None:
    """1,000 workflows with random names and step ids add no series past the first few."""
    rng = random.Random(7)
    metrics = WorkflowMetrics(definitions=["report"], max_node_labels=5)
    names = ["chain", "report"]

    def run(n: int) -> None:
        for _ in range(n):
            name = rng.choice([*names, uuid.uuid4().hex])  # mostly client-invented names
            steps = [uuid.uuid4().hex[:8] for _ in range(rng.randint(1, 4))]
            metrics.record_started(finished_workflow(name, steps, rng))
            metrics.record_finished(finished_workflow(name, steps, rng))

    run(200)
    after_200 = series_count(metrics.registry)
    run(800)
    assert series_count(metrics.registry) == after_200
    text = generate_latest(metrics.registry).decode()
    definitions = set()
    steps = set()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if "definition" in sample.labels:
                definitions.add(sample.labels["definition"])
            if "step" in sample.labels:
                steps.add((sample.labels["definition"], sample.labels["step"]))
    assert definitions == {"chain", "report", OTHER}
    # At most max_node_labels ids per listed definition, plus OTHER.
    for definition in ("chain", "report"):
        assert len({s for d, s in steps if d == definition}) <= 5 + 1
    assert {s for d, s in steps if d == OTHER} == {OTHER}


def test_snapshot_summarises_counts_statuses_and_durations() -> None:
    """The JSON summary counts by status, per-step statuses and a p95 from the histogram."""
    metrics = WorkflowMetrics()
    rng = random.Random(1)
    for status in (WorkflowStatus.COMPLETED, WorkflowStatus.DEGRADED, WorkflowStatus.FAILED):
        state = finished_workflow("chain", ["nlp"], rng)
        state.status = status
        metrics.record_started(state)
        metrics.record_finished(state)
    snap = metrics.snapshot()
    assert snap["workflows"]["started"] == 3
    assert snap["workflows"]["finished"] == 3
    assert snap["workflows"]["in_flight"] == 0
    assert snap["workflows"]["by_status"] == {
        "completed": 1, "degraded": 1, "failed": 1, "cancelled": 0
    }
    assert snap["workflows"]["success_rate"] == round(2 / 3, 4)
    assert snap["workflows"]["duration_ms"]["count"] == 3
    assert sum(snap["steps"]["chain.nlp"]["statuses"].values()) == 3


def test_quantile_interpolates_inside_the_bucket_like_prometheus() -> None:
    """histogram_quantile's rule: linear inside the bucket that holds the rank."""
    buckets = {0.1: 0.0, 0.2: 10.0, 0.4: 20.0, float("inf"): 20.0}
    assert quantile(0.5, buckets) == 0.2
    assert quantile(0.75, buckets) == pytest.approx(0.3)
    assert quantile(0.5, {float("inf"): 0.0}) is None
    assert quantile(0.99, {1.0: 0.0, float("inf"): 5.0}) == 1.0


def test_step_series_beyond_the_overall_cap_are_counted_together() -> None:
    """ORCH_MAX_METRIC_SERIES bounds step labels across all listed definitions."""
    rng = random.Random(3)
    metrics = WorkflowMetrics(definitions=["a", "b"], max_node_labels=50, max_series=5)
    for name in ("a", "b"):
        for _ in range(3):
            state = finished_workflow(name, [f"s{i}" for i in range(4)], rng)
            metrics.record_finished(state)
    steps = metrics.snapshot()["steps"]
    named = [key for key in steps if not key.endswith(OTHER)]
    assert len(named) == 5  # a.s0..a.s3 and b.s0; the rest of b's under b.(other)
    assert steps[f"b.{OTHER}"]["statuses"] and sum(steps[f"b.{OTHER}"]["statuses"].values()) == 9
    # Client-invented definitions: all their steps under one key.
    metrics.record_finished(finished_workflow("made-up", ["x", "y"], rng))
    assert sum(metrics.snapshot()["steps"][OTHER]["statuses"].values()) == 2


def record_finished_by_lookups(metrics: WorkflowMetrics, state: WorkflowState) -> None:
    """record_finished as it was before label children were remembered: every label
    looked up again, through the metrics' public series (the reference)."""
    definition = metrics.labels.definition(state.definition_name)
    status = state.status.value
    metrics.finished.labels(definition, status).inc()
    if state.finished_at is not None:
        metrics.duration.labels(definition, status).observe(
            max(state.finished_at - state.created_at, 0.0)
        )
    for run in state.steps.values():
        if run.started_at is None or run.finished_at is None:
            continue
        label = metrics.labels.node(definition, run.step_id)
        metrics.node_duration.labels(definition, label, run.status.value).observe(
            max(run.finished_at - run.started_at, 0.0)
        )
        if run.fallback is not None:
            metrics.fallbacks.labels(definition, label).inc()


def exposition(*, cached: bool, workflows: int, invented: float) -> str:
    """The exposition after `workflows` random finished workflows (a share `invented` of
    them under a definition name made up on the spot), recorded through the remembered
    children (`cached`) or by looking every label up again."""
    rng = random.Random(11)
    metrics = WorkflowMetrics(definitions=["report"], max_node_labels=3, max_series=5)
    for _ in range(workflows):
        if rng.random() < invented:
            name = uuid.UUID(int=rng.getrandbits(128)).hex
        else:
            name = rng.choice(["chain", "report"])
        steps = [rng.choice("abcdefgh") for _ in range(rng.randint(1, 4))]
        state = finished_workflow(name, steps, rng)
        for run in state.steps.values():
            run.fallback = "used a fallback" if rng.random() < 0.3 else None
        if cached:
            metrics.record_started(state)
            metrics.record_finished(state)
        else:
            metrics.started.labels(metrics.labels.definition(name)).inc()
            record_finished_by_lookups(metrics, state)
    text = generate_latest(metrics.registry).decode()
    return "\n".join(line for line in text.splitlines() if "_created" not in line)


def test_remembered_children_expose_what_fresh_lookups_do() -> None:
    """The label children kept by raw name (the hot path) give the same series, values and
    label caps as looking every label up again."""
    cached = exposition(cached=True, workflows=300, invented=1 / 3)
    assert cached == exposition(cached=False, workflows=300, invented=1 / 3)
    assert "orch_step_fallbacks_total" in cached and OTHER in cached


def test_past_the_remembered_childrens_cap_every_workflow_is_still_counted() -> None:
    """More client-invented names than the children remembered (4,096): those past the
    cap are looked up each time, and counted exactly as the others."""
    cached = exposition(cached=True, workflows=6_000, invented=0.9)
    assert cached == exposition(cached=False, workflows=6_000, invented=0.9)
