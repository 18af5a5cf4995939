"""WorkflowOrchestrator: accept a compiled workflow, run it to a terminal state, cancel it.

Each accepted workflow runs in its own task, detached from the request that
started it: a client that disconnects from a sync request does not stop the
workflow, and every accepted workflow reaches a terminal state that is written
to the store. Cancellation reaches the task from any replica through the store:
a flag plus a message addressed to the owner replica only (nothing polls; after
a lost subscription the store replays the flags of this replica's own workflows).

With a `LeaseStore`, the replica running a workflow owns it and beats one
heartbeat for all its workflows. Every replica periodically asks for orphans —
the workflows of replicas whose heartbeat lapsed, i.e. that died — claims them
and resumes them from their last written state: completed steps are kept, the
rest run again. Every write of the
document carries the lease token of the claim that took it (fencing): a replica
that was presumed dead gets `LeaseLost` from the store, stops that workflow and
writes nothing more, so the new owner's progress is never overwritten.

When the store is unreachable, workflows keep running and their writes are
retried with jittered backoff until it answers — the terminal one above all,
never dropped — while this replica answers status for the workflows it holds
from memory. Only a replica shutting down during the outage gives up its
pending writes, after its grace period; their leases then lapse and another
replica resumes those workflows from their last stored state.

Timing goes through an injected `Clock` (its `sleep`), so heartbeat, lease
expiry and reconcile are unit-tested on a fake clock without real time.

Pause: a flag in the store (set by any replica, read at once by the owner when
the request reached it, else by its flag poller); the DAG engine starts no new node
and, once the running ones end, writes PAUSED and returns; the owner releases
the lease, so no replica resumes it on its own. `resume` on any replica clears
the flag, takes the lease and runs it again from its settled steps.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal, Protocol, cast

import structlog
from opentelemetry.trace import Tracer

from agents.observe import retry_listener
from orchestrator.dag.compiler import CompiledWorkflow
from orchestrator.dag.engine import DagEngine
from orchestrator.errors import (
    IdempotencyKeyInProgress,
    IdempotencyKeyReused,
    WorkflowAlreadyFinished,
    WorkflowNotFound,
)
from orchestrator.events import Event, EventRecorder
from orchestrator.metrics import WorkflowMetrics
from orchestrator.settings import DEFAULTS
from orchestrator.state_writer import StateWriter
from orchestrator.write_behind import WriteBehind
from state.leases import LeaseStore
from state.models import NodeStatus, WorkflowError, WorkflowState, WorkflowStatus
from state.store import LeaseLost, StateStore, StateStoreError

# How a resumed workflow finds its compiled definition again.
DefinitionResolver = Callable[[WorkflowState], CompiledWorkflow]


log = structlog.get_logger(__name__)

# How long a cancel request waits for the workflow to reach its terminal state.
_CANCEL_WAIT_S = 5.0
# Each status's text: reading a StrEnum member's `.value` is a descriptor call each time.
_STATUS_TEXT = {status: status.value for status in WorkflowStatus}
# Backoff of a write the store did not take: full jitter, doubling, capped.
_WRITE_BACKOFF_BASE_S = 0.05
_WRITE_BACKOFF_CAP_S = 2.0


class Clock(Protocol):
    """Monotonic seconds, and a sleep on the same scale (tests pass a fake)."""

    def __call__(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def __call__(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


@dataclass(slots=True)
class _Running:
    state: WorkflowState
    # The lease generation this replica's writes carry (None: no leases in use).
    token: int | None
    # Set when another replica took the lease over: this one must write nothing more.
    fenced: bool = False
    # Clock time when the lease was last known to be ours (claim or renew).
    confirmed_at: float = 0.0
    # True while the store refuses this workflow's writes (an outage): they are retried.
    write_failing: bool = False
    # Set once the state is terminal in memory (its write may still be pending). A flag,
    # not a future: most workflows are never waited for by anyone but `wait`'s callers.
    finished: bool = False
    # One future per caller of `wait` (and of `cancel`), resolved when `finished` is set:
    # set directly, it wakes its caller on the next turn of the loop, and cancelling one
    # caller's future cancels nobody else's wait.
    waiters: list[asyncio.Future[None]] = field(default_factory=list)
    # Whether anyone ever waited: its answer goes before the finished run's housekeeping.
    waited: bool = False
    # The task running the workflow (`_start`), and its done callback: that one acts only
    # for a task cancelled before its body ran; a body that ran removes it (`_run`).
    task: asyncio.Task[None] = field(init=False)
    never_ran: Callable[[asyncio.Task[None]], None] = field(init=False)

    def mark_finished(self) -> None:
        if not self.finished:
            self.finished = True
            for waiter in self.waiters:
                if not waiter.done():
                    waiter.set_result(None)

    async def until_finished(self) -> None:
        """Wait until `finished` (`cancel`'s wait: it answers with no outcome to hurry)."""
        if self.finished:
            return
        # A future of this caller's own: a caller that goes away cancels this wait,
        # never the workflow (nor another caller's wait).
        waiter = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        try:
            await waiter
        finally:
            self.waiters.remove(waiter)


class WorkflowOrchestrator:
    def __init__(
        self,
        *,
        store: StateStore,
        dag_engine: DagEngine,
        metrics: WorkflowMetrics | None = None,
        replica_id: str | None = None,
        shutdown_grace_s: float = DEFAULTS.shutdown_grace_s,
        leases: LeaseStore | None = None,
        lease_s: float = DEFAULTS.lease_s,
        resolve: DefinitionResolver | None = None,
        handoff_on_shutdown: bool = False,
        clock: Clock | None = None,
        write_pace: float = 4.0,
        write_delay_s: float = DEFAULTS.state_write_delay_s,
        tracer: Tracer | None = None,
    ) -> None:
        self.store = store
        self._tracer = tracer
        # StateWriter pacing (see there): keeps writing linear in a workflow's size.
        self._write_pace = write_pace
        # StateWriter write-behind delay (see there): transitions of a burst coalesce.
        # Its default is the service's (Settings.state_write_delay_s): one source, and an
        # in-process engine coalesces its writes as the service does.
        self._write_delay_s = write_delay_s
        self.dag_engine = dag_engine
        self.metrics = metrics or WorkflowMetrics()
        self.replica_id = replica_id or uuid.uuid4().hex[:12]
        self._shutdown_grace_s = shutdown_grace_s
        self._leases = leases
        self._lease_s = lease_s
        self._resolve = resolve
        self._clock: Clock = clock if clock is not None else SystemClock()
        # With shared leases, a replica shutting down leaves its unfinished workflows
        # to the others (their leases lapse and they resume them) instead of cancelling.
        self._handoff = handoff_on_shutdown and leases is not None
        self._running: dict[str, _Running] = {}
        self.metrics.track_running(lambda: len(self._running))
        self._background: list[asyncio.Task[None]] = []
        # Writes owed by workflows whose task was cancelled before its body could run,
        # and control reads of workflows heard of while they were being accepted.
        self._finishers: set[asyncio.Future[Any]] = set()
        # Callers waiting for a workflow another replica runs to end (woken by pub/sub).
        self._finish_waiters: dict[str, set[asyncio.Future[None]]] = {}
        # Set at the end of shutdown: writes still failing then are abandoned.
        self._abandon_writes = False
        # One flusher for every workflow's writes behind (documents and events): a
        # transition costs a place in its queue, not a task of its own. A store whose
        # writes complete in turn has no exchange for writes to share: written one by one.
        self._write_behind = WriteBehind(together=not store.completes_in_turn)
        # Workflows this replica runs whose pause was requested (here or through the store).
        self._pausing: set[str] = set()
        # Workflows being accepted (`submit`, an id made here): whether a control message
        # (cancel, pause) for one came before its task existed.
        self._accepting: dict[str, bool] = {}
        # An in-process store (the memory store): its operations never suspend, so none
        # can be interrupted half-way and none has I/O to put behind a waiting answer.
        self._in_turn = store.completes_in_turn

    async def start(self) -> None:
        """Start listening and the background loops. Works with the store unreachable:
        the subscriptions connect and the loops retry once it answers."""
        cancellations = await self.store.subscribe_cancellations(self.replica_id)
        finishes = await self.store.subscribe_finishes()

        async def listen_cancels() -> None:
            # Messages say "look at this workflow's flags": cancel, pause and resume all
            # come this way, addressed to the owner only; nothing polls.
            async for workflow_id in cancellations:
                await self._on_control(workflow_id)

        async def listen_finishes() -> None:
            async for workflow_id in finishes:
                for waiter in self._finish_waiters.get(workflow_id, ()):
                    if not waiter.done():
                        waiter.set_result(None)

        self._background = [
            asyncio.create_task(listen_cancels(), name="cancel-listener"),
            asyncio.create_task(listen_finishes(), name="finish-listener"),
        ]
        if self._leases is not None:
            self._background += [
                asyncio.create_task(self._heartbeat(self._leases), name="lease-heartbeat"),
                asyncio.create_task(self._reconcile_forever(), name="reconciler"),
            ]

    async def close(self) -> None:
        """Let running workflows finish for a grace period, then hand off or cancel the rest."""
        tasks = [r.task for r in self._running.values()]
        if tasks:
            await asyncio.wait(tasks, timeout=self._shutdown_grace_s)
        for workflow_id, running in list(self._running.items()):
            if running.task.done():
                continue
            if self._handoff and not running.state.status.is_terminal:
                log.info("workflow_handed_off", workflow_id=workflow_id)
                running.fenced = True
                running.task.cancel()
            else:
                self._cancel_local(workflow_id, reason="replica shutting down")
        pending = [t for t in tasks if not t.done()] + list(self._finishers)
        if pending:
            await asyncio.wait(pending, timeout=self._shutdown_grace_s)
        # Whatever is still unwritten now waits on an unreachable store: give up on it
        # (the lease lapses and another replica resumes the workflow from its last write).
        self._abandon_writes = True
        pending = [t for t in tasks if not t.done()] + list(self._finishers)
        if pending:
            await asyncio.wait(pending)
        for task in self._background:
            task.cancel()
        for task in self._background:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @property
    def running(self) -> Mapping[str, WorkflowState]:
        return {wid: r.state for wid, r in self._running.items()}

    async def submit(
        self,
        workflow: CompiledWorkflow,
        inputs: Mapping[str, Any],
        *,
        definition: Mapping[str, Any] | None = None,
        schedule_id: str | None = None,
        tenant: str | None = None,
        workflow_id: str | None = None,
        submit_key: str | None = None,
    ) -> WorkflowState:
        """Accept a workflow: claim it, write its first state and start it. Returns at once.

        `definition` is the client's raw definition, kept in the state so another
        replica can resume the workflow; built-in workflows are found by name.
        Raises `StateStoreError` (nothing accepted) when the store cannot take it.
        `schedule_id` links a run to the schedule that started it.
        `tenant` is who submitted it (the API answers 404 to other tenants).
        """
        state = WorkflowState(
            workflow_id=workflow_id or new_workflow_id(),
            submit_key=submit_key,
            definition_name=workflow.definition.name,
            inputs=dict(inputs),
            owner=self.replica_id,
            definition=dict(definition) if definition is not None else None,
            schedule_id=schedule_id,
            tenant=tenant,
        )
        # The claim and the first document in one operation (one round trip on Redis):
        # a sync request waits on the store here and at the end only.
        lease_s = self._lease_s if self._leases is not None else None
        if self._in_turn:
            # Nothing suspends (`completes_in_turn`): no cancel of the caller can land in
            # the accept, and no control message can arrive before the task exists. An
            # id made here cannot have a cancel flag yet: nobody could name it before.
            token = await self.store.accept(state, lease_s=lease_s)
            cancelled = (
                await self._cancel_requested(state.workflow_id) if workflow_id is not None
                else False
            )
            self.metrics.record_started(state)
            self._start(workflow, state, token, cancelled=cancelled)
            return state
        if workflow_id is not None:
            # An id named before this accept (an Idempotency-Key's): a cancel may stand
            # already. Its flag is read in the same turn, so in the same round trip.
            token, cancelled = await asyncio.gather(
                self._accept(workflow, state, lease_s),
                self._cancel_requested(state.workflow_id),
            )
            self.metrics.record_started(state)
            self._start(workflow, state, token, cancelled=cancelled)
            return state
        # An id made here: nobody could name it, so nobody could cancel it, before the
        # accept wrote it; no flag to read. A control message for it that arrives while
        # the accept is answered is noted (`_on_control`) and acted on once it runs.
        # The accept runs in the workflow's own task (`_accept_then_run`), which goes on
        # to run it: carried through a cancel of this caller as `_accept` does, without
        # a task and a shield of its own.
        self._accepting[state.workflow_id] = False
        # One loop look-up for both (`asyncio.create_task` makes its own: a getpid each).
        loop = asyncio.get_running_loop()
        accepted: asyncio.Future[None] = loop.create_future()
        task = loop.create_task(
            self._accept_then_run(workflow, state, lease_s, accepted),
            name=f"workflow-{state.workflow_id}",
        )
        # Held, and waited for by close(), until it is a running workflow (`_running`).
        self._finishers.add(task)
        try:
            await accepted
        except asyncio.CancelledError:
            # Cancelled after the accept landed, before this caller resumed: the workflow
            # has not started (its task lets this caller go first), so it ends cancelled
            # as one whose caller went away mid-accept does.
            if accepted.done() and not accepted.cancelled() and accepted.exception() is None:
                task.cancel()
            raise
        return state

    async def _accept_then_run(
        self,
        workflow: CompiledWorkflow,
        state: WorkflowState,
        lease_s: float | None,
        accepted: asyncio.Future[None],
    ) -> None:
        """`submit`'s accept and then the workflow, in the workflow's task.

        `accepted` is the caller's: it learns the accept's outcome from it, and it is
        only that future, never this task, that a cancel of the caller cancels (aiohttp
        cancels a request's handler when its client goes away). Redis may take the
        write all the same, and a workflow accepted but run nowhere would stay pending
        until its TTL, so an accept that lands after its caller was cancelled starts
        the workflow cancelled, and it ends so at once, calling no agent: nobody was
        told its id.
        """
        # (Looked up on the caller's loop, the one this runs on: no getpid to find it.)
        task = cast("asyncio.Task[None]", asyncio.current_task(accepted.get_loop()))
        try:
            try:
                token = await self.store.accept(state, lease_s=lease_s)
            finally:
                heard = self._accepting.pop(state.workflow_id)
        except BaseException as exc:
            self._finishers.discard(task)
            if not accepted.done():
                if isinstance(exc, asyncio.CancelledError):
                    accepted.cancel()
                else:
                    accepted.set_exception(exc)
            if isinstance(exc, Exception):
                return  # told to the caller (or nothing was accepted for nobody)
            raise
        self.metrics.record_started(state)
        caller_gone = accepted.cancelled()
        if not caller_gone:
            accepted.set_result(None)
        running = self._enter(state, token)
        self._track(running, task)
        self._finishers.discard(task)
        if caller_gone:
            cancelled: bool | None = True
        else:
            # Heard of: this task reads the cancel flag before the first node, and the
            # control read (as the listener does for a running one) catches a pause too.
            cancelled = None if heard else False
            if heard:
                self._spawn_control(state.workflow_id)
            # The caller first, as when its workflow started in a task of its own: `submit`
            # returns the accepted state before anything runs (a 202 says pending), and
            # what the caller does in that turn (a cancel) finds the workflow not started.
            await asyncio.sleep(0)
        await self._body(workflow, running, cancelled)

    async def _accept(
        self, workflow: CompiledWorkflow, state: WorkflowState, lease_s: float | None
    ) -> int | None:
        """`store.accept`, carried through a cancel of the caller.

        The caller can be cancelled while the accept is on its way (aiohttp cancels a
        request's handler when its client goes away): Redis may take the write all the
        same, and a workflow accepted but run nowhere would stay pending until its TTL
        (no replica resumes a live replica's workflow). So the accept runs on in a task
        of its own; one that lands after its caller was cancelled starts cancelled and
        ends so at once, calling no agent: nobody was told its id.
        """
        accepting = asyncio.ensure_future(self.store.accept(state, lease_s=lease_s))
        try:
            return await asyncio.shield(accepting)
        except asyncio.CancelledError:

            def landed(done: asyncio.Future[int | None]) -> None:
                if done.cancelled() or done.exception() is not None:
                    return  # nothing was accepted (or the store cannot say: as before)
                self.metrics.record_started(state)
                self._start(workflow, state, done.result(), cancelled=True)

            accepting.add_done_callback(landed)
            # Held, and waited for by close(), like the other finishing work.
            self._finishers.add(accepting)
            accepting.add_done_callback(self._finishers.discard)
            raise

    def _spawn_control(self, workflow_id: str) -> None:
        task = asyncio.create_task(self._on_control(workflow_id))
        self._finishers.add(task)
        task.add_done_callback(self._finishers.discard)

    async def submit_once(
        self,
        idempotency_key: str,
        digest: str,
        workflow: CompiledWorkflow,
        inputs: Mapping[str, Any],
        *,
        definition: Mapping[str, Any] | None = None,
        tenant: str | None = None,
    ) -> tuple[WorkflowState, bool]:
        """`submit`, at most once per (tenant, Idempotency-Key), on any replica.

        Returns the workflow and whether it was already there (True: nothing new ran).
        `digest` identifies the request: the same key with another digest raises
        `IdempotencyKeyReused`; while the key's first submit has not stored its
        workflow yet, `IdempotencyKeyInProgress`.
        """
        workflow_id = new_workflow_id()
        found = await self.store.reserve_submit(
            tenant, idempotency_key, workflow_id=workflow_id, digest=digest
        )
        if found is not None:
            existing_id, existing_digest = found
            if existing_digest != digest:
                raise IdempotencyKeyReused(idempotency_key, workflow_id=existing_id)
            try:
                return await self.status(existing_id), True
            except WorkflowNotFound:
                raise IdempotencyKeyInProgress(
                    idempotency_key, workflow_id=existing_id
                ) from None
        try:
            state = await self.submit(
                workflow, inputs, definition=definition, tenant=tenant,
                workflow_id=workflow_id, submit_key=idempotency_key,
            )
        except BaseException:
            with contextlib.suppress(StateStoreError):
                await self.store.release_submit(tenant, idempotency_key, workflow_id=workflow_id)
            raise
        return state, False

    def _start(
        self,
        workflow: CompiledWorkflow,
        state: WorkflowState,
        token: int | None,
        *,
        cancelled: bool | None = None,
    ) -> None:
        """Run `workflow` in a task of its own; `cancelled`: its cancel flag, if already read."""
        running = self._enter(state, token)
        body = self._body(workflow, running, cancelled)
        self._track(running, asyncio.create_task(body, name=f"workflow-{state.workflow_id}"))

    def _track(self, running: _Running, task: asyncio.Task[None]) -> None:
        """`task` runs `running`. Until its body (`_run`) runs, a cancel of it ends the
        workflow as one that never ran: written cancelled by `_on_done`."""
        running.task = task
        running.never_ran = never_ran = lambda _: self._on_done(running, cancelled=True)
        task.add_done_callback(never_ran)

    def _enter(self, state: WorkflowState, token: int | None) -> _Running:
        """`state` as a running workflow of this replica (its caller sets its task)."""
        # Only the lease check reads `confirmed_at`: no clock call per run without leases.
        running = _Running(
            state, token, confirmed_at=self._clock() if self._leases is not None else 0.0
        )
        self._running[state.workflow_id] = running
        return running

    def _body(
        self, workflow: CompiledWorkflow, running: _Running, cancelled: bool | None
    ) -> Coroutine[Any, Any, None]:
        return (
            self._run(workflow, running, cancelled)
            if self._tracer is None
            else self._traced(self._tracer, workflow, running, cancelled)
        )

    def _on_done(self, running: _Running, *, cancelled: bool) -> None:
        """The end of a workflow's task: `cancelled` if it ends by a cancel."""
        # The callback refers to `running`, which refers to it: dropped here, that cycle
        # does not keep every finished workflow (its state and steps) for the collector.
        running.never_ran = _ignore
        self._running.pop(running.state.workflow_id, None)
        state = running.state
        if cancelled and not running.fenced and not state.status.is_terminal:
            # Cancelled before `_run` got to run at all (same event-loop turn as submit):
            # its finally never ran, but the store is still owed a terminal state.
            _mark_cancelled(state)
            self._finish_later(state, running.token)
        running.mark_finished()

    def _finish_later(self, state: WorkflowState, token: int | None) -> None:
        """Write a terminal state that no workflow task will write (it never ran)."""

        async def finish() -> None:
            if await self._persist(state, token):
                self.metrics.record_finished(state)
                await EventRecorder(self.store, state).finish(state)
                await self._release(state.workflow_id)

        finisher = asyncio.create_task(finish())
        self._finishers.add(finisher)
        finisher.add_done_callback(self._finishers.discard)

    async def wait(self, workflow_id: str) -> WorkflowState:
        """Wait for a workflow this replica runs; the caller's cancellation does not stop it.

        Returns once the state is terminal in memory, even if the store has not
        taken its write yet (it is being retried).
        """
        running = self._running.get(workflow_id)
        if running is None:
            return await self.status(workflow_id)
        if not running.finished:
            # A future of this caller's own (as `until_finished`, written out: no frame of
            # its own around every sync request's wait): a client that disconnects cancels
            # this wait, never the workflow (nor another caller's wait).
            # (On the workflow task's loop, which is this caller's: no getpid to look it up.)
            waiter = running.task.get_loop().create_future()
            running.waiters.append(waiter)
            running.waited = True
            try:
                await waiter
            finally:
                running.waiters.remove(waiter)
        if running.fenced:
            return await self.status(workflow_id)  # another replica owns it now
        return running.state

    async def status(self, workflow_id: str) -> WorkflowState:
        """The stored document; this replica's own copy while it holds a newer one.

        A workflow this replica runs is answered from memory when the store is
        unreachable, or when its finish is not stored yet.
        """
        running = self._running.get(workflow_id)
        try:
            state = await self.store.get(workflow_id)
        except StateStoreError:
            if running is not None and not running.fenced:
                return running.state
            raise
        if running is not None and not running.fenced and running.state.status.is_terminal:
            if state is None or not state.status.is_terminal:
                return running.state
        if state is None:
            raise WorkflowNotFound(workflow_id)
        return state

    async def cancel(self, workflow_id: str) -> WorkflowState:
        """Cancel a workflow wherever it runs and return its state once it has stopped.

        Idempotent: cancelling a cancelled workflow returns its document. Any other
        finished workflow raises WorkflowAlreadyFinished.
        """
        state = await self.status(workflow_id)
        if state.status is WorkflowStatus.CANCELLED:
            return state
        if state.status.is_terminal:
            raise WorkflowAlreadyFinished(workflow_id, status=state.status)
        running = self._running.get(workflow_id)
        try:
            await self.store.request_cancel(workflow_id)
        except StateStoreError:
            if running is None or running.fenced:
                raise
            # The store is away but the workflow runs here: stop it anyway; its
            # cancelled document is written like any other once the store is back.
            log.warning("cancel_flag_not_stored", workflow_id=workflow_id)
        if running is not None:
            self._cancel_local(workflow_id, reason="cancel requested")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_CANCEL_WAIT_S):
                    await running.until_finished()
            if not running.fenced:
                return running.state
        if state.status is WorkflowStatus.PAUSED:
            token = await self._claim(workflow_id)
            if token is not False:
                # Nobody runs a paused workflow: whoever takes its lease writes the end.
                return await self._cancel_paused(state, token)
        # Another replica runs it (or is resuming it): its listener stops it.
        return await self._await_terminal(workflow_id)

    async def _cancel_paused(self, state: WorkflowState, token: int | None) -> WorkflowState:
        _mark_cancelled(state)
        for run in state.steps.values():
            if run.status is NodeStatus.PENDING:
                run.status = NodeStatus.CANCELLED
                run.skip_reason = "workflow cancelled while paused"
        if await self._persist(state, token):
            self.metrics.record_finished(state)
        await self._release(state.workflow_id)
        return await self.status(state.workflow_id)

    async def pause(self, workflow_id: str) -> WorkflowState:
        """Start no new node of the workflow; once the running ones have ended it is PAUSED.

        Works from any replica: a flag in the store, which the owner reads at once
        when it is this replica, else from a message addressed to it. Returns the
        state as it is now (PAUSED only if it already was). Idempotent; a finished
        workflow raises WorkflowAlreadyFinished.
        """
        state = await self.status(workflow_id)
        if state.status.is_terminal:
            raise WorkflowAlreadyFinished(workflow_id, status=state.status)
        if state.status is not WorkflowStatus.PAUSED:
            await self.store.set_pause(workflow_id, True)
            running = self._running.get(workflow_id)
            if running is not None:
                self._pausing.add(workflow_id)
                return running.state
        return state

    @property
    def pausing(self) -> frozenset[str]:
        """Ids of the workflows this replica runs whose pause it has seen requested."""
        return frozenset(self._pausing)

    async def resume(self, workflow_id: str) -> WorkflowState:
        """Run a paused workflow again, here, from where it stopped (settled steps kept).

        A workflow still draining towards its pause just goes on. Any replica may
        resume; the lease makes sure only one does. A finished workflow raises
        WorkflowAlreadyFinished.
        """
        state = await self.status(workflow_id)
        if state.status.is_terminal:
            raise WorkflowAlreadyFinished(workflow_id, status=state.status)
        await self.store.set_pause(workflow_id, False)
        self._pausing.discard(workflow_id)
        if state.status is not WorkflowStatus.PAUSED or workflow_id in self._running:
            return state
        token = await self._claim(workflow_id)
        if token is False:
            return await self.status(workflow_id)  # another replica is resuming it
        # Re-read under the lease: a cancel may have ended it since.
        state = await self.status(workflow_id)
        if state.status is not WorkflowStatus.PAUSED:
            await self._release(workflow_id)
            return state
        log.info("workflow_resumed", workflow_id=workflow_id, previous_owner=state.owner)
        state.owner = self.replica_id
        try:
            workflow = self._resolve_definition(state)
        except Exception as exc:  # e.g. the definition no longer validates here
            _fail_resume(state, exc)
            await self._persist(state, token)
            await self._release(workflow_id)
            return state
        state.status = WorkflowStatus.RUNNING  # what its task writes first
        self._start(workflow, state, token)
        return state

    async def _claim(self, workflow_id: str) -> int | None | Literal[False]:
        """Take a workflow's lease: its token (None without leases), False if held."""
        if self._leases is None:
            return None
        token = await self._leases.claim(workflow_id, self.replica_id, lease_s=self._lease_s)
        return False if token is None else token

    def _resolve_definition(self, state: WorkflowState) -> CompiledWorkflow:
        if self._resolve is None:
            raise LookupError("this replica cannot resolve definitions")
        return self._resolve(state)

    async def _await_terminal(self, workflow_id: str) -> WorkflowState:
        """Another replica runs it: wait for its finish notification (bounded), then read."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters = self._finish_waiters.setdefault(workflow_id, set())
        waiters.add(waiter)  # before reading: a finish from now on wakes us
        try:
            state = await self.status(workflow_id)
            if state.status.is_terminal:
                return state
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_CANCEL_WAIT_S):
                    await waiter
            return await self.status(workflow_id)
        finally:
            waiters.discard(waiter)
            if not waiters:
                self._finish_waiters.pop(workflow_id, None)

    def _cancel_local(self, workflow_id: str, *, reason: str) -> None:
        running = self._running.get(workflow_id)
        if running is not None and not running.task.done() and not running.task.cancelling():
            log.info("workflow_cancelling", workflow_id=workflow_id, reason=reason)
            if reason != "cancel requested" and running.state.error is None:
                running.state.error = WorkflowError(code="replica_shutdown", message=reason)
            running.task.cancel()

    def _fence(self, workflow_id: str) -> None:
        """Another replica owns the workflow now: stop it here and write nothing more."""
        running = self._running.get(workflow_id)
        if running is None or running.fenced:
            return
        log.warning("lease_lost", workflow_id=workflow_id)
        running.fenced = True
        running.mark_finished()
        if running.task is not asyncio.current_task():
            running.task.cancel()

    async def _on_control(self, workflow_id: str) -> None:
        """A cancel, pause or resume was addressed to this replica for `workflow_id` (or a
        lost subscription came back): read that workflow's flags and act on them."""
        if workflow_id in self._accepting:
            self._accepting[workflow_id] = True  # read once its task exists (`submit`)
            return
        if workflow_id not in self._running:
            return  # not ours (any more): its new owner heard it too, or will read the flags
        try:
            # Both flags in one round trip (the Redis store pipelines one turn's commands).
            cancel, pause = await asyncio.gather(
                self.store.cancel_requested(workflow_id),
                self.store.pause_requested(workflow_id),
            )
        except StateStoreError as exc:
            log.warning("control_read_failed", workflow_id=workflow_id, error=str(exc))
            return
        if cancel:
            self._cancel_local(workflow_id, reason="cancel requested")
        if pause:
            self._pausing.add(workflow_id)
        else:
            self._pausing.discard(workflow_id)

    async def _heartbeat(self, leases: LeaseStore) -> None:
        while True:
            await self._clock.sleep(self._lease_s / 3)
            await self.heartbeat_once(leases)

    async def heartbeat_once(self, leases: LeaseStore) -> None:
        """Renew the leases of every workflow running here; fence those another replica took."""
        held = {
            wid: r.token
            for wid, r in self._running.items()
            if r.token is not None and not r.fenced
        }
        now = self._clock()
        try:
            kept = await leases.renew(held, self.replica_id, lease_s=self._lease_s)
        except StateStoreError as exc:  # Redis away: keep running; the next beat tries again
            log.warning("lease_renew_failed", error=str(exc))
            return
        except Exception:  # a bug must not stop the heartbeat for good
            log.exception("lease_renew_failed")
            return
        for workflow_id in kept:
            running = self._running.get(workflow_id)
            if running is not None:
                running.confirmed_at = max(running.confirmed_at, now)
        for workflow_id in set(held) - kept:
            running = self._running.get(workflow_id)
            if running is not None and running.token == held[workflow_id]:
                self._fence(workflow_id)

    async def _reconcile_forever(self) -> None:
        while True:
            try:
                await self.reconcile()
            except StateStoreError as exc:
                log.warning("reconcile_failed", error=str(exc))
            except Exception:
                log.exception("reconcile_failed")
            await self._clock.sleep(self._lease_s / 2)

    async def reconcile(self) -> list[str]:
        """Claim and resume the workflows of dead replicas; returns the ids this replica took."""
        leases = self._leases
        if leases is None:
            return []
        taken: list[str] = []
        orphans = await leases.orphans(lease_s=self._lease_s)
        for orphan in orphans:
            workflow_id = orphan.workflow_id
            if workflow_id in self._running:
                continue
            state = await self.store.get(workflow_id)
            if state is None or state.status.is_terminal:
                continue  # finished (or gone) before its owner died: nothing to resume
            token = await leases.claim(
                workflow_id, self.replica_id, lease_s=self._lease_s, previous=orphan.owner
            )
            if token is None:
                continue  # not the dead replica's any more (released, or another took it)
            # Read again under the new lease: the old owner may have written in between.
            state = await self.store.get(workflow_id)
            if state is None or state.status.is_terminal:
                await leases.release(workflow_id, self.replica_id)
                continue
            taken.append(workflow_id)
            if await self.store.pause_requested(workflow_id):
                self._pausing.add(workflow_id)  # its owner died while draining to a pause
            self._resume(state, token)
        for dead in sorted({orphan.owner for orphan in orphans}):
            await leases.bury(dead)
        return taken

    def _resume(self, state: WorkflowState, token: int) -> None:
        log.info("workflow_resuming", workflow_id=state.workflow_id, previous_owner=state.owner)
        state.owner = self.replica_id
        self.metrics.record_started(state)
        try:
            workflow = self._resolve_definition(state)
        except Exception as exc:  # e.g. the definition no longer validates here
            _fail_resume(state, exc)
            self._finish_later(state, token)
            return
        self._start(workflow, state, token)

    async def _traced(
        self,
        tracer: Tracer,
        workflow: CompiledWorkflow,
        running: _Running,
        cancelled: bool | None,
    ) -> None:
        state = running.state
        with tracer.start_as_current_span(
            "workflow",
            attributes={
                "workflow.id": state.workflow_id,
                "workflow.definition": state.definition_name,
            },
        ) as span:
            # Current in this task: the node tasks it spawns copy it, so nodes are children.
            try:
                await self._run(workflow, running, cancelled)
            finally:
                span.set_attribute("workflow.status", state.status.value)

    async def _run(
        self, workflow: CompiledWorkflow, running: _Running, cancelled: bool | None
    ) -> None:
        # The workflow task's body (`_start`; inside `_traced`'s span with a tracer): no
        # coroutine of its own around it for the common, untraced case.
        # The body ran: its end is handled here, in this task, not by the task's done
        # callback (a loop callback more per workflow), which only a task cancelled before
        # it first ran needs. Removed before the task is done, so it is never scheduled.
        ended_by_cancel = False
        # `running` is this workflow's entry in `_running` for as long as this runs: read
        # directly, not looked up by id at every step of the way.
        state = running.state
        # Bound once, in this workflow's own task: every line and every agent call made
        # from here on, in any node task it spawns, carries / reports to them.
        structlog.contextvars.bind_contextvars(workflow_id=state.workflow_id)
        events = EventRecorder(
            self.store, state, delay_s=self._write_delay_s, flusher=self._write_behind
        )
        writer = self._writer(running, events)
        retry_listener.set(events.retrying)

        recorded = False

        def record_end() -> None:
            # Once, as soon as the terminal document is written: a caller woken by
            # `_mark_finished` then finds the workflow counted in the metrics.
            nonlocal recorded
            if recorded or not writer.final or running.fenced:
                return
            recorded = True
            self.metrics.record_finished(state)

        def on_transition(current: WorkflowState) -> Awaitable[None] | None:
            # A plain function: only the terminal transition has anything to wait for
            # (its write), so the others cost the DAG engine no coroutine each.
            events.workflow(current)
            writer.mark_dirty()
            if current.status.is_terminal:
                return self._terminal_transition(running, writer, record_end)
            return None

        try:
            try:
                if cancelled or (
                    cancelled is None and await self._cancel_requested(state.workflow_id)
                ):
                    raise asyncio.CancelledError
                await self.dag_engine.run(
                    workflow,
                    state,
                    on_transition=on_transition,
                    # Without leases there is nothing to confirm: no call per node.
                    before_start=(
                        partial(self._confirm_lease, state.workflow_id)
                        if self._leases is not None
                        else None
                    ),
                    on_node=events.node,
                    pause_requested=lambda: state.workflow_id in self._pausing,
                )
            except asyncio.CancelledError:
                # The DAG engine marks CANCELLED itself; this covers a cancel that arrived
                # before the DAG engine started.
                if not state.status.is_terminal:
                    _mark_cancelled(state)
            except Exception as exc:  # a bug in a node kind must still end the workflow
                log.exception("workflow_crashed")
                if not state.status.is_terminal:
                    state.status = WorkflowStatus.FAILED
                    state.error = WorkflowError(
                        code="internal_error", message=f"internal error: {exc}"
                    )
                    state.finished_at = time.time()
            finally:
                await self._finish(running, writer, events, record_end)
        except asyncio.CancelledError:
            ended_by_cancel = True
            raise
        finally:
            # The recorder and the writer refer to each other (`carry_with`): unlinked, a
            # finished workflow is freed by reference counting, not left to the collector.
            events.carry_with(None)
            # Neither owes anything now (the terminal write is done, or this replica lost
            # the workflow): out of the flusher's queue, which then has no timer to fire
            # for a workflow that ended within the delay (a write still owed is started).
            self._write_behind.write_now(writer)
            self._write_behind.write_now(events)
            running.task.remove_done_callback(running.never_ran)
            self._on_done(running, cancelled=ended_by_cancel)

    async def _terminal_transition(
        self, running: _Running, writer: StateWriter, record_end: Callable[[], None]
    ) -> None:
        if running.write_failing:
            # The store is away: the outcome is known, waiting callers get it now.
            running.mark_finished()
        await writer.flush()
        record_end()
        running.mark_finished()

    def _writer(self, running: _Running, events: EventRecorder) -> StateWriter:
        token = running.token

        def persist(current: WorkflowState) -> Awaitable[bool]:
            # `_persist`'s own coroutine, handed back: no frame of this one around every write.
            if running.fenced:
                return _not_written()
            if current.status.is_terminal:
                # The run's last events go with its terminal document (one operation, on
                # Redis one script): nothing is left to append after the answer. They are
                # appended after the document in that operation, so a reader told of the
                # terminal event finds the document finished.
                last = events.last(current)
                if last is not None:
                    return self._persist(current, token, last)
                return self._persist(current, token)
            # The events told since the last append go with the document too (one
            # script on Redis, not one for each), appended after it: a reader told of a
            # step's end finds the document saying so.
            carried = events.carry()
            if carried is None:
                return self._persist(current, token)
            return self._persist_carrying(current, token, carried, events)

        writer = StateWriter(
            persist,
            running.state,
            pace=self._write_pace,
            delay_s=self._write_delay_s,
            flusher=self._write_behind,
        )
        events.carry_with(writer)
        return writer

    async def _persist_carrying(
        self, state: WorkflowState, token: int | None, carried: list[Event], events: EventRecorder
    ) -> bool:
        """`_persist` of a running document carrying `carried` (`EventRecorder.carry`)."""
        written = False
        try:
            written = await self._persist(state, token, carried)
        finally:
            events.carry_ended(carried, written=written)
        return written

    async def _finish(
        self,
        running: _Running,
        writer: StateWriter,
        events: EventRecorder,
        record_end: Callable[[], None],
    ) -> None:
        state = running.state
        # The DAG engine writes the terminal document itself; write it here only if it
        # did not (a cancel before the DAG engine started, a crash, a write still owed).
        if not writer.final:
            writer.mark_dirty()
            await writer.flush()
        record_end()
        running.mark_finished()
        self._pausing.discard(state.workflow_id)
        if running.fenced:
            return
        if state.status is WorkflowStatus.PAUSED:
            # Off the running index: no replica resumes it until asked to.
            log.info("workflow_paused")
            await self._release(state.workflow_id)
        elif writer.final:
            log.info("workflow_finished", status=_STATUS_TEXT[state.status])
            if events.carried:
                # Its last events went with the terminal write; the release sends nothing
                # of its own as a rule: no I/O to let the answer go before.
                if self._leases is not None:
                    await self._release(state.workflow_id)
                return
            if running.waited and not self._in_turn:
                # (Rare: an event append was in flight when the workflow ended, so its
                # last events could not go with the terminal write.) The callers
                # `_mark_finished` woke answer first: the last events and the lease
                # release are housekeeping, off the response's path. With nobody waiting
                # there is no answer to let go first; with an in-process store the
                # housekeeping has no I/O, only a few µs of CPU. One turn is enough: each
                # waiter's wake-up was queued when the workflow was marked finished,
                # before this yield queues ours, and a sync request's task writes its
                # answer in that wake-up's step (aiohttp finishes the response there).
                await asyncio.sleep(0)
            # After the terminal document: a reader told "finished" finds it so. The release
            # then sends nothing of its own when the terminal write ended the ownership (the
            # leases unlist the workflow with their next command): no gather to share a
            # round trip with the events.
            await events.finish(state)
            if self._leases is not None:
                await self._release(state.workflow_id)

    async def _confirm_lease(self, workflow_id: str) -> None:
        """Before a step starts: make sure the lease is still ours if the heartbeat is late.

        A replica that was frozen (or cut off) longer than its heartbeat may have been
        presumed dead and its workflow resumed elsewhere; it must not start steps the
        new owner runs. When the store cannot be asked (an outage) the step starts:
        running workflows keep running, and fencing still guards the document.
        """
        running = self._running.get(workflow_id)
        leases = self._leases
        if running is None or running.token is None or leases is None:
            return
        if self._clock() - running.confirmed_at <= self._lease_s / 2:
            return
        now = self._clock()
        try:
            kept = await leases.renew(
                {workflow_id: running.token}, self.replica_id, lease_s=self._lease_s
            )
        except StateStoreError:
            log.warning("lease_unconfirmed_store_unavailable", workflow_id=workflow_id)
            return
        if workflow_id in kept:
            running.confirmed_at = max(running.confirmed_at, now)
            return
        self._fence(workflow_id)
        raise asyncio.CancelledError

    async def _cancel_requested(self, workflow_id: str) -> bool:
        try:
            return await self.store.cancel_requested(workflow_id)
        except StateStoreError:
            return False  # the store is away: run; the poller and listener catch up later

    def _set_write_failing(self, workflow_id: str, failing: bool) -> None:
        running = self._running.get(workflow_id)
        if running is not None:
            running.write_failing = failing

    def _mark_finished(self, workflow_id: str) -> None:
        running = self._running.get(workflow_id)
        if running is not None:
            running.mark_finished()

    async def _release(self, workflow_id: str) -> None:
        if self._leases is None:
            return
        try:
            await self._leases.release(workflow_id, self.replica_id)
        except Exception:  # the lease then lapses and the reconciler tidies the index
            log.warning("lease_release_failed", workflow_id=workflow_id, exc_info=True)

    async def _persist(
        self, state: WorkflowState, token: int | None, events: Sequence[Mapping[str, Any]] = ()
    ) -> bool:
        """Save `state` (with `events`: those told with it, appended after it in the same
        operation) until the store holds it (or an already terminal copy).

        A store error is retried with jittered backoff for as long as it lasts: a
        running workflow's writes are kept, never dropped. False when this replica
        lost the lease (it is fenced), when shutdown abandoned the write, or on a
        bug (a document the store cannot encode).
        """
        attempt = 0
        while True:
            state.updated_at = time.time()
            try:
                # False: the stored copy is terminal already, which is just as final.
                await self.store.save(state, token=token, events=events)
                self._set_write_failing(state.workflow_id, False)
                return True
            except LeaseLost:
                self._fence(state.workflow_id)
                return False
            except StateStoreError as exc:
                self._set_write_failing(state.workflow_id, True)
                if state.status.is_terminal:
                    # The outcome is known: waiting callers get it from memory now.
                    self._mark_finished(state.workflow_id)
                if self._abandon_writes:
                    log.error("state_write_abandoned", workflow_id=state.workflow_id)
                    return False
                delay = random.uniform(
                    0, min(_WRITE_BACKOFF_CAP_S, _WRITE_BACKOFF_BASE_S * 2**attempt)
                )
                attempt += 1
                log.warning(
                    "state_write_failed",
                    workflow_id=state.workflow_id,
                    attempt=attempt,
                    retry_in_s=round(delay, 3),
                    error=str(exc),
                )
                await self._clock.sleep(delay)
            except Exception:
                log.exception("state_write_failed_bug", workflow_id=state.workflow_id)
                return False


