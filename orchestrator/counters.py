"""A Prometheus counter for code that runs on one event loop: no lock per increment.

prometheus_client's `Counter.inc` checks the child is observable and takes a
`threading.Lock` (four Python calls and a lock: ~1 µs); the lifecycle counts every
workflow twice (started, finished). Everything that counts here runs on the event
loop's thread, so a child is one integer add. Scrapes read the same numbers through
`collect()`, as a `CounterMetricFamily` rendered by prometheus_client like its own
counters (`_total`, and `_created` with the time the label set was first used), as
`orchestrator.histograms.LoopHistogram` does for histograms.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector


class CounterChild:
    """One label set's count; `inc` is what the hot path calls."""

    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()

    def inc(self, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError("counters can only be incremented by non-negative amounts")
        self.value += amount


class LoopCounter(Collector):
    """A labelled counter, registered in `registry` like prometheus_client's."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        *,
        registry: CollectorRegistry,
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], CounterChild] = {}
        registry.register(self)

    def labels(self, *values: str) -> CounterChild:
        if len(values) != len(self._labelnames):
            raise ValueError(f"{self._name}: expected labels {self._labelnames}, got {values}")
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = CounterChild()
        return child

    def describe(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self._name, self._documentation, labels=self._labelnames)

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self._name, self._documentation, labels=self._labelnames)
        for values, child in list(self._children.items()):
            family.add_metric(list(values), child.value, created=child.created)
        yield family
