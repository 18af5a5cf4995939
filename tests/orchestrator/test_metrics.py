"""Workflow metrics: the number of per-step series is bounded whatever clients name steps."""

from __future__ import annotations

from orchestrator.metrics import OTHER, WorkflowMetrics
from state.models import StepState, StepStatus, WorkflowState, WorkflowStatus


def _finished(name: str, steps: list[str]) -> WorkflowState:
    return WorkflowState(
        workflow_id=name,
        definition_name=name,
        status=WorkflowStatus.COMPLETED,
        finished_at=1.0,
        created_at=0.0,
        steps={s: StepState(step_id=s, kind="agent", status=StepStatus.COMPLETED) for s in steps},
    )


def test_step_series_beyond_the_cap_are_counted_together() -> None:
    metrics = WorkflowMetrics(max_series=5)
    for i in range(10):
        metrics.record_finished(_finished(f"w{i}", [f"step{j}" for j in range(3)]))
    steps = metrics.snapshot()["steps"]
    assert len(steps) == 6
    assert steps[OTHER]["statuses"] == {"completed": 30 - 5}
    # A series that exists keeps counting on its own.
    metrics.record_finished(_finished("w0", ["step0"]))
    assert metrics.snapshot()["steps"]["w0.step0"]["statuses"] == {"completed": 2}
