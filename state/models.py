"""Workflow and node-run state: the documents every store keeps, as plain value types.

Field names are the wire's (`steps`, `step_id`: the status document's words, a
public contract; see "Names" in README.md); everything else in the code says "node".

A `WorkflowState` is saved after its transitions; stores write only the fields
that changed (state/layout.py) in one atomic write, so any replica reading it
sees a consistent picture. `to_dict` /
`from_dict` are the only (de)serialisation path; stores add nothing to it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

JSON = Any


class WorkflowStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    # Stopped between nodes on request; resumable from any replica. Not terminal.
    PAUSED = "paused"
    COMPLETED = "completed"
    DEGRADED = "degraded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL_WORKFLOW


_TERMINAL_WORKFLOW = frozenset(
    {
        WorkflowStatus.COMPLETED,
        WorkflowStatus.DEGRADED,
        WorkflowStatus.FAILED,
        WorkflowStatus.CANCELLED,
    }
)


class NodeStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self not in (NodeStatus.PENDING, NodeStatus.RUNNING)


@dataclass(slots=True)
class NodeFailure:
    """Why a node failed: kept on its run so status can explain it."""

    type: str
    message: str
    agent: str | None = None
    attempts: int = 0
    input: JSON = None

    def to_dict(self) -> dict[str, JSON]:
        return {
            "type": self.type,
            "message": self.message,
            "agent": self.agent,
            "attempts": self.attempts,
            "input": self.input,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, JSON]) -> NodeFailure:
        return cls(
            type=raw["type"],
            message=raw["message"],
            agent=raw.get("agent"),
            attempts=int(raw.get("attempts", 0)),
            input=raw.get("input"),
        )


@dataclass(slots=True)
class NodeRun:
    """One node's run in a workflow: what the status document shows under `steps`.

    Fields are named as on the wire (`step_id`), since this is that document.
    """

    step_id: str
    kind: str
    agent: str | None = None
    status: NodeStatus = NodeStatus.PENDING
    attempts: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    output: JSON = None
    error: NodeFailure | None = None
    # Set when the output came from the node's fallback instead of the node itself.
    fallback: str | None = None
    skip_reason: str | None = None

    @property
    def duration_ms(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return round((self.finished_at - self.started_at) * 1000.0, 3)

    def to_dict(self) -> dict[str, JSON]:
        return {
            "step_id": self.step_id,
            "kind": self.kind,
            "agent": self.agent,
            "status": self.status.value,
            "attempts": self.attempts,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "duration_ms": self.duration_ms,
            "output": self.output,
            "error": self.error.to_dict() if self.error else None,
            "fallback": self.fallback,
            "skip_reason": self.skip_reason,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, JSON]) -> NodeRun:
        error = raw.get("error")
        return cls(
            step_id=raw["step_id"],
            kind=raw["kind"],
            agent=raw.get("agent"),
            status=NodeStatus(raw["status"]),
            attempts=int(raw.get("attempts", 0)),
            started_at=raw.get("started_at"),
            finished_at=raw.get("finished_at"),
            output=raw.get("output"),
            error=NodeFailure.from_dict(error) if error else None,
            fallback=raw.get("fallback"),
            skip_reason=raw.get("skip_reason"),
        )


@dataclass(slots=True)
class WorkflowError:
    code: str
    message: str
    step_id: str | None = None
    agent: str | None = None

    def to_dict(self) -> dict[str, JSON]:
        return {
            "code": self.code,
            "message": self.message,
            "step_id": self.step_id,
            "agent": self.agent,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, JSON]) -> WorkflowError:
        return cls(
            code=raw["code"],
            message=raw["message"],
            step_id=raw.get("step_id"),
            agent=raw.get("agent"),
        )


@dataclass(slots=True)
class WorkflowState:
    workflow_id: str
    definition_name: str
    status: WorkflowStatus = WorkflowStatus.PENDING
    inputs: dict[str, JSON] = field(default_factory=dict)
    steps: dict[str, NodeRun] = field(default_factory=dict)
    result: JSON = None
    error: WorkflowError | None = None
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    # Which replica runs it; status readers use it for display only.
    owner: str | None = None
    # The client's definition (None for built-in workflows), so any replica can resume it.
    definition: JSON = None
    # The schedule that started it (None: started by a client).
    schedule_id: str | None = None
    # The tenant that submitted it: only that tenant (and admins) can see or cancel it.
    tenant: str | None = None
    # The Idempotency-Key it was submitted with (per tenant), if any.
    submit_key: str | None = None

    @property
    def fallbacks(self) -> list[dict[str, JSON]]:
        """Nodes whose output came from a fallback, and why (wire keys)."""
        return [
            {"step_id": s.step_id, "reason": s.fallback}
            for s in self.steps.values()
            if s.fallback is not None
        ]

    def to_dict(self) -> dict[str, JSON]:
        return {
            "workflow_id": self.workflow_id,
            "definition_name": self.definition_name,
            "status": self.status.value,
            "inputs": self.inputs,
            "steps": {k: s.to_dict() for k, s in self.steps.items()},
            "fallbacks": self.fallbacks,
            "result": self.result,
            "error": self.error.to_dict() if self.error else None,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "finished_at": self.finished_at,
            "owner": self.owner,
            "definition": self.definition,
            "schedule_id": self.schedule_id,
            "tenant": self.tenant,
            "submit_key": self.submit_key,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, JSON]) -> WorkflowState:
        error = raw.get("error")
        return cls(
            workflow_id=raw["workflow_id"],
            definition_name=raw["definition_name"],
            status=WorkflowStatus(raw["status"]),
            inputs=raw.get("inputs") or {},
            steps={k: NodeRun.from_dict(v) for k, v in (raw.get("steps") or {}).items()},
            result=raw.get("result"),
            error=WorkflowError.from_dict(error) if error else None,
            created_at=raw["created_at"],
            updated_at=raw["updated_at"],
            finished_at=raw.get("finished_at"),
            owner=raw.get("owner"),
            definition=raw.get("definition"),
            schedule_id=raw.get("schedule_id"),
            tenant=raw.get("tenant"),
            submit_key=raw.get("submit_key"),
        )
