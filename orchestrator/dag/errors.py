"""Errors of the DAG engine (their place in the orchestrator's tree: orchestrator/errors.py).

```
RequestError
└── DefinitionError             a definition that must not run: every Problem at once
                                (422 invalid_workflow at the API; also a ValueError)
OrchestratorError
└── NodeError                   a node failed at run time; `code` is its error type
    └── NodeTimeout             "node_timeout": the node's own timeout_s ran out
```

A `Problem` is one thing wrong with a definition, addressed by node id and/or a
JSON-pointer-like `path` ("nodes/3/input"), so an editor can point at it.
Agent failures stay `agents.errors.AgentError`; the DAG engine records their `code`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from orchestrator.errors import OrchestratorError, RequestError


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a workflow definition.

    `code` is a stable snake_case string (e.g. "cycle", "unknown_agent",
    "unknown_field"); `message` is for people; `node_id` names the node it is
    about, when it is about one; `path` points into the submitted JSON ("nodes/3/when").
    """

    code: str
    message: str
    node_id: str | None = None
    path: str | None = None
    # Every node the problem is about when there are several (the nodes on a cycle).
    nodes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "message": self.message,
            "node_id": self.node_id,
            "path": self.path,
            "nodes": list(self.nodes),
        }


# Problems the message names; details() carries every one.
_SHOWN = 5


class DefinitionError(RequestError, ValueError):
    """The definition was refused; `problems` lists everything found, not just the first."""

    status, code = 422, "invalid_workflow"

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems: list[Problem] = list(problems)
        shown = "; ".join(p.message for p in self.problems[:_SHOWN]) or "no details"
        more = len(self.problems) - _SHOWN
        more_text = f" (and {more} more)" if more > 0 else ""
        super().__init__(
            f"the workflow definition has {len(self.problems)} problem(s): {shown}{more_text}"
        )

    def to_dicts(self) -> list[dict[str, Any]]:
        return [p.to_dict() for p in self.problems]

    def details(self) -> dict[str, Any]:
        return {"problems": self.to_dicts()}


class NodeError(OrchestratorError):
    """A node failed for a reason of its own (not an agent error).

    `code` becomes the step's error type ("expression_error", "validation_failed", ...).
    """

    def __init__(
        self,
        message: str,
        *,
        code: str,
        node_id: str | None = None,
        agent: str | None = None,
        attempts: int = 0,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.node_id = node_id
        self.agent = agent
        self.attempts = attempts


class NodeTimeout(NodeError):
    """The node ran past its own `timeout_s`."""

    def __init__(self, *, node_id: str, timeout_s: float, agent: str | None = None) -> None:
        super().__init__(
            f"node {node_id!r} timed out after {timeout_s:g} s",
            code="node_timeout",
            node_id=node_id,
            agent=agent,
        )
        self.timeout_s = timeout_s
