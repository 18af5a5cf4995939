"""Evaluation budgets: how much work expressions and templates may do, counted as they run.

A workflow's expressions, templates and transforms are written by a client and run
over data agents return, so neither their cost nor their output size is known in
advance. Every evaluation spends from a `Budget`: one per node, drawing on one per
workflow, so a single node cannot take more than its share and a workflow of many
cheap nodes cannot add up to an unbounded total. Two quantities are counted:

- **operations**: one per expression node evaluated, plus the items an allowed
  function or operator walks (``sum`` of a list, ``in`` on a list, a comparison of
  two lists, copying a slice);
- **bytes**: the size of every value produced (strings by length, containers by
  their items, rendered template text), charged *before* the value is built where
  its size is known in advance (``'a' * n``, ``str()`` of a nested list) and while
  it is built otherwise.

A budget can also be stopped from outside (`stop`): an evaluation running in a
worker thread notices at its next charge and raises, so a cancelled or timed-out
node never leaves a thread computing for nothing.

```
EvaluationError (orchestrator/errors.py)
└── BudgetExceeded      # also a ValueError; .resource ("operations" | "bytes"),
                        # .scope ("node" | "workflow"), .limit
EvaluationInterrupted (orchestrator/errors.py)
├── EvaluationStopped   # the budget was stopped (the node was cancelled or timed out)
└── NeedsOffload        # an inline slice ran out: redo the work off the event loop
```
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from orchestrator.errors import EvaluationError, EvaluationInterrupted

__all__ = [
    "DEFAULT_LIMITS",
    "Budget",
    "BudgetExceeded",
    "EvaluationStopped",
    "Limits",
    "KnownSizes",
    "NeedsOffload",
    "measure",
    "unlimited",
]

Resource = Literal["operations", "bytes"]
# Sizes already measured, by container id: (the container, its size, its height).
KnownSizes = Mapping[int, tuple[Any, int, int]]
Scope = Literal["node", "workflow"]


class BudgetExceeded(EvaluationError, ValueError):
    """An evaluation would spend more operations or bytes than its budget allows."""

    def __init__(self, *, resource: Resource, scope: Scope, limit: int) -> None:
        super().__init__(f"evaluation budget exceeded: more than {limit:,} {resource} per {scope}")
        self.resource = resource
        self.scope = scope
        self.limit = limit


class EvaluationStopped(EvaluationInterrupted):
    """The budget was stopped from outside: the work is no longer wanted."""


class NeedsOffload(EvaluationInterrupted):
    """Raised by an inline slice that ran out: redo the (pure) work off the event loop."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Budget sizes (Settings: ORCH_EVAL_* variables) and the inline slice.

    `inline_ops` / `inline_bytes`: work up to this size runs on the event loop
    (cheaper than a thread hop); anything bigger is redone in a worker thread.
    """

    node_ops: int = 1_000_000
    node_bytes: int = 16 * 1024 * 1024
    workflow_ops: int = 10_000_000
    workflow_bytes: int = 64 * 1024 * 1024
    inline_ops: int = 20_000
    inline_bytes: int = 1024 * 1024
    # Seconds a node's off-loop evaluation may run (whatever its budget left).
    offload_timeout_s: float = 10.0


DEFAULT_LIMITS = Limits()


class Budget:
    """Operations and bytes left; `parent` (the workflow's) is charged with every spend.

    Not thread-safe by design: a node's evaluation runs on one thread at a time
    (inline, or in a worker while the node awaits it).
    """

    __slots__ = (
        "_bytes_limit",
        "_inline",
        "_ops_limit",
        "_parent",
        "_stopped",
        "bytes_left",
        "ops_left",
        "scope",
    )

    def __init__(
        self, ops: int, nbytes: int, scope: Scope = "node", parent: Budget | None = None
    ) -> None:
        self.ops_left = ops
        self.bytes_left = nbytes
        self.scope: Scope = scope
        # Two slots, not a tuple: one object less per node run (only errors read them).
        self._ops_limit = ops
        self._bytes_limit = nbytes
        self._parent = parent
        self._stopped = False
        # [ops, bytes] still allowed before the inline slice runs out; None off the loop.
        self._inline: list[int] | None = None

    @classmethod
    def for_workflow(cls, limits: Limits = DEFAULT_LIMITS) -> Budget:
        return cls(ops=limits.workflow_ops, nbytes=limits.workflow_bytes, scope="workflow")

    def child(self, limits: Limits = DEFAULT_LIMITS) -> Budget:
        """A node's budget drawing on this (the workflow's) one."""
        # Positional: one per node run, and keywords cost a third more.
        return Budget(limits.node_ops, limits.node_bytes, "node", self)

    def stop(self) -> None:
        """Make the next charge raise EvaluationStopped (from any thread)."""
        self._stopped = True

    def inline(self, ops: int, nbytes: int) -> None:
        """Allow only this much more before raising NeedsOffload; `offloaded()` lifts it."""
        self._inline = [ops, nbytes]

    def offloaded(self) -> None:
        self._inline = None

    def spend_if_affords(self, ops: int, nbytes: int) -> bool:
        """`spend(ops, nbytes)` if it would raise nothing (this budget, its inline slice
        and every parent), else nothing; whether it spent. Work that can price itself
        before it starts charges once, and is the same as charging piece by piece when
        this spends (charges never go negative), in one call, not one per budget."""
        budget: Budget | None = self
        while budget is not None:
            if budget._stopped or budget.ops_left < ops or budget.bytes_left < nbytes:
                return False
            inline = budget._inline
            if inline is not None and (inline[0] < ops or inline[1] < nbytes):
                return False
            budget = budget._parent
        budget = self
        while budget is not None:
            inline = budget._inline
            if inline is not None:
                inline[0] -= ops
                inline[1] -= nbytes
            budget.ops_left -= ops
            budget.bytes_left -= nbytes
            budget = budget._parent
        return True

    def spend(self, ops: int = 1, nbytes: int = 0) -> None:
        """Charge `ops` operations and `nbytes` bytes; raise if that is more than is left."""
        if self._stopped:
            raise EvaluationStopped
        inline = self._inline
        if inline is not None:
            inline[0] -= ops
            inline[1] -= nbytes
            if inline[0] < 0 or inline[1] < 0:
                raise NeedsOffload
        self.ops_left -= ops
        self.bytes_left -= nbytes
        if self.ops_left < 0:
            raise BudgetExceeded(resource="operations", scope=self.scope, limit=self._ops_limit)
        if self.bytes_left < 0:
            raise BudgetExceeded(resource="bytes", scope=self.scope, limit=self._bytes_limit)
        if self._parent is not None:
            self._parent.spend(ops, nbytes)


def unlimited() -> Budget:
    """A budget for callers that bound the work themselves (tests, compile-time checks)."""
    return Budget(ops=2**62, nbytes=2**62)


def measure(value: Any, limit: int, known: KnownSizes | None = None) -> int:
    """The size of a JSON-like value (strings by length, containers by items, deep),
    walking at most about `limit` units; returns `limit + 1` as soon as it is over.

    Shared sub-values are counted each time they occur, as serialising would
    count them, but each distinct container is walked once (memoised by id), so a
    value full of repeated references is measured in time proportional to its
    distinct parts. A container found in `known` (orchestrator.dag.values.ValueSizes:
    the same object, measured when its step output was kept) is not walked again.
    """
    memo: dict[int, int] = {}
    over = limit + 1

    def size(item: Any) -> int:
        if isinstance(item, str):
            return len(item) + 2
        children: Iterable[Any]
        if isinstance(item, Mapping):
            children = [*item.keys(), *item.values()]
        elif isinstance(item, list | tuple | set | frozenset):
            children = item
        elif isinstance(item, int) and not isinstance(item, bool):
            return max(1, item.bit_length() // 3)
        else:
            return 8
        seen = memo.get(id(item))
        if seen is None and known is not None:
            entry = known.get(id(item))
            seen = None if entry is None else entry[1]
        if seen is not None:
            return seen
        total = 2
        for child in children:
            total += size(child) + 1
            if total > limit:
                return over
        memo[id(item)] = total
        return total

    return min(size(value), over)
