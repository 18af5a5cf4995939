"""The contract between the engine and node kinds, and what a running node is given.

A node kind is an object with a `name`, the typed model of its nodes (`node_type`, a
`NodeDef` subclass tagged with the name, declaring the kind's own fields: decoded
with the definition and part of the published schema), a `compile` step run once at
validation, and an async `run`. `BaseKind` gives `validate` and `references`
for free from `compile`. Kinds never see the state store or other nodes' steps; the
DAG engine hands them a `NodeContext`.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

import msgspec

from agents.client import AgentCallResult as ClientResult
from agents.errors import AgentError
from agents.registry import AgentRegistry
from circuit.config import RetryConfig
from orchestrator.dag.budget import (
    DEFAULT_LIMITS,
    Budget,
    BudgetExceeded,
    KnownSizes,
    Limits,
    NeedsOffload,
)
from orchestrator.dag.errors import DefinitionError, NodeError, Problem
from orchestrator.dag.expressions import Expression, ExpressionError, compile_expression
from orchestrator.dag.model import NodeDef
from orchestrator.dag.paths import PathError, split_path
from orchestrator.dag.templates import Template, TemplateError, compile_template
from orchestrator.dag.values import ValueSizes

_T = TypeVar("_T")


class AgentCallResult(Protocol):
    """What an agent call returns: the agent's `data` and how many attempts it took."""

    @property
    def data(self) -> dict[str, Any]: ...

    @property
    def attempts(self) -> int: ...


class AgentCaller(Protocol):
    """Calls a registered agent through the resilience stack (agents.client.AgentClient).

    Raises `agents.errors.AgentError` (with `.code` and `.attempts`) when the call
    fails. `deadline` is on the event loop's clock (`loop.time()`, i.e. monotonic).
    """

    async def call(
        self,
        agent: str,
        payload: Mapping[str, Any],
        *,
        workflow_id: str,
        node_id: str,
        retry: RetryConfig | None = None,
        timeout_s: float | None = None,
        deadline: float | None = None,
    ) -> AgentCallResult: ...


@dataclass(frozen=True, slots=True)
class Compiled:
    """A kind's compiled params. Subclasses add what `run` needs.

    `references`: root names the node reads at run time ("inputs", node ids) — each
    node id must be an ancestor. `agents`: agent names the node may call.
    """

    references: frozenset[str] = frozenset()
    agents: frozenset[str] = frozenset()


