"""LoopCounter exposes exactly what prometheus_client's Counter exposes for the same
increments, `_created` series included (their timestamps aside)."""

from __future__ import annotations

import random
import re
import time

import pytest
from prometheus_client import CollectorRegistry, Counter, generate_latest

from orchestrator.counters import LoopCounter


def _exposed(registry: CollectorRegistry) -> list[str]:
    """The exposition, with each `_created` sample's timestamp blanked out."""
    text = generate_latest(registry).decode()
    return [re.sub(r"(_created\{.*\}) \S+$", r"\1 T", line) for line in text.splitlines()]


def test_the_exposition_matches_prometheus_clients_counter() -> None:
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    reference = Counter("t_things", "T", ["definition", "status"], registry=theirs)
    loop = LoopCounter("t_things", "T", ["definition", "status"], registry=ours)
    rng = random.Random(7)
    for _ in range(500):
        labels = (rng.choice(["chain", "(other)"]), rng.choice(["completed", "failed"]))
        amount = rng.choice([1.0, 1.0, 2.5, 0.0])
        reference.labels(*labels).inc(amount)
        loop.labels(*labels).inc(amount)
    exposed = _exposed(ours)
    assert exposed == _exposed(theirs)
    assert any("_created{" in line for line in exposed)


def test_a_counter_never_incremented_exposes_only_its_help_and_type() -> None:
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    Counter("e_things", "E", ["op"], registry=theirs)
    LoopCounter("e_things", "E", ["op"], registry=ours)
    assert _exposed(ours) == _exposed(theirs)


def test_created_is_when_the_label_set_was_first_used() -> None:
    ours = CollectorRegistry()
    counter = LoopCounter("c_things", "C", ["op"], registry=ours)
    before = time.time()
    counter.labels("a").inc()
    after = time.time()
    assert ours.get_sample_value("c_things_created", {"op": "a"}) is not None
    created = ours.get_sample_value("c_things_created", {"op": "a"})
    assert created is not None and before <= created <= after
    assert ours.get_sample_value("c_things_total", {"op": "a"}) == 1.0


def test_wrong_labels_and_negative_increments_are_refused_as_prometheus_does() -> None:
    counter = LoopCounter("w_things", "W", ["op"], registry=CollectorRegistry())
    with pytest.raises(ValueError):
        counter.labels("a", "b")
    with pytest.raises(ValueError):
        counter.labels("a").inc(-1)
    reference = Counter("w_things", "W", ["op"], registry=CollectorRegistry())
    with pytest.raises(ValueError):
        reference.labels("a").inc(-1)
