"""LoopHistogram exposes exactly what prometheus_client's Histogram exposes for the same
observations (its `_created` timestamps aside)."""

from __future__ import annotations

import random

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from orchestrator.histograms import LoopHistogram

BUCKETS = (0.0001, 0.00025, 0.001, 0.01, 0.1, 1, 2.5, 60)


def _exposed(registry: CollectorRegistry) -> list[str]:
    return [
        line for line in generate_latest(registry).decode().splitlines() if "_created" not in line
    ]


def test_the_exposition_matches_prometheus_clients_histogram() -> None:
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    reference = Histogram("t_seconds", "T", ["op", "status"], buckets=BUCKETS, registry=theirs)
    loop = LoopHistogram("t_seconds", "T", ["op", "status"], buckets=BUCKETS, registry=ours)
    rng = random.Random(7)
    # Every bound itself (it belongs to its own bucket), values between and beyond them.
    values = [*BUCKETS, 0.0, 1e-9, 61.0, 1e6, *(rng.uniform(0, 70) for _ in range(500))]
    for value in values:
        labels = (rng.choice(["save", "accept"]), rng.choice(["ok", "error"]))
        reference.labels(*labels).observe(value)
        loop.labels(*labels).observe(value)
    assert _exposed(ours) == _exposed(theirs)


def test_a_histogram_with_no_observations_exposes_only_its_help_and_type() -> None:
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    Histogram("e_seconds", "E", ["op"], buckets=BUCKETS, registry=theirs)
    LoopHistogram("e_seconds", "E", ["op"], buckets=BUCKETS, registry=ours)
    assert _exposed(ours) == _exposed(theirs)


def test_labels_are_checked_and_names_are_unique_in_a_registry() -> None:
    registry = CollectorRegistry()
    histogram = LoopHistogram("u_seconds", "U", ["op"], buckets=BUCKETS, registry=registry)
    with pytest.raises(ValueError, match="expected labels"):
        histogram.labels("a", "b")
    assert histogram.labels("a") is histogram.labels("a")
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        LoopHistogram("u_seconds", "U again", ["op"], buckets=BUCKETS, registry=registry)
    with pytest.raises(ValueError, match="finite bucket"):
        LoopHistogram("v_seconds", "V", ["op"], buckets=[float("inf")], registry=registry)