class NodeContext(msgspec.Struct):
    """Everything a running node may use, and what it reports back.

    `scope` maps "inputs" and every finished ancestor's id to its output (None for
    one that produced none); `unavailable` names the ancestors that produced none
    (skipped or failed), so templates reading them render null instead of failing.
    `dependency_outputs` are the direct dependencies that produced an output, in
    `depends_on` order. The kind sets `input` (the rendered input, kept on a failed
    step) and the agent calls add to `attempts`. `sizes` are the sizes of the scope's
    values measured when they were kept (templates reading them are charged without
    walking them again), or the run's ValueSizes itself, which also measures the parts
    of the values it adopted unwalked when a template first reads them.

    A msgspec Struct (never encoded): one is made per node run, and a Struct is built
    in C, with no Python `__init__` frame (76 ns for its fields, a dataclass 183).
    """

    workflow_id: str
    node: NodeDef
    compiled: Compiled
    scope: Mapping[str, Any]
    unavailable: AbstractSet[str]
    caller: AgentCaller
    registry: AgentRegistry
    deadline: float | None = None
    input: Any = None
    attempts: int = 0
    agent: str | None = None
    budget: Budget = msgspec.field(default_factory=lambda: Budget.for_workflow().child())
    limits: Limits = DEFAULT_LIMITS
    sizes: KnownSizes | ValueSizes | None = None
    # The last answer `call_agent` returned, and the JSON body our client read it from
    # (None: a caller that does not say, or an A2A answer): the DAG engine keeps such an
    # answer without walking it when that body bounds it enough (dag/values.py).
    answer: Any = None
    source: bytes | None = None

    @property
    def dependency_outputs(self) -> list[tuple[str, Any]]:
        # Worked out when asked (aggregate nodes), not for every node that runs.
        scope = self.scope
        unavailable = self.unavailable
        return [(d, scope[d]) for d in self.node.depends_on if d not in unavailable]

    def render(self, template: Template) -> Any:
        """Render a template over the scope; references to nodes without output are null.

        Spends from the node's budget: `template_budget_exceeded` when it runs out.
        """
        unavailable = self.unavailable
        missing: Literal["error", "null"] = (
            # Most runs have no unavailable node: no set built per render to find none.
            "null" if unavailable and not template.references.isdisjoint(unavailable) else "error"
        )
        try:
            return template.render(
                self.scope, missing=missing, budget=self.budget, sizes=self.sizes
            )
        except TemplateError as exc:
            raise NodeError(str(exc), code="template_error", node_id=self.node.id) from exc
        except BudgetExceeded as exc:
            raise NodeError(
                f"node {self.node.id!r}: template: {exc}",
                code="template_budget_exceeded",
                node_id=self.node.id,
            ) from exc

    def evaluate(self, expression: Expression, extra: Mapping[str, Any] | None = None) -> Any:
        """Evaluate over the scope (plus `extra` names), spending from the node's budget:
        `expression_budget_exceeded` when it runs out."""
        scope = self.scope if not extra else {**self.scope, **extra}
        try:
            return expression.evaluate(scope, self.budget)
        except ExpressionError as exc:
            raise NodeError(str(exc), code="expression_error", node_id=self.node.id) from exc
        except BudgetExceeded as exc:
            raise NodeError(
                f"node {self.node.id!r}: expression {expression.source!r}: {exc}",
                code="expression_budget_exceeded",
                node_id=self.node.id,
            ) from exc

    def charge(self, ops: int, nbytes: int = 0, *, what: str) -> None:
        """Spend from the node's budget for work a kind does itself (`what` names it)."""
        try:
            self.budget.spend(ops, nbytes)
        except BudgetExceeded as exc:
            raise NodeError(
                f"node {self.node.id!r}: {what}: {exc}",
                code="expression_budget_exceeded",
                node_id=self.node.id,
            ) from exc

    def inline(self, work: Callable[[], _T]) -> _T:
        """`work()` on the event loop within the inline slice of the budget (`compute`'s
        first try); NeedsOffload when it does not fit: then `compute` it. A kind whose
        run is a plain function returning its awaitable (AgentKind) renders its input
        here, so the common case costs no coroutine of its own."""
        budget = self.budget
        budget.inline(self.limits.inline_ops, self.limits.inline_bytes)
        try:
            return work()
        finally:
            budget.offloaded()

    async def compute(self, work: Callable[[], _T]) -> _T:
        """Run pure CPU work (rendering, evaluating, checking) without stalling the loop.

        `work` runs on the event loop first, within a small slice of the budget
        (`limits.inline_ops` / `inline_bytes`): most work fits and pays no thread hop.
        Work that does not fit is redone from the start in a worker thread (it is pure,
        so redoing it is safe), bounded by the node's budget and by
        `limits.offload_timeout_s` (`evaluation_timeout`); if the node is cancelled or
        times out meanwhile (its timeout_s, its workflow's deadline),
        the budget is stopped so the thread ends at its next charge.
        """
        try:
            return self.inline(work)
        except NeedsOffload:
            pass
        budget = self.budget
        future = asyncio.get_running_loop().run_in_executor(None, work)
        # The node's own timeout_s and its workflow's deadline cancel this await from
        # outside (the DAG engine's timeouts); `finally` then stops the thread's budget.
        limit_s = self.limits.offload_timeout_s
        try:
            async with asyncio.timeout(limit_s):
                return await future
        except TimeoutError as exc:
            raise NodeError(
                f"node {self.node.id!r}: evaluation took longer than {limit_s:g} s",
                code="evaluation_timeout",
                node_id=self.node.id,
            ) from exc
        finally:
            if not future.done() or future.cancelled():
                budget.stop()

    def retry_for(self, agent: str, override: Mapping[str, Any] | None) -> RetryConfig | None:
        """The agent's retry policy with the node's override fields replaced."""
        if not override:
            return None
        base = self.registry[agent].retry if agent in self.registry else RetryConfig()
        return dataclasses.replace(base, **dict(override))

    async def call_agent(
        self,
        agent: str,
        payload: Mapping[str, Any],
        *,
        retry: Mapping[str, Any] | None = None,
        timeout_s: float | None = None,
    ) -> dict[str, Any]:
        """Call `agent` (a registry name, never a URL); counts attempts either way."""
        self.agent = agent
        try:
            result = await self.caller.call(
                agent,
                payload,
                workflow_id=self.workflow_id,
                node_id=self.node.id,
                retry=self.retry_for(agent, retry) if retry else None,
                timeout_s=timeout_s,
                deadline=self.deadline,
            )
        except AgentError as exc:
            self.attempts += exc.attempts
            raise
        self.attempts += result.attempts
        if type(result) is ClientResult:
            # Our client's `data` is a dict of its own, fresh from the JSON decoder.
            answer = self.answer = result.data
            self.source = result.source
            return answer
        answer = self.answer = dict(result.data)
        self.source = None
        return answer

    def dependency_output(self) -> Any:
        """The output of the node's only dependency (None if it produced none)."""
        (dep,) = self.node.depends_on
        return self.scope.get(dep)


