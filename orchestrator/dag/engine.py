"""Runs a `CompiledWorkflow` eagerly and records every node transition in its state.

A node starts the moment all its dependencies are done (`graph.ReadyTracker`:
graphlib's `get_ready/done` without its per-run set-up), never waiting for a "level"; at most
`options.max_parallel` nodes run at any moment (each agent's own limit is the
client's bulkhead). A node runs in a task of its own when others may run beside it;
the only node that can run (each node of a chain, a fan-out's root and join) runs in
the workflow's own task, with the same deadline, cancel, pause and log context. A run
arms one timer of the event loop for the workflow's deadline; the awaits it bounds
(each node's timeout_s, an inline node under the workflow's deadline) are caps on the
engine's one `circuit.cap.CapTimer`, shared by all its runs, not a timer each.
Per node, in order:

- skipped, without running, if its trigger rule over how its dependencies ended
  is not met (dag/triggers.py: by default a node with one dependency needs it to
  succeed, a join of several needs none failed and one succeeded), or if its
  `when` is false;
- otherwise run by its kind under its `timeout_s` (an agent node, the engine's own
  kind, on a path of its own that calls the agent client directly: `_agent_node`,
  step for step what the general path does with it); a failure (agent error, node
  error, any exception of the kind) goes to the node's `fallback` when it has one
  (the node completes with `fallback` = the reason, the workflow ends degraded);
- a failure without fallback: `on_failure: continue` marks the node failed, its
  dependents are skipped and the workflow ends degraded; `stop` cancels every
  running node and fails the workflow.

A pause (`pause_requested`) starts no new node; once the running ones have ended,
the state is PAUSED and `run` returns. Running it again resumes it. The
workflow's `timeout_s` counts from the start of each run (a resumed workflow gets
it afresh) and fails it with "workflow_timeout"; cancelling the task
that runs `run` cancels every running node, records the workflow as cancelled
(shielded, so the record is written) and re-raises. Node tasks never outlive
`run`. Nodes already settled in the given state (a resumed workflow: completed,
failed with `continue`, skipped) are not run again: their outcome is reused.
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import functools
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from types import MappingProxyType
from typing import Any

import msgspec
import structlog
from opentelemetry.trace import Tracer

from agents.client import AgentCallResult as ClientResult
from agents.client import AgentClient
from agents.errors import AgentError
from agents.observe import log_node
from agents.registry import AgentRegistry
from circuit.cap import CapTimer
from orchestrator.dag.budget import DEFAULT_LIMITS, Budget, BudgetExceeded, Limits, NeedsOffload
from orchestrator.dag.compiler import INPUTS, CompiledNode, CompiledWorkflow
from orchestrator.dag.errors import NodeError, NodeTimeout
from orchestrator.dag.graph import ReadyTracker
from orchestrator.dag.kinds import (
    AgentCaller,
    AgentCallResult,
    NodeContext,
    NodeKindRegistry,
    default_kinds,
)
from orchestrator.dag.kinds.agent import AgentKind, AgentParams
from orchestrator.dag.model import FallbackKind, OnFailure
from orchestrator.dag.triggers import Outcome, unmet_reason
from orchestrator.dag.values import UnstorableValue, ValueSizes, decoded_within
from state.models import (
    NodeFailure,
    NodeRun,
    NodeStatus,
    WorkflowError,
    WorkflowState,
    WorkflowStatus,
)

__all__ = ["AgentCaller", "BuiltinFallback", "DagEngine", "OnNodeChange", "OnTransition"]

BuiltinFallback = Callable[[Mapping[str, Any]], Awaitable[Any]]
# May return None: a transition with nothing to wait for (the lifecycle's, until the
# terminal one) then costs no coroutine.
OnTransition = Callable[[WorkflowState], Awaitable[None] | None]
# Told which node just changed, before the `on_transition` of that change (progress events).
OnNodeChange = Callable[[NodeRun], None]
BeforeStart = Callable[[], Awaitable[None]]

log = structlog.get_logger(__name__)

# How much later than a node's deadline its backstop fires (see _bounded).
_BACKSTOP_GRACE_S = 0.05
# `_agent_node`: the input did not fit the inline slice (it renders off the loop).
_OFFLOAD = object()
# Nodes run inline (in the workflow's task) give the event loop a turn at least this often.
_INLINE_TURN_S = 0.002
# Nodes a resumed run keeps as they are.
_SETTLED = frozenset({NodeStatus.COMPLETED, NodeStatus.FAILED, NodeStatus.SKIPPED})
# The statuses every run sets, as names of this module: on Python 3.11 EnumType has a
# `__getattr__`, so every read of a member off its class (`NodeStatus.RUNNING`) takes
# the slow path of attribute lookup, ~100 ns (~0.8 K instructions), five times a
# global's; a chain's run read eight.
_NODE_RUNNING = NodeStatus.RUNNING
_NODE_COMPLETED = NodeStatus.COMPLETED
_WORKFLOW_RUNNING = WorkflowStatus.RUNNING
_WORKFLOW_COMPLETED = WorkflowStatus.COMPLETED
_WORKFLOW_DEGRADED = WorkflowStatus.DEGRADED


class _Outcome(msgspec.Struct):
    """What a node task produced: an output, or an error; `fallback` says why the
    output came from the fallback. (A Struct, one per node run: built in C, with no
    Python `__init__` frame, 60 ns where the dataclass took 235.)"""

    output: Any = None
    error: BaseException | None = None
    fallback: str | None = None
    input: Any = None
    attempts: int = 0
    agent: str | None = None

    @property
    def failed(self) -> bool:
        return self.error is not None and self.fallback is None


def error_code(exc: BaseException) -> str:
    """The node's error type: an AgentError's or NodeError's code, else "internal_error"."""
    if isinstance(exc, AgentError | NodeError):
        return exc.code
    return "internal_error"


