"""Errors of the orchestrator layer (the API maps each to a status in one middleware).

OrchestratorError
├── WorkflowNotFound          unknown or expired workflow id        -> 404
├── WorkflowAlreadyFinished   cancel of a terminal workflow         -> 409
├── ScheduleNotFound          unknown schedule id (or another tenant's) -> 404
└── InvalidSchedule           a cron expression, time zone or misfire policy that
                              cannot be used (`field` says which)   -> 422
"""

from __future__ import annotations

from state.models import WorkflowStatus


class OrchestratorError(Exception):
    pass


class WorkflowNotFound(OrchestratorError):
    def __init__(self, workflow_id: str) -> None:
        super().__init__(f"no workflow {workflow_id!r} (unknown, or its state has expired)")
        self.workflow_id = workflow_id


class WorkflowAlreadyFinished(OrchestratorError):
    def __init__(self, workflow_id: str, *, status: WorkflowStatus) -> None:
        super().__init__(f"workflow {workflow_id!r} already finished with status {status.value!r}")
        self.workflow_id = workflow_id
        self.status = status


class ScheduleNotFound(OrchestratorError):
    def __init__(self, schedule_id: str) -> None:
        super().__init__(f"no schedule {schedule_id!r}")
        self.schedule_id = schedule_id


class InvalidSchedule(OrchestratorError, ValueError):
    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field