@runtime_checkable
class NodeKind(Protocol):
    """A kind of node. Register instances on a `NodeKindRegistry`.

    - `name`: the `kind` value in definitions.
    - `node_type`: the model of its nodes, a `NodeDef` subclass tagged with `name`
      (`class EchoNode(NodeDef, tag="echo", frozen=True): text: str`) declaring its own
      fields; any field neither it nor `NodeDef` declares is refused. Its docstring
      is the kind's description in the published schema; a rule across its fields
      goes in its `__post_init__` (raise ValueError: reported on the node), written
      for the schema in its `json_schema_extra` (kinds/transform.py does both).
    - `compile(node)`: `node` is an instance of `node_type`; check and precompile its
      fields once; raise DefinitionError with Problems whose `path` is relative to
      the node ("input", "cases/0/when").
    - `run(node, ctx)`: produce the node's output (JSON); raise NodeError or
      AgentError on failure. Cancellation must be allowed to propagate. Usually an
      `async def`; a plain function returning an awaitable does too (it may raise
      before returning one: the node fails the same way).
    """

    @property
    def name(self) -> str: ...

    @property
    def node_type(self) -> type[NodeDef]: ...

    def compile(self, node: NodeDef) -> Compiled: ...

    def run(self, node: NodeDef, ctx: NodeContext) -> Awaitable[Any]: ...


class BaseKind:
    """Convenience base: a kind's `name` and `node_type` as class attributes."""

    name: str = ""
    node_type: type[NodeDef] = NodeDef

    def compile(self, node: NodeDef) -> Compiled:  # pragma: no cover - abstract
        raise NotImplementedError


class ProblemCollector:
    """Gathers Problems while compiling one node's params; `raise_if_any` at the end."""

    def __init__(self, node: NodeDef) -> None:
        self.node = node
        self.problems: list[Problem] = []

    def add(self, code: str, message: str, path: str | None = None) -> None:
        self.problems.append(
            Problem(
                code=code,
                message=f"node {self.node.id!r}: {message}",
                node_id=self.node.id,
                path=path,
            )
        )

    def template(self, value: Any, path: str) -> Template | None:
        try:
            return compile_template(value)
        except TemplateError as exc:
            self.add("invalid_template", str(exc), path)
            return None

    def expression(
        self, source: Any, path: str, *, extra_names: tuple[str, ...] = ()
    ) -> Expression | None:
        try:
            return compile_expression(source, extra_names=extra_names)
        except ExpressionError as exc:
            self.add("invalid_expression", str(exc), path)
            return None

    def dot_path(self, source: Any, path: str) -> tuple[str, ...] | None:
        try:
            return split_path(source)
        except PathError as exc:
            self.add("invalid_path", str(exc), path)
            return None

    def raise_if_any(self) -> None:
        if self.problems:
            raise DefinitionError(self.problems)


def to_json(value: Any) -> Any:
    """Tuples and sets an expression may build become lists, so outputs stay JSON."""
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, set | frozenset):
        items = [to_json(v) for v in value]
        try:
            return sorted(items)
        except TypeError:
            return items
    return value