async def _not_written() -> bool:
    return False


def _ignore(_: object) -> None:
    """A done callback that no longer has anything to do."""


class _Ids:
    """Workflow ids cut from the OS's random bytes read 4 KiB at a time: a read (a system
    call) per 256 ids, not one per id. Bytes the parent had not handed out yet are
    dropped in a forked child, so two processes never hand out the same ones."""

    def __init__(self) -> None:
        self.next: Callable[[], str] = self._fresh().__next__

    def drop(self) -> None:
        self.next = self._fresh().__next__

    @staticmethod
    def _fresh() -> Iterator[str]:
        while True:
            digits = os.urandom(_ID_BYTES * 256).hex()
            step = 2 * _ID_BYTES
            for start in range(0, len(digits), step):
                yield digits[start : start + step]


_ID_BYTES = 16
_IDS = _Ids()
os.register_at_fork(after_in_child=_IDS.drop)


def new_workflow_id() -> str:
    """A fresh workflow id: 128 random bits from the OS (its CSPRNG, as `secrets` reads),
    as 32 lowercase hex digits (the form uuid4().hex had)."""
    return _IDS.next()


def _mark_cancelled(state: WorkflowState) -> None:
    now = time.time()
    for run in state.steps.values():
        if run.status is NodeStatus.RUNNING:
            run.status = NodeStatus.CANCELLED
            run.finished_at = now
    state.status = WorkflowStatus.CANCELLED
    state.finished_at = now


def _fail_resume(state: WorkflowState, exc: Exception) -> None:
    """End a workflow that cannot be resumed here: `failed`, saying why."""
    state.status = WorkflowStatus.FAILED
    state.error = WorkflowError(
        code="resume_failed", message=f"could not resume the workflow: {exc}"
    )
    state.finished_at = time.time()
