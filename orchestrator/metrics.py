"""Per-process workflow metrics: totals by status, success rate, per-step durations.

Durations keep a bounded window of the most recent samples per step, so memory
stays flat however long the process runs; p95 is computed over that window.
Step names come from clients' definitions, so the number of distinct series is
capped too (`max_series`): once it is reached, steps not seen before are counted
together under `OTHER`.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from typing import Any

from state.models import StepStatus, WorkflowState, WorkflowStatus

_WINDOW = 1_000
_MAX_SERIES = 500
# The series every step beyond `max_series` distinct ones is counted under.
OTHER = "(other)"


class WorkflowMetrics:
    def __init__(self, *, window: int = _WINDOW, max_series: int = _MAX_SERIES) -> None:
        self._window = window
        self._max_series = max_series
        self.started = 0
        self.by_status: Counter[str] = Counter()
        self._durations_ms: deque[float] = deque(maxlen=window)
        self._step_ms: dict[str, deque[float]] = {}
        self._step_status: dict[str, Counter[str]] = {}
        self.fallbacks = 0

    def record_started(self) -> None:
        self.started += 1

    def record_finished(self, state: WorkflowState) -> None:
        self.by_status[state.status.value] += 1
        if state.finished_at is not None:
            self._durations_ms.append((state.finished_at - state.created_at) * 1000.0)
        for step in state.steps.values():
            key = f"{state.definition_name}.{step.step_id}"
            if key not in self._step_status and len(self._step_status) >= self._max_series:
                key = OTHER
            self._step_status.setdefault(key, Counter())[step.status.value] += 1
            if step.fallback is not None:
                self.fallbacks += 1
            if step.status is StepStatus.COMPLETED and step.duration_ms is not None:
                self._step_ms.setdefault(key, deque(maxlen=self._window)).append(step.duration_ms)

    def snapshot(self) -> dict[str, Any]:
        finished = sum(self.by_status.values())
        ok = self.by_status[WorkflowStatus.COMPLETED.value]
        degraded = self.by_status[WorkflowStatus.DEGRADED.value]
        return {
            "workflows": {
                "started": self.started,
                "finished": finished,
                "in_flight": max(self.started - finished, 0),
                "by_status": {s.value: self.by_status[s.value] for s in _FINISHED},
                # Degraded answers still answered the user: they count as successes.
                "success_rate": round((ok + degraded) / finished, 4) if finished else None,
                "duration_ms": _summary(self._durations_ms),
            },
            "steps": {
                key: {"statuses": dict(self._step_status[key]), **_summary(self._step_ms.get(key))}
                for key in sorted(self._step_status)
            },
            "fallbacks": self.fallbacks,
        }


_FINISHED = (
    WorkflowStatus.COMPLETED,
    WorkflowStatus.DEGRADED,
    WorkflowStatus.FAILED,
    WorkflowStatus.CANCELLED,
)


def _summary(samples: deque[float] | None) -> dict[str, Any]:
    if not samples:
        return {"count": 0, "avg_ms": None, "p95_ms": None}
    ordered = sorted(samples)
    p95 = ordered[max(math.ceil(0.95 * len(ordered)) - 1, 0)]
    return {
        "count": len(ordered),
        "avg_ms": round(sum(ordered) / len(ordered), 3),
        "p95_ms": round(p95, 3),
    }