def error_message(exc: BaseException) -> str:
    if isinstance(exc, AgentError | NodeError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


class _Paused(Exception):
    """A pause was requested and the nodes that were running have ended."""


def _never() -> bool:
    return False


class _TimedOut(Exception):
    """The workflow's own timeout_s ran out."""


class _OutputError(Exception):
    """The output template ran out of budget or built a value no store can hold."""


class _StopWorkflow(Exception):
    def __init__(self, error: WorkflowError) -> None:
        super().__init__(error.message)
        self.error = error


class DagEngine:
    """Runs compiled workflows. One engine serves any number of workflows at once.

    `agents` makes the agent calls (agents.client.AgentClient); `registry` supplies
    each agent's retry policy for per-node overrides; `kinds` is only used when a
    workflow was compiled without one (kinds travel inside the compiled nodes);
    `builtins` are the built-in fallbacks by name; `clock` stamps the node runs; `limits`
    sizes the evaluation budgets (per node, per workflow; orchestrator.dag.budget);
    `node_timeout_s` is the deadline of a node that sets no `timeout_s` of its own
    (None: only the workflow's), so a hanging agent ends its node in bounded time
    whatever its retry policy; with a `tracer` each node runs in a span `node <id>`.
    """

    def __init__(
        self,
        *,
        agents: AgentCaller,
        registry: AgentRegistry,
        kinds: NodeKindRegistry | None = None,
        builtins: Mapping[str, BuiltinFallback] | None = None,
        clock: Callable[[], float] = time.time,
        limits: Limits = DEFAULT_LIMITS,
        node_timeout_s: float | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        self.agents = agents
        self.limits = limits
        self.node_timeout_s = node_timeout_s
        self.tracer = tracer
        self.registry = registry
        self.kinds = kinds or default_kinds()
        self.builtins: Mapping[str, BuiltinFallback] = dict(builtins or {})
        self.clock = clock
        # The awaits every run bounds (node timeouts, inline nodes under the workflow's
        # deadline) on one timer of the event loop: a later deadline arms nothing.
        self.caps = CapTimer()
        # The agents whose calls end by their deadline by themselves (our client's
        # `deadline_bound`): an agent node arms no backstop around a call to one.
        self.deadline_bound = (
            agents.deadline_bound() if isinstance(agents, AgentClient) else frozenset[str]()
        )
        # Whether a run's task gave the loop a turn (`_Execution.turn`): one callback
        # per turn of the loop for all the runs, not one per run.
        self.turns = LoopTurns()
        # The loop the last run ran on: a run on it finds its task without asking for
        # the running loop (`asyncio.get_running_loop` makes a system call, getpid).
        self.loop: asyncio.AbstractEventLoop | None = None

    async def run(
        self,
        workflow: CompiledWorkflow,
        state: WorkflowState,
        *,
        on_transition: OnTransition,
        before_start: BeforeStart | None = None,
        pause_requested: Callable[[], bool] | None = None,
        on_node: OnNodeChange | None = None,
    ) -> None:
        """Run `workflow`, recording into `state` and calling `on_transition` after
        each change (see the module docstring; node starts dispatched with no wait
        between them, a fan-out's branches, are one call after the last of them, each
        told to `on_node` first, and so are the nodes settled in one wake-up, branches
        whose calls ended together); returns when the state is terminal,
        or PAUSED: while `pause_requested()` is true no new node starts, and once the
        running ones have ended the run stops there (run it again to resume).

        `before_start`, when given, is awaited before each node starts; the engine
        uses it to confirm it still owns the workflow (it raises CancelledError if not).
        `on_node(run)` is called with the node run each change was about (not for the
        nodes an abort cancels at once: the terminal state shows those).
        """
        execution = _Execution(
            self, workflow, state, on_transition, before_start, pause_requested, on_node
        )
        # To a terminal state, whatever happens: the one place that guarantees it (or to
        # PAUSED). Any exception escaping the scheduler, a node's bookkeeping, a
        # transition callback or the output template (a bug, a value no store can hold, a
        # failed write) ends the workflow FAILED with an `internal_error` on the node it
        # concerned (DESIGN.md "Untrusted input"). Cancellation is re-raised after the
        # CANCELLED state is recorded. (Here, not in a coroutine of the run's own: one
        # coroutine less per workflow.)
        try:
            await execution.run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await execution.crash(exc)


class LoopTurns:
    """Tells a task whether it gave the event loop a turn since a mark, for many tasks at
    once with one callback per turn of the loop (a callback per task cost a handle and
    its turn each: one per workflow run and per inline stretch of its nodes).

    `mark` returns the count and makes sure a tick is scheduled; the count has moved
    once that tick ran. The loop runs ready callbacks in order and the marking task is
    running, so the tick (scheduled now, or pending from an earlier mark) runs only once
    that task has yielded, and before anything its yield scheduled: the count moved if,
    and only if, the task gave the loop a turn since its mark.
    """

    __slots__ = ("_armed", "_loop", "count")

    def __init__(self) -> None:
        self.count = 0
        self._armed = False
        self._loop: asyncio.AbstractEventLoop | None = None

    def mark(self, loop: asyncio.AbstractEventLoop) -> int:
        if loop is not self._loop:  # a new loop (tests run one per test): start afresh
            self._loop = loop
            self._armed = False
        if not self._armed:
            self._armed = True
            loop.call_soon(self._tick)
        return self.count

    def _tick(self) -> None:
        self._armed = False
        self.count += 1


class _Execution:
    """One run of one workflow: the scheduler loop and the bookkeeping."""

    # Slots: one of these is made per run, and its ~30 attributes then live in the object,
    # not in a dict of its own made and filled for every workflow.
    __slots__ = (
        "before_start",
        "budget",
        "caps",
        "current",
        "deadline",
        "degraded",
        "engine",
        "failed",
        "finished",
        "loop",
        "on_node",
        "on_transition",
        "options",
        "pause_requested",
        "runnable",
        "running",
        "scope",
        "scope_view",
        "sizes",
        "skipped",
        "state",
        "task",
        "timed_out",
        "timer",
        "turn",
        "turns",
        "unavailable",
        "wakeup",
        "workflow",
        "yielded_at",
    )

    def __init__(
        self,
        engine: DagEngine,
        workflow: CompiledWorkflow,
        state: WorkflowState,
        on_transition: OnTransition,
        before_start: BeforeStart | None = None,
        pause_requested: Callable[[], bool] | None = None,
        on_node: OnNodeChange | None = None,
    ) -> None:
        self.engine = engine
        self.pause_requested = pause_requested or _never
        self.on_node = on_node
        self.workflow = workflow
        self.state = state
        self.on_transition = on_transition
        self.before_start = before_start
        self.options = workflow.definition.options
        # The workflow's task (run() builds this in it): where inline nodes run, the
        # task every cap of this run's own awaits is on. Looked up on the loop the
        # engine last ran on: a task current there is this one, on a running loop. Only
        # a run on another loop (the first, a new loop since) asks for the running one.
        loop = engine.loop
        task = None if loop is None else asyncio.current_task(loop)
        if loop is None or task is None:
            loop = engine.loop = asyncio.get_running_loop()
            task = asyncio.current_task(loop)  # (with its loop: no second getpid)
        self.loop = loop
        self.task = task
        defaults = workflow.definition.inputs
        given = state.inputs
        # The definition's defaults under what was given; with no defaults, the state's
        # own dict as it is (submit copied the client's): no second copy per run.
        inputs = (
            {**defaults, **(given or {})} if defaults else given if given is not None else {}
        )
        state.inputs = inputs
        self.scope: dict[str, Any] = {INPUTS: inputs}
        # What nodes see of it: one read-only view for the whole run.
        self.scope_view = MappingProxyType(self.scope)
        self.unavailable: set[str] = set()
        self.failed: set[str] = set()
        self.skipped: set[str] = set()
        self.running: dict[asyncio.Task[_Outcome], str] = {}
        # Node tasks that finished and are not settled yet, in finishing order; the
        # scheduler sleeps on `wakeup` until one arrives (or the deadline timer fires).
        self.finished: list[asyncio.Task[_Outcome]] = []
        self.wakeup: asyncio.Future[None] | None = None
        self.timed_out = False
        # The deadline's timer: one for the whole run, armed when it first waits for node
        # tasks (`_wait_one`, the only reader of `timed_out`). Inline nodes are bounded by
        # their own cap, so a run that never waits for a task (a chain) arms none.
        self.timer: asyncio.TimerHandle | None = None
        self.runnable: deque[str] = deque()
        self.degraded = False
        self.deadline: float | None = None
        self.caps = engine.caps
        # Every expression, template and transform of this run spends from here.
        self.budget = Budget.for_workflow(engine.limits)
        # Step outputs are measured once, when kept; templates reading them again are
        # charged from here without another walk.
        self.sizes = ValueSizes()
        # The node being dispatched or settled: where an escaping error is pinned.
        self.current: str | None = None
        # When nodes run inline, the last time this run made sure the loop had a turn,
        # and the loop's turn count then (`LoopTurns`: it moves once this task has waited;
        # a node that awaited I/O gave the loop a turn, and needs no turn of its own).
        self.yielded_at = self.loop.time()
        self.turns = engine.turns
        self.turn = self.turns.mark(self.loop)

    # -- bookkeeping -------------------------------------------------------------

    def emit(self, run: NodeRun | None = None, now: float | None = None) -> Awaitable[None] | None:
        """Record a transition (made at `now`, when the caller read the clock for it):
        `on_node(run)` now, and `on_transition`'s awaitable (its coroutine, handed back as
        it is: no frame of this method's own around it), or None when it has nothing to
        wait for. The hot paths await it only when there is one; the others go through
        `_emitted`."""
        self.state.updated_at = self.engine.clock() if now is None else now
        if run is not None and self.on_node is not None:
            self.on_node(run)
        return self.on_transition(self.state)

    async def _emitted(self, run: NodeRun | None = None) -> None:
        """`emit(run)`, awaited when it returns something to wait for."""
        pending = self.emit(run)
        if pending is not None:
            await pending

    async def _told(self) -> None:
        """`on_transition(state)`, awaited when it returns something to wait for."""
        pending = self.on_transition(self.state)
        if pending is not None:
            await pending

    def _init_runs(self) -> set[str]:
        """Fresh PENDING node runs, keeping the settled ones (completed, failed with
        `continue`, skipped) of a resumed run; returns those."""
        done: set[str] = set()
        previous = self.state.steps
        if not previous:
            # A first run (most): every node fresh, with no run to look up for each.
            self.state.steps = {
                node_id: NodeRun(node_id, cn.kind_name, cn.agent)
                for node_id, cn in self.workflow.nodes.items()
            }
            return done
        runs: dict[str, NodeRun] = {}
        for node_id, cn in self.workflow.nodes.items():
            old = previous.get(node_id)
            if old is not None and old.status in _SETTLED:
                runs[node_id] = old
                self.scope[node_id] = old.output
                self.degraded = self.degraded or old.fallback is not None
                if old.status is NodeStatus.FAILED:
                    self.failed.add(node_id)
                    self.unavailable.add(node_id)
                    self.degraded = True
                elif old.status is NodeStatus.SKIPPED:
                    self.skipped.add(node_id)
                    self.unavailable.add(node_id)
                done.add(node_id)
            else:
                # Positional (NodeRun's first three fields): one per node run.
                runs[node_id] = NodeRun(node_id, cn.kind_name, cn.agent)
        self.state.steps = runs
        return done

    def _skip(self, node_id: str, reason: str) -> None:
        run = self.state.steps[node_id]
        run.status = NodeStatus.SKIPPED
        run.skip_reason = reason
        run.finished_at = self.engine.clock()
        self.skipped.add(node_id)
        self.unavailable.add(node_id)
        self.scope[node_id] = None

    def _skip_reason(self, cn: CompiledNode) -> str | None:
        deps = self.workflow.dependencies[cn.id]
        if self.unavailable.isdisjoint(deps):
            # Every dependency succeeded (or there is none): every trigger rule is met.
            return None
        outcomes = {
            d: Outcome.FAILED
            if d in self.failed
            else Outcome.SKIPPED
            if d in self.skipped
            else Outcome.SUCCESS
            for d in deps
        }
        return unmet_reason(cn.trigger, deps, outcomes)

    # -- the scheduler -------------------------------------------------------------

    async def run(self) -> None:
        state = self.state
        done = self._init_runs()
        state.status = _WORKFLOW_RUNNING
        state.error = None
        state.finished_at = None
        timeout_s = self.options.timeout_s
        self.deadline = None if timeout_s is None else self.loop.time() + timeout_s
        pending = self.emit()
        if pending is not None:
            await pending
        sorter = ReadyTracker(self.workflow.dependencies, self.workflow.dependents)
        try:
            try:
                await self._schedule(sorter, done)
            except _Paused:
                state.status = WorkflowStatus.PAUSED
                await self._emitted()
                return
            except _StopWorkflow as stop:
                await self._abort("workflow failed")
                self._finish(WorkflowStatus.FAILED, stop.error)
            except _TimedOut:
                await self._abort("workflow timed out")
                timeout = self.options.timeout_s or 0.0
                self._finish(
                    WorkflowStatus.FAILED,
                    WorkflowError(
                        code="workflow_timeout",
                        message=f"workflow {self.workflow.name!r} timed out after {timeout:g} s",
                    ),
                )
            else:
                self._finish(_WORKFLOW_DEGRADED if self.degraded else _WORKFLOW_COMPLETED)
        except asyncio.CancelledError:
            await self._abort("workflow cancelled")
            if not state.status.is_terminal:
                state.status = WorkflowStatus.CANCELLED
                state.finished_at = self.engine.clock()
            await self._emit_final()
            raise
        finally:
            if self.timer is not None:
                self.timer.cancel()
            if self.running:  # (a chain's nodes ran inline: no task, no coroutine for none)
                await self._reap()
        await self._emit_final()

    async def crash(self, exc: Exception) -> None:
        state = self.state
        node_id = self.current
        log.error(
            "engine_internal_error",
            workflow_id=state.workflow_id,
            node=node_id,
            error=f"{type(exc).__name__}: {exc}",
            exc_info=exc,
        )
        terminal = state.status.is_terminal
        message = f"internal error: {type(exc).__name__}: {exc}"
        await self._abort("workflow failed")
        if not terminal:
            if node_id is not None and node_id in state.steps:
                run = state.steps[node_id]
                run.status = NodeStatus.FAILED
                run.finished_at = run.finished_at or self.engine.clock()
                run.error = NodeFailure(type="internal_error", message=message, agent=run.agent)
                message = f"node {node_id!r} failed: {message}"
            state.status = WorkflowStatus.FAILED
            state.error = WorkflowError(code="internal_error", message=message, step_id=node_id)
            state.result = None
            state.finished_at = self.engine.clock()
        try:
            await self._emit_final()
        except Exception:  # the lifecycle writes the terminal state itself when this fails
            log.warning("final_emit_failed", workflow_id=state.workflow_id, exc_info=True)

    async def _emit_final(self) -> None:
        # The terminal record must be written even if the task running us is cancelled
        # meanwhile. It is written here, in this task (a task of its own for every
        # workflow cost a task, a shield and their turns of the loop); a cancel that
        # interrupts it has it written again in a task of its own, shielded, and then
        # goes on. Writing it again is safe: the transition callback is told the same
        # terminal state, and a store keeps the first terminal document it took.
        try:
            pending = self.emit()
            if pending is not None:
                await pending
        except asyncio.CancelledError:
            await asyncio.shield(asyncio.ensure_future(self._emitted()))
            raise

    async def _schedule(self, sorter: ReadyTracker, done: set[str]) -> None:
        while sorter.is_active():
            for node_id in sorter.get_ready():
                if node_id in done:
                    sorter.done(node_id)
                    continue
                # With no node failed or skipped (most runs) every trigger rule is met:
                # no call per node to find no reason.
                reason = (
                    self._skip_reason(self.workflow.nodes[node_id]) if self.unavailable else None
                )
                if reason is None:
                    self.runnable.append(node_id)
                    continue
                self._skip(node_id, reason)
                sorter.done(node_id)
                await self._emitted(self.state.steps[node_id])
            if not self.pause_requested():
                await self._dispatch(sorter)
            elif self.runnable and not self.running:
                raise _Paused
            # With nothing running, the nodes settled above released new ready ones.
            if self.running:
                await self._wait_one(sorter)

    async def _dispatch(self, sorter: ReadyTracker) -> None:
        # Node tasks started since the last `on_transition`: a burst of starts (a
        # fan-out's branches) is told to `on_node` one by one, in order, and handed to
        # `on_transition` once, before anything here can wait. Its awaitable does not
        # give the loop a turn between starts, so nothing could observe the states
        # in between: one call per burst is what one call per start showed.
        untold = False
        while self.runnable and len(self.running) < self.options.max_parallel:
            node_id = self.runnable.popleft()
            self.current = node_id
            cn = self.workflow.nodes[node_id]
            ctx = self._context(cn, self._node_deadline(cn))
            pre_error: NodeError | None = None
            if untold and (cn.when is not None or self.before_start is not None):
                untold = False
                await self._told()
            if cn.when is not None:
                try:
                    go = await self._until_deadline(
                        ctx.compute(functools.partial(ctx.evaluate, cn.when))
                    )
                except NodeError as exc:
                    pre_error = NodeError(
                        f"node {node_id!r}: 'when': {exc}", code=exc.code, node_id=node_id
                    )
                else:
                    if not go:
                        self._skip(node_id, f"'when' is false: {cn.node.when}")
                        sorter.done(node_id)
                        await self._emitted(self.state.steps[node_id])
                        continue
            if self.before_start is not None:
                await self.before_start()
            run = self.state.steps[node_id]
            run.status = _NODE_RUNNING
            # One reading of the clock: the node's start is the state's last change.
            now = run.started_at = self.engine.clock()
            if not self.running and not self.runnable:
                # The only node that can run now (a chain's every node, a fan-out's root
                # and join): run it in this task. A task of its own would buy nothing but
                # a task, a wake-up and a turn of the loop per node.
                pending = self.emit(run, now)
                if pending is not None:
                    await pending
                await self._run_inline(cn, ctx, pre_error, sorter)
                continue
            # The node's own task, in a context whose every log line carries the node and
            # its agent (`attempt` 0 until the agent client makes one): set here, in the
            # copy the task runs in, not by a coroutine of its own around the node. Made
            # on the run's loop (`asyncio.create_task` would ask for the running loop: a
            # getpid system call per node task).
            context = contextvars.copy_context()
            context.run(log_node.set, (node_id, cn.agent))
            task = self.loop.create_task(
                self._node(cn, ctx, pre_error), name=f"dag:{node_id}", context=context
            )
            task.add_done_callback(self._node_done)
            self.running[task] = node_id
            # emit(run), its on_transition deferred to the end of the burst (above).
            self.state.updated_at = now
            if self.on_node is not None:
                self.on_node(run)
            untold = True
        if untold:
            await self._told()
        self.current = None

    async def _run_inline(
        self,
        cn: CompiledNode,
        ctx: NodeContext,
        pre_error: NodeError | None,
        sorter: ReadyTracker,
    ) -> None:
        """Run one node in the workflow's own task, then settle it as `_wait_one` does.

        Everything a node task has holds here too: its log lines carry its node and
        agent (bound for the node, then reset); the workflow's deadline ends it
        (_TimedOut, as the deadline timer does for node tasks); cancelling the
        workflow's task cancels the node where it is, and `_run` records it.
        """
        node_id = cn.id
        # A tuple of this node run's own: attempts logged in an earlier node are not this
        # one's (agents/observe.py), so log_attempt needs no set and reset per node.
        node_token = log_node.set((node_id, cn.agent))
        try:
            if self.deadline is None:
                outcome = await self._node(cn, ctx, pre_error)
            elif self._ends_in_time(cn, ctx, pre_error):
                # No cap: the node ends before the workflow's deadline could come.
                outcome = await self._agent_node(cn, ctx, capped=False)
            else:
                # _until_deadline, written out: one coroutine less around every node.
                cap = self.caps.start_at(self.deadline, task=self.task)
                try:
                    outcome = await self._node(cn, ctx, pre_error)
                except BaseException as exc:
                    if cap.stop(exc):
                        raise _TimedOut from None
                    raise
                cap.stop(None)
        finally:
            log_node.reset(node_token)
        self.current = node_id
        try:
            # How it ended, told to `on_node`, then to `on_transition` (its awaitable).
            self._settled(node_id, outcome)
            pending = self.on_transition(self.state)
            if pending is not None:
                await pending
        finally:
            sorter.done(node_id)
        self.current = None
        if not sorter.is_active():
            # The last node: the terminal transition is next. A turn of the loop here
            # would only let the write-behind save a state about to be final, once more.
            return
        now = self.loop.time()
        if now - self.yielded_at >= _INLINE_TURN_S:
            # Nodes that never wait (transforms, conditions) would otherwise run a whole
            # chain in one turn of the loop, and nothing else (health checks, other
            # workflows) would run meanwhile: a node task always gave the loop a turn.
            # A node that waited (an agent call) gave it one already: a turn more would
            # cost a resume of this task and, with the write-behind's delay at 0, a
            # state write more per node (the settled node, on its own).
            if self.turns.count == self.turn:  # no turn of the loop since the mark
                await asyncio.sleep(0)
                now = self.loop.time()
            self.yielded_at = now
            self.turn = self.turns.mark(self.loop)

    def _ends_in_time(
        self, cn: CompiledNode, ctx: NodeContext, pre_error: NodeError | None
    ) -> bool:
        """Whether an inline node ends by itself before the workflow's deadline, so the
        cap `_run_inline` arms for that deadline could never fire (one cap start and stop
        per node, ~3.7 K instructions, and the client's cap then nested in nothing): an
        agent node on the engine's own path, to an agent our client ends every call to by
        the node's deadline (`deadline_bound`), that deadline its own (`timeout_s` or the
        engine's `node_timeout_s`) and earlier than the workflow's by at least the grace a
        backstop allows a late timer, and no fallback (which would run after it, until
        its own timeout). The rest of the node is synchronous, but for an input rendered
        off the loop: `_agent_node` caps that path itself (`capped=False`)."""
        node_deadline = ctx.deadline
        deadline = self.deadline
        return (
            pre_error is None
            and node_deadline is not None
            and deadline is not None
            and node_deadline + _BACKSTOP_GRACE_S <= deadline
            and cn.node.fallback is None
            and type(cn.kind) is AgentKind
            and self.engine.tracer is None
            and cn.agent in self.engine.deadline_bound
        )

    async def _until_deadline(self, work: Awaitable[Any]) -> Any:
        """Await scheduler-side work (a `when`) under the workflow's deadline: _TimedOut."""
        if self.deadline is None:
            return await work
        cap = self.caps.start_at(self.deadline, task=self.task)
        try:
            result = await work
        except BaseException as exc:
            if cap.stop(exc):
                raise _TimedOut from None
            raise
        cap.stop(None)
        return result

    def _node_done(self, task: asyncio.Task[_Outcome]) -> None:
        self.finished.append(task)
        self._wake()

    def _on_deadline(self) -> None:
        self.timed_out = True
        self._wake()

    def _wake(self) -> None:
        wakeup = self.wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    async def _wait_one(self, sorter: ReadyTracker) -> None:
        # Cheaper than asyncio.wait(FIRST_COMPLETED), which adds and removes a callback
        # on every running task (and arms a timer) each time it is called.
        if self.timer is None and self.deadline is not None:
            if self.loop.time() >= self.deadline:
                self.timed_out = True  # what the timer, armed at the start, had said
            self.timer = self.loop.call_at(self.deadline, self._on_deadline)
        if not self.finished and not self.timed_out:
            self.wakeup = self.loop.create_future()
            try:
                await self.wakeup
            finally:
                self.wakeup = None
        finished = [t for t in self.finished if t in self.running]
        self.finished.clear()
        if not finished:
            if self.timed_out:
                raise _TimedOut
            return
        # Settle in definition order so transitions are recorded deterministically, and
        # all of them: a node that finished with the one that stops the workflow keeps
        # its result. Each settle is told to `on_node` as it is made, and all of them to
        # `on_transition` once, after the last (as a burst of starts is: nothing can
        # run between them, so a call each showed nothing more).
        stop: _StopWorkflow | None = None
        untold = False
        for task in sorted(finished, key=lambda t: self.workflow.nodes[self.running[t]].index):
            node_id = self.running.pop(task)
            self.current = node_id
            try:
                self._settled(node_id, task.result())
                untold = True
            except _StopWorkflow as exc:
                stop = stop or exc
            sorter.done(node_id)
        if untold:
            pending = self.on_transition(self.state)
            if pending is not None:
                await pending
        self.current = None
        if stop is not None:
            raise stop

    def _settled(self, node_id: str, outcome: _Outcome) -> None:
        """Record how a node ended, told to `on_node` (`on_transition` is the caller's);
        raises _StopWorkflow, without telling, for a failure that stops the workflow."""
        run = self.state.steps[node_id]
        # One reading of the clock: the node's end is the state's last change.
        now = run.finished_at = self.engine.clock()
        run.attempts = outcome.attempts
        if outcome.agent is not None:
            run.agent = run.agent or outcome.agent
        error = outcome.error
        if error is not None:
            run.error = NodeFailure(
                type=error_code(error),
                message=error_message(error),
                agent=outcome.agent,
                attempts=outcome.attempts,
                input=outcome.input,
            )
        if error is None or outcome.fallback is not None:  # not `outcome.failed`'s call
            run.status = _NODE_COMPLETED
            run.output = outcome.output
            run.fallback = outcome.fallback
            self.scope[node_id] = outcome.output
            self.degraded = self.degraded or outcome.fallback is not None
            # emit(run) without its on_transition: the caller's.
            self.state.updated_at = now
            if self.on_node is not None:
                self.on_node(run)
            return
        run.status = NodeStatus.FAILED
        self.failed.add(node_id)
        self.unavailable.add(node_id)
        self.scope[node_id] = None
        log.info(
            "node_failed",
            # Settled in the workflow's task, not the node's: its context is given here.
            workflow_id=self.state.workflow_id,
            node=node_id,
            agent=outcome.agent,
            attempt=outcome.attempts,
            error=error_code(error),
        )
        cn = self.workflow.nodes[node_id]
        if cn.node.effective_on_failure(self.options) is OnFailure.CONTINUE:
            self.degraded = True
            self.state.updated_at = now
            if self.on_node is not None:
                self.on_node(run)
            return
        agent = outcome.agent
        on_agent = f" (agent {agent!r})" if agent else ""
        raise _StopWorkflow(
            WorkflowError(
                code=error_code(error),
                message=f"node {node_id!r}{on_agent} failed: {error_message(error)}",
                step_id=node_id,
                agent=agent,
            )
        )

    # -- one node --------------------------------------------------------------------

    def _context(self, cn: CompiledNode, deadline: float | None) -> NodeContext:
        engine = self.engine
        limits = engine.limits
        # Positional, in NodeContext's field order (mypy checks each type): one per node
        # run, and twelve keywords cost it twice the time.
        return NodeContext(
            self.state.workflow_id,
            cn.node,
            cn.compiled,
            self.scope_view,
            self.unavailable,
            engine.agents,
            engine.registry,
            deadline,
            None,  # input: the kind sets it
            0,  # attempts
            cn.agent,
            self.budget.child(limits),
            limits,
            self.sizes,
        )

    def _timeout_s(self, cn: CompiledNode) -> float | None:
        return cn.node.timeout_s if cn.node.timeout_s is not None else self.engine.node_timeout_s

    def _node_deadline(self, cn: CompiledNode) -> float | None:
        timeout_s = cn.node.timeout_s  # _timeout_s, written out (once per node)
        if timeout_s is None:
            timeout_s = self.engine.node_timeout_s
            if timeout_s is None:
                return self.deadline
        own = self.loop.time() + timeout_s
        return own if self.deadline is None else min(self.deadline, own)

    def _node(
        self, cn: CompiledNode, ctx: NodeContext, pre_error: NodeError | None
    ) -> Coroutine[Any, Any, _Outcome]:
        # The node's coroutine, in a span only when there is a tracer: without one a
        # layer that only passes the node through would wrap every node.
        tracer = self.engine.tracer
        if tracer is None:
            if pre_error is None and type(cn.kind) is AgentKind:
                return self._agent_node(cn, ctx)
            return self._execute_node(cn, ctx, pre_error)
        return self._traced(tracer, cn, ctx, pre_error)

    async def _traced(
        self, tracer: Tracer, cn: CompiledNode, ctx: NodeContext, pre_error: NodeError | None
    ) -> _Outcome:
        """The node, in a span `node <id>`."""
        attributes = {"workflow.id": self.state.workflow_id, "node": cn.id, "kind": cn.node.kind}
        if cn.agent is not None:
            attributes["agent"] = cn.agent
        with tracer.start_as_current_span(f"node {cn.id}", attributes=attributes) as span:
            if pre_error is None and type(cn.kind) is AgentKind:
                outcome = await self._agent_node(cn, ctx)
            else:
                outcome = await self._execute_node(cn, ctx, pre_error)
            status = "failed" if outcome.failed else "completed"
            span.set_attribute("node.status", "fell_back" if outcome.fallback else status)
            span.set_attribute("node.attempts", outcome.attempts)
            if outcome.error is not None:
                span.set_attribute("error.type", error_code(outcome.error))
            return outcome

    async def _agent_node(
        self, cn: CompiledNode, ctx: NodeContext, *, capped: bool = True
    ) -> _Outcome:
        """An agent node (the engine's own kind): `_execute_node`, `AgentKind.run` and
        `NodeContext.call_agent` written out in one frame, calling the agent client
        directly. Per agent node that is one coroutine fewer (and a resume fewer per
        wait for an answer) and five calls fewer. What it does is theirs, step for step
        (tests/orchestrator/dag/test_agent_node_path.py runs the same definitions both
        ways); an input that renders to no object, or too big to render inline, takes
        their path. `capped` False: the caller armed no cap for the workflow's deadline
        (`_ends_in_time`); their path, which may render off the loop, is capped here."""
        params = cn.compiled
        assert isinstance(params, AgentParams)  # AgentKind.compile made it
        node = cn.node
        try:
            ctx.agent = agent = params.agent
            template = params.input
            assert template is not None
            # NodeContext.inline(partial(ctx.render, template)), written out.
            budget = ctx.budget
            limits = ctx.limits
            budget.inline(limits.inline_ops, limits.inline_bytes)
            try:
                payload = ctx.render(template)
            except NeedsOffload:
                payload = _OFFLOAD
            finally:
                budget.offloaded()
            if type(payload) is not dict:
                # Rendered off the loop, or not an object: the kind's own path.
                return await self._kind_path(cn, ctx, params, payload, capped=capped)
            ctx.input = payload
            retry = params.retry
            call = self.engine.agents.call(
                agent,
                payload,
                workflow_id=ctx.workflow_id,
                node_id=node.id,
                retry=ctx.retry_for(agent, retry) if retry else None,
                timeout_s=None,
                deadline=ctx.deadline,
            )
            timeout_s = node.timeout_s
            if timeout_s is None:
                timeout_s = self.engine.node_timeout_s
            try:
                if timeout_s is None or agent in self.engine.deadline_bound:
                    # No backstop: no timeout, or the client ends the call by ctx.deadline
                    # (the node's timeout, or the workflow's deadline if nearer) with its
                    # own AgentTimeout, before a backstop `_BACKSTOP_GRACE_S` later could.
                    result = await call
                else:
                    cap = self.caps.start(timeout_s + _BACKSTOP_GRACE_S)
                    try:
                        result = await call
                    except BaseException as exc:
                        if cap.stop(exc):
                            raise NodeTimeout(
                                node_id=cn.id, timeout_s=timeout_s, agent=agent
                            ) from exc
                        raise
                    cap.stop(None)
            except AgentError as exc:
                ctx.attempts += exc.attempts
                raise
            ctx.attempts += result.attempts
            output = self._answer_kept(cn, ctx, result)
            return _Outcome(output=output, input=payload, attempts=ctx.attempts, agent=agent)
        except _TimedOut:
            raise  # (`capped` False: the workflow's deadline, from `_until_deadline`)
        except Exception as exc:  # any failure of the node is the node's, never the engine's
            error: BaseException = exc
        if node.fallback is None:
            return _Outcome(error=error, input=ctx.input, attempts=ctx.attempts, agent=ctx.agent)
        return await self._fallback(cn, ctx, error)

    def _kind_path(
        self, cn: CompiledNode, ctx: NodeContext, params: AgentParams, payload: Any, *, capped: bool
    ) -> Awaitable[_Outcome]:
        """`_agent_node`'s input rendered off the loop (`_OFFLOAD`), or to no object: the
        node on the agent kind's own path, under the workflow's deadline unless `capped`
        (the caller's cap bounds it)."""
        kind = cn.kind
        assert isinstance(kind, AgentKind)
        work: Awaitable[Any]
        if payload is _OFFLOAD:
            work = kind.offloaded(cn.node, ctx, params)
        else:
            work = kind.call(cn.node, ctx, params, payload)
        node_run = self._execute_node(cn, ctx, None, work)
        if capped:
            return node_run
        outcome: Awaitable[_Outcome] = self._until_deadline(node_run)
        return outcome

    def _answer_kept(self, cn: CompiledNode, ctx: NodeContext, result: AgentCallResult) -> Any:
        """An agent's answer as `call_agent` hands it back, kept as `_execute_node` keeps
        an output: without a walk when our client decoded it within bounds."""
        if type(result) is ClientResult:
            # Our client's `data` is a dict of its own, fresh from the JSON decoder.
            output = ctx.answer = result.data
            source = ctx.source = result.source
        else:
            output = ctx.answer = dict(result.data)
            source = ctx.source = None
        # _as_decoded, written out (the answer is the output, the kind is AgentKind).
        if source is None or not decoded_within(source, max_bytes=self.engine.limits.node_bytes):
            return self._storable(cn, output)
        if cn.id in self.workflow.read:
            # Templates read its parts: each is measured when first read instead.
            self.sizes.adopt(output)
        return output

    async def _execute_node(
        self,
        cn: CompiledNode,
        ctx: NodeContext,
        pre_error: NodeError | None,
        work: Awaitable[Any] | None = None,
    ) -> _Outcome:
        try:
            if pre_error is not None:
                raise pre_error
            node = cn.node
            if work is None:
                work = cn.kind.run(node, ctx)
            # _bounded (and _timeout_s), written out: one coroutine less around every node.
            timeout_s = node.timeout_s
            if timeout_s is None:
                timeout_s = self.engine.node_timeout_s
            if timeout_s is None:
                output = await work
            else:
                cap = self.caps.start(timeout_s + _BACKSTOP_GRACE_S)
                try:
                    output = await work
                except BaseException as exc:
                    if cap.stop(exc):
                        raise NodeTimeout(
                            node_id=cn.id, timeout_s=timeout_s, agent=ctx.agent
                        ) from exc
                    raise
                cap.stop(None)
            if not self._as_decoded(cn, ctx, output):
                output = self._storable(cn, output)
            elif cn.id in self.workflow.read:
                # Templates read its parts: each is measured when first read instead.
                self.sizes.adopt(output)
            return _Outcome(output=output, input=ctx.input, attempts=ctx.attempts, agent=ctx.agent)
        except Exception as exc:  # any failure of the node is the node's, never the engine's
            error: BaseException = exc
        if cn.node.fallback is None:
            return _Outcome(error=error, input=ctx.input, attempts=ctx.attempts, agent=ctx.agent)
        return await self._fallback(cn, ctx, error)

    async def _fallback(self, cn: CompiledNode, ctx: NodeContext, error: BaseException) -> _Outcome:
        fb = cn.node.fallback
        assert fb is not None
        reason = error_message(error)
        node_input = ctx.input
        try:
            if fb.kind is FallbackKind.VALUE:
                output = copy.deepcopy(fb.value)
            elif fb.kind is FallbackKind.BUILTIN:
                builtin = self.engine.builtins[str(fb.target)]
                arg = node_input if isinstance(node_input, Mapping) else {"value": node_input}
                output = await self._bounded(cn, ctx, builtin(arg))
            else:
                payload = ctx.render(cn.fallback_input) if cn.fallback_input else node_input
                if not isinstance(payload, Mapping):
                    payload = {}
                ctx.deadline = self._node_deadline(cn)
                output = await self._bounded(cn, ctx, ctx.call_agent(str(fb.target), payload))
            output = self._storable(cn, output)
        except Exception as fb_exc:
            failure = NodeError(
                f"{reason}; fallback failed: {error_message(fb_exc)}",
                code=error_code(error),
                node_id=cn.id,
                agent=ctx.agent,
            )
            return _Outcome(
                error=failure, input=node_input, attempts=ctx.attempts, agent=_agent_of(error, ctx)
            )
        return _Outcome(
            output=output,
            error=error,
            fallback=reason,
            input=node_input,
            attempts=ctx.attempts,
            agent=_agent_of(error, ctx),
        )

    def _as_decoded(self, cn: CompiledNode, ctx: NodeContext, output: Any) -> bool:
        """Whether an agent node's output can be kept without the walk `_storable` makes:
        it is the answer as our client decoded it, within bounds that make it storable
        as it is (values.decoded_within). The sizes that walk would remember are found
        when a template first reads a part (ValueSizes.adopt, learn); a part no template
        reads (a sink's, most of an answer) is never walked at all."""
        source = ctx.source
        return (
            source is not None
            and output is ctx.answer
            and isinstance(cn.kind, AgentKind)
            and decoded_within(source, max_bytes=self.engine.limits.node_bytes)
        )

    def _storable(self, cn: CompiledNode, output: Any) -> Any:
        """A node's output as JSON both stores can carry (orchestrator.dag.values), or its
        error; its size is remembered for the templates that read it later."""
        try:
            return self.sizes.keep(output, max_bytes=self.engine.limits.node_bytes)
        except UnstorableValue as exc:
            raise NodeError(f"node {cn.id!r}: output: {exc}", code=exc.code, node_id=cn.id) from exc

    async def _bounded(self, cn: CompiledNode, ctx: NodeContext, work: Awaitable[Any]) -> Any:
        """Await `work` under the node's timeout_s (if any); NodeTimeout when it runs out.

        Agent calls get the same deadline (NodeContext.deadline) and end themselves at
        it with an AgentTimeout that counts their attempts; this bound, a moment later,
        is the backstop for work that does not watch the deadline.
        """
        timeout_s = self._timeout_s(cn)
        if timeout_s is None:
            return await work
        cap = self.caps.start(timeout_s + _BACKSTOP_GRACE_S)
        try:
            result = await work
        except BaseException as exc:
            if cap.stop(exc):
                raise NodeTimeout(node_id=cn.id, timeout_s=timeout_s, agent=ctx.agent) from exc
            raise
        cap.stop(None)
        return result

    # -- endings -----------------------------------------------------------------------

    async def _reap(self) -> None:
        """Cancel and await every node task still running: none outlives the run."""
        tasks = list(self.running)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self.running.clear()

    async def _abort(self, reason: str) -> None:
        """Cancel every running node; every node that has not finished is CANCELLED."""
        await self._reap()
        now = self.engine.clock()
        for run in self.state.steps.values():
            if run.status is NodeStatus.RUNNING:
                run.status = NodeStatus.CANCELLED
                run.finished_at = now
            elif run.status is NodeStatus.PENDING:
                run.status = NodeStatus.CANCELLED
                run.skip_reason = reason

    def _finish(self, status: WorkflowStatus, error: WorkflowError | None = None) -> None:
        state = self.state
        try:
            state.result = self._result()
        except _OutputError as exc:
            state.result = None
            status = WorkflowStatus.FAILED
            error = error or WorkflowError(
                code="output_error", message=f"the workflow's output could not be built: {exc}"
            )
        state.status = status
        state.error = error
        state.finished_at = self.engine.clock()

    def _result(self) -> Any:
        template = self.workflow.output
        if template is None:
            return {sink: self.scope.get(sink) for sink in self.workflow.sinks}
        # The output template spends from what is left of the workflow's budget, and its
        # result crosses the same boundary as every node output.
        budget = Budget(
            ops=max(0, self.budget.ops_left),
            nbytes=max(0, self.budget.bytes_left),
            scope="workflow",
        )
        try:
            # render, then json_value: the walk skipped when the render proves it needless.
            return template.render_json(
                self.scope,
                missing="null",
                budget=budget,
                sizes=self.sizes,
                max_bytes=self.engine.limits.workflow_bytes,
            )
        except (BudgetExceeded, UnstorableValue) as exc:
            raise _OutputError(str(exc)) from exc


def _agent_of(error: BaseException, ctx: NodeContext) -> str | None:
    if isinstance(error, AgentError):
        return error.agent
    return ctx.agent
