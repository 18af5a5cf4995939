"""Errors of the DAG engine.

```
DefinitionError (ValueError)    a definition that must not run: every Problem at once
NodeError (Exception)           a node failed at run time; `code` is its error type
└── NodeTimeout                 "node_timeout": the node's own timeout_s ran out
```

A `Problem` is one thing wrong with a definition, addressed by node id and/or a
JSON-pointer-like `path` ("nodes/3/input"), so an editor can point at it.
Agent failures stay `agents.errors.AgentError`; the DAG engine records their `code`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


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


class DefinitionError(ValueError):
    """The definition was refused; `problems` lists everything found, not just the first."""

    def __init__(self, problems: Iterable[Problem], *, message: str | None = None) -> None:
        self.problems: list[Problem] = list(problems)
        if message is None:
            count = len(self.problems)
            first = self.problems[0].message if self.problems else "no details"
            more = f" (and {count - 1} more)" if count > 1 else ""
            message = f"invalid workflow definition: {first}{more}"
        super().__init__(message)

    def to_dicts(self) -> list[dict[str, Any]]:
        return [p.to_dict() for p in self.problems]


class NodeError(Exception):
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
