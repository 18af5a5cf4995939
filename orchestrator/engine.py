"""WorkflowOrchestrator: accept a compiled workflow, run it to a terminal state, cancel it.

Each accepted workflow runs in its own task, detached from the request that
started it: a client that disconnects from a sync request does not stop the
workflow, and every accepted workflow reaches a terminal state that is written
to the store. Cancellation reaches the task from any replica through the store
(flag + pub/sub), with a periodic flag check as a safety net for a missed message.

With a `LeaseStore`, the replica running a workflow holds its lease and renews it
(heartbeat). Every replica periodically looks for orphans — workflows whose
owner stopped renewing, i.e. died — claims them and resumes them from their last
written state: completed steps are kept, the rest run again. A replica that finds
it lost a lease (it was presumed dead) stops that workflow and writes nothing more.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog
from opentelemetry.trace import Tracer

from agents.observe import retry_listener
from orchestrator.dag.runner import DagRunner
from orchestrator.dag.validate import CompiledWorkflow
from orchestrator.errors import WorkflowAlreadyFinished, WorkflowNotFound
from orchestrator.events import EventRecorder
from orchestrator.metrics import WorkflowMetrics
from orchestrator.state_writer import StateWriter
from state.leases import LeaseStore
from state.models import StepStatus, WorkflowError, WorkflowState, WorkflowStatus
from state.store import StateStore

# How a resumed workflow finds its compiled definition again.
DefinitionResolver = Callable[[WorkflowState], CompiledWorkflow]

log = structlog.get_logger(__name__)

# Finished workflows this replica remembers for the ops page (GET /api/ops/workflows).
RECENT_WORKFLOWS = 50

# How often a replica re-reads the cancel flags of the workflows it runs, in case a
# pub/sub message was lost (e.g. during a Redis reconnect).
_CANCEL_POLL_S = 1.0
# How long a cancel request waits for the workflow to reach its terminal state.
_CANCEL_WAIT_S = 5.0
_TERMINAL_WRITE_ATTEMPTS = 5


@dataclass(slots=True)
class _Running:
    task: asyncio.Task[None]
    state: WorkflowState
    # Set when another replica took the lease over: this one must write nothing more.
    fenced: bool = False


class WorkflowOrchestrator:
    def __init__(
        self,
        *,
        store: StateStore,
        runner: DagRunner,
        metrics: WorkflowMetrics | None = None,
        replica_id: str | None = None,
        shutdown_grace_s: float = 5.0,
        leases: LeaseStore | None = None,
        lease_s: float = 15.0,
        resolve: DefinitionResolver | None = None,
        handoff_on_shutdown: bool = False,
        tracer: Tracer | None = None,
    ) -> None:
        self.store = store
        self._tracer = tracer
        self.runner = runner
        self.metrics = metrics or WorkflowMetrics()
        self.replica_id = replica_id or uuid.uuid4().hex[:12]
        self._shutdown_grace_s = shutdown_grace_s
        self._leases = leases
        self._lease_s = lease_s
        self._resolve = resolve
        # With shared leases, a replica shutting down leaves its unfinished workflows
        # to the others (their leases lapse and they resume them) instead of cancelling.
        self._handoff = handoff_on_shutdown and leases is not None
        self._running: dict[str, _Running] = {}
        self._recent: deque[WorkflowState] = deque(maxlen=RECENT_WORKFLOWS)
        self._background: list[asyncio.Task[None]] = []
        # Writes owed by workflows whose task was cancelled before its body could run.
        self._finishers: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        cancellations = await self.store.subscribe_cancellations()

        async def listen() -> None:
            async for workflow_id in cancellations:
                self._cancel_local(workflow_id, reason="cancel requested")

        self._background = [
            asyncio.create_task(listen(), name="cancel-listener"),
            asyncio.create_task(self._poll_cancel_flags(), name="cancel-poller"),
        ]
        if self._leases is not None:
            self._background += [
                asyncio.create_task(self._heartbeat(self._leases), name="lease-heartbeat"),
                asyncio.create_task(self._reconcile_forever(), name="reconciler"),
            ]

    async def close(self) -> None:
        """Let running workflows finish for a grace period, then cancel the rest."""
        tasks = [r.task for r in self._running.values()]
        if tasks:
            await asyncio.wait(tasks, timeout=self._shutdown_grace_s)
        for workflow_id, running in list(self._running.items()):
            if self._handoff:
                log.info("workflow_handed_off", workflow_id=workflow_id)
                running.fenced = True
                running.task.cancel()
            else:
                self._cancel_local(workflow_id, reason="replica shutting down")
        if tasks:
            await asyncio.wait(tasks)
        if self._finishers:
            await asyncio.wait(list(self._finishers))
        for task in self._background:
            task.cancel()
        for task in self._background:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @property
    def running(self) -> Mapping[str, WorkflowState]:
        return {wid: r.state for wid, r in self._running.items()}

    @property
    def recent(self) -> list[WorkflowState]:
        """The last workflows this replica finished, newest first (at most RECENT_WORKFLOWS)."""
        return list(self._recent)

    async def submit(
        self,
        workflow: CompiledWorkflow,
        inputs: Mapping[str, Any],
        *,
        definition: Mapping[str, Any] | None = None,
    ) -> WorkflowState:
        """Accept a workflow: write its first state and start it. Returns at once.

        `definition` is the client's raw definition, kept in the state so another
        replica can resume the workflow; built-in workflows are found by name.
        """
        state = WorkflowState(
            workflow_id=uuid.uuid4().hex,
            definition_name=workflow.definition.name,
            inputs=dict(inputs),
            owner=self.replica_id,
            definition=dict(definition) if definition is not None else None,
        )
        await self.store.save(state)
        if self._leases is not None:
            await self._leases.claim(state.workflow_id, self.replica_id, lease_s=self._lease_s)
        self.metrics.record_started(state)
        self._start(workflow, state)
        return state

    def _start(self, workflow: CompiledWorkflow, state: WorkflowState) -> None:
        task = asyncio.create_task(self._run(workflow, state), name=f"workflow-{state.workflow_id}")
        running = _Running(task, state)
        self._running[state.workflow_id] = running
        task.add_done_callback(lambda _: self._on_done(running))

    def _on_done(self, running: _Running) -> None:
        self._running.pop(running.state.workflow_id, None)
        state = running.state
        if running.task.cancelled() and not running.fenced and not state.status.is_terminal:
            # Cancelled before `_run` got to run at all (same event-loop turn as submit):
            # its finally never ran, but the store is still owed a terminal state.
            _mark_cancelled(state)
            self._finish_later(state)

    def _finish_later(self, state: WorkflowState) -> None:
        """Write a terminal state that no workflow task will write (it never ran)."""

        async def finish() -> None:
            await self._persist(state)
            self.metrics.record_finished(state)
            self._recent.appendleft(state)
            await EventRecorder(self.store, state).finish(state)
            await self._release(state.workflow_id)

        finisher = asyncio.create_task(finish())
        self._finishers.add(finisher)
        finisher.add_done_callback(self._finishers.discard)

    async def wait(self, workflow_id: str) -> WorkflowState:
        """Wait for a workflow this replica runs; the caller's cancellation does not stop it."""
        running = self._running.get(workflow_id)
        if running is None:
            return await self.status(workflow_id)
        # shield: a client that disconnects cancels this wait, never the workflow.
        try:
            await asyncio.shield(running.task)
        except asyncio.CancelledError:
            if not running.task.cancelled():
                raise  # our caller went away
            # The workflow was cancelled before it started; _on_done marked it.
        return running.state

    async def status(self, workflow_id: str) -> WorkflowState:
        state = await self.store.get(workflow_id)
        if state is None:
            raise WorkflowNotFound(workflow_id)
        return state

    async def cancel(self, workflow_id: str) -> WorkflowState:
        """Cancel a workflow wherever it runs and return its state once it has stopped.

        Idempotent while it is running; a finished workflow raises WorkflowAlreadyFinished.
        """
        state = await self.status(workflow_id)
        if state.status.is_terminal:
            raise WorkflowAlreadyFinished(workflow_id, status=state.status)
        await self.store.request_cancel(workflow_id)
        running = self._running.get(workflow_id)
        if running is not None:
            self._cancel_local(workflow_id, reason="cancel requested")
            await asyncio.wait({running.task}, timeout=_CANCEL_WAIT_S)
            return running.state
        return await self._await_terminal(workflow_id)

    async def _await_terminal(self, workflow_id: str) -> WorkflowState:
        # Another replica runs it: its listener stops it; watch the document until it says so.
        deadline = time.monotonic() + _CANCEL_WAIT_S
        state = await self.status(workflow_id)
        while not state.status.is_terminal and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            state = await self.status(workflow_id)
        return state

    def _cancel_local(self, workflow_id: str, *, reason: str) -> None:
        running = self._running.get(workflow_id)
        if running is not None and not running.task.done() and not running.task.cancelling():
            log.info("workflow_cancelling", workflow_id=workflow_id, reason=reason)
            if reason != "cancel requested" and running.state.error is None:
                running.state.error = WorkflowError(code="replica_shutdown", message=reason)
            running.task.cancel()

    async def _poll_cancel_flags(self) -> None:
        while True:
            await asyncio.sleep(_CANCEL_POLL_S)
            for workflow_id in list(self._running):
                try:
                    if await self.store.cancel_requested(workflow_id):
                        self._cancel_local(workflow_id, reason="cancel requested")
                except Exception:  # a store hiccup must not kill the poller
                    log.warning("cancel_poll_failed", workflow_id=workflow_id, exc_info=True)

    async def _heartbeat(self, leases: LeaseStore) -> None:
        while True:
            await asyncio.sleep(self._lease_s / 3)
            ids = list(self._running)
            try:
                held = await leases.renew(ids, self.replica_id, lease_s=self._lease_s)
            except Exception:  # Redis away: keep running; the next beat tries again
                log.warning("lease_renew_failed", exc_info=True)
                continue
            for workflow_id in set(ids) - held:
                running = self._running.get(workflow_id)
                if running is not None and not running.state.status.is_terminal:
                    log.warning("lease_lost", workflow_id=workflow_id)
                    running.fenced = True
                    running.task.cancel()

    async def _reconcile_forever(self) -> None:
        while True:
            try:
                await self.reconcile()
            except Exception:
                log.warning("reconcile_failed", exc_info=True)
            await asyncio.sleep(self._lease_s / 2)

    async def reconcile(self) -> list[str]:
        """Claim and resume every orphaned workflow; returns the ids this replica took."""
        leases = self._leases
        if leases is None:
            return []
        taken: list[str] = []
        for workflow_id in await leases.orphans():
            if workflow_id in self._running:
                continue
            state = await self.store.get(workflow_id)
            if state is None or state.status.is_terminal:
                await leases.release(workflow_id, self.replica_id)  # stale index entry
                continue
            if not await leases.claim(workflow_id, self.replica_id, lease_s=self._lease_s):
                continue  # another replica was quicker
            taken.append(workflow_id)
            self._resume(state)
        return taken

    def _resume(self, state: WorkflowState) -> None:
        log.info("workflow_resuming", workflow_id=state.workflow_id, previous_owner=state.owner)
        state.owner = self.replica_id
        self.metrics.record_started(state)
        try:
            if self._resolve is None:
                raise LookupError("this replica cannot resolve definitions")
            workflow = self._resolve(state)
        except Exception as exc:  # e.g. the definition no longer validates here
            state.status = WorkflowStatus.FAILED
            state.error = WorkflowError(
                code="resume_failed", message=f"could not resume the workflow: {exc}"
            )
            state.finished_at = time.time()
            self._finish_later(state)
            return
        self._start(workflow, state)

    async def _run(self, workflow: CompiledWorkflow, state: WorkflowState) -> None:
        if self._tracer is None:
            await self._run_traced_or_not(workflow, state)
            return
        with self._tracer.start_as_current_span(
            "workflow",
            attributes={
                "workflow.id": state.workflow_id,
                "workflow.definition": state.definition_name,
            },
        ) as span:
            # Current in this task: the node tasks it spawns copy it, so nodes are children.
            try:
                await self._run_traced_or_not(workflow, state)
            finally:
                span.set_attribute("workflow.status", state.status.value)

    async def _run_traced_or_not(self, workflow: CompiledWorkflow, state: WorkflowState) -> None:
        # Bound once, in this workflow's own task: every line and every agent call made
        # from here on, in any node task it spawns, carries / reports to them.
        structlog.contextvars.bind_contextvars(workflow_id=state.workflow_id)
        writer = StateWriter(self._persist_unless_fenced, state)
        events = EventRecorder(self.store, state)
        retry_listener.set(events.retrying)

        async def on_transition(current: WorkflowState) -> None:
            events.workflow(current)
            writer.mark_dirty()
            if current.status.is_terminal:
                await writer.flush()

        try:
            if await self.store.cancel_requested(state.workflow_id):
                raise asyncio.CancelledError
            await self.runner.run(
                workflow, state, on_transition=on_transition, on_step=events.step
            )
        except asyncio.CancelledError:
            # The runner marks CANCELLED itself; this covers a cancel that arrived
            # before the runner started.
            if not state.status.is_terminal:
                _mark_cancelled(state)
        except Exception as exc:  # a bug in a node kind must still end the workflow
            log.exception("workflow_crashed")
            if not state.status.is_terminal:
                state.status = WorkflowStatus.FAILED
                state.error = WorkflowError(code="internal_error", message=f"internal error: {exc}")
                state.finished_at = time.time()
        finally:
            # The runner writes the terminal document itself; write it here only if it
            # did not (a cancel before the runner started, a crash, a failed write).
            if not writer.final:
                writer.mark_dirty()
                await writer.flush()
            if not self._is_fenced(state.workflow_id):
                self.metrics.record_finished(state)
                self._recent.appendleft(state)
                log.info("workflow_finished", status=state.status.value)
                # After the terminal document: a reader told "finished" finds it so.
                await events.finish(state)
                await self._release(state.workflow_id)

    async def _release(self, workflow_id: str) -> None:
        if self._leases is None:
            return
        try:
            await self._leases.release(workflow_id, self.replica_id)
        except Exception:  # the lease then lapses and the reconciler tidies the index
            log.warning("lease_release_failed", workflow_id=workflow_id, exc_info=True)

    def _is_fenced(self, workflow_id: str) -> bool:
        running = self._running.get(workflow_id)
        return running is not None and running.fenced

    async def _persist_unless_fenced(self, state: WorkflowState) -> bool:
        if self._is_fenced(state.workflow_id):
            return False
        return await self._persist(state)

    async def _persist(self, state: WorkflowState) -> bool:
        """Save `state`; True once the store holds it (or an already terminal copy)."""
        state.updated_at = time.time()
        attempts = _TERMINAL_WRITE_ATTEMPTS if state.status.is_terminal else 1
        for attempt in range(1, attempts + 1):
            try:
                # False: the stored copy is terminal already, which is just as final.
                await self.store.save(state)
                return True
            except Exception:
                log.warning("state_write_failed", attempt=attempt, exc_info=True)
                if attempt < attempts:
                    await asyncio.sleep(0.05 * 2**attempt)
        return False


def _mark_cancelled(state: WorkflowState) -> None:
    now = time.time()
    for step in state.steps.values():
        if step.status is StepStatus.RUNNING:
            step.status = StepStatus.CANCELLED
            step.finished_at = now
    state.status = WorkflowStatus.CANCELLED
    state.finished_at = now
