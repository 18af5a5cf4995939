"""WriteBehind: one flusher for many workflows' writes behind — in due order, the jobs due
together written together, each workflow's writes in order and never overlapping,
nothing owed left unwritten."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any

from orchestrator.events import EventRecorder
from orchestrator.state_writer import StateWriter
from orchestrator.write_behind import WriteBehind
from state.memory import MemoryStateStore
from state.models import NodeRun, NodeStatus, WorkflowState, WorkflowStatus
from tests.fakes import settle


class Ran(list[str]):
    """The jobs that ran, in order; `changed` is set on each."""

    def __init__(self) -> None:
        super().__init__()
        self.changed = asyncio.Event()

    def append(self, name: str) -> None:
        super().append(name)
        self.changed.set()

    async def until(self, count: int) -> None:
        async with asyncio.timeout(10):  # a hang guard, not a timing claim
            while len(self) < count:
                self.changed.clear()
                await self.changed.wait()


class Job:
    def __init__(self, name: str, ran: Ran) -> None:
        self.name, self._ran = name, ran

    async def write_behind(self) -> None:
        self._ran.append(self.name)


class Broken:
    async def write_behind(self) -> None:
        raise RuntimeError("a bug in one job")


async def test_jobs_run_earliest_due_first_and_the_flusher_ends_when_idle() -> None:
    """Due order, first come first served on ties; a job due earlier than the one the
    flusher sleeps for goes first; once the queue is empty no task is left behind."""
    flusher, ran = WriteBehind(), Ran()
    now = asyncio.get_running_loop().time()
    flusher.add(Job("late", ran), now + 0.05)
    await asyncio.sleep(0)  # the flusher now sleeps until "late" is due
    flusher.add(Job("first", ran), now)
    flusher.add(Job("second", ran), now)
    await ran.until(3)
    assert ran == ["first", "second", "late"]
    await settle()
    assert not flusher.running
    assert len(flusher) == 0


async def test_a_failing_job_does_not_strand_the_others() -> None:
    flusher, ran = WriteBehind(), Ran()
    now = asyncio.get_running_loop().time()
    flusher.add(Broken(), now)
    flusher.add(Job("after", ran), now)
    await ran.until(1)
    assert ran == ["after"]


def test_a_flusher_writes_under_whichever_loop_runs_now() -> None:
    """One flusher under one loop, then under another (a loop per `asyncio.run`): the jobs
    added after the first loop closed run on the second (the loop it keeps is the running
    one's, not the closed one's)."""
    flusher = WriteBehind()

    async def one_job(name: str) -> list[str]:
        ran = Ran()
        flusher.add_after(Job(name, ran), 0.0)
        await ran.until(1)
        return ran

    assert asyncio.run(one_job("first loop")) == ["first loop"]
    assert asyncio.run(one_job("second loop")) == ["second loop"]


class Persist:
    """Records each write; `gate` holds the writes of one workflow while clear."""

    def __init__(self, log: list[tuple[str, WorkflowStatus]], gate: asyncio.Event) -> None:
        self._log, self._gate = log, gate
        self.in_flight = self.most_in_flight = 0

    async def __call__(self, state: WorkflowState) -> bool:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        self._log.append((state.workflow_id, state.status))
        await self._gate.wait()
        self.in_flight -= 1
        return True


def a_state(workflow_id: str) -> WorkflowState:
    return WorkflowState(workflow_id=workflow_id, definition_name="chain", inputs={})


async def test_writers_share_one_flusher_and_a_transition_in_flight_is_written_after() -> None:
    """Two workflows on one flusher: each is written; a transition made while its write is
    in flight is not written alongside it but after it, as one more write; the terminal
    flush waits for the write in flight, then writes at once."""
    log: list[tuple[str, WorkflowStatus]] = []
    flusher, slow, fast = WriteBehind(), asyncio.Event(), asyncio.Event()
    fast.set()
    a, b = a_state("a"), a_state("b")
    persist_a = Persist(log, slow)
    writer_a = StateWriter(persist_a, a, flusher=flusher)
    writer_b = StateWriter(Persist(log, fast), b, flusher=flusher)
    a.status = b.status = WorkflowStatus.RUNNING
    writer_a.mark_dirty()
    writer_b.mark_dirty()
    await settle()
    # Due together, written together: b's write is not held behind a's slow one.
    assert log == [("a", WorkflowStatus.RUNNING), ("b", WorkflowStatus.RUNNING)]
    a.status = WorkflowStatus.PAUSED
    writer_a.mark_dirty()  # during a's write: owed, not written beside it
    await settle()
    assert len(log) == 2
    slow.set()
    await settle()
    assert log[2:] == [("a", WorkflowStatus.PAUSED)]
    slow.clear()
    a.status = WorkflowStatus.RUNNING
    writer_a.mark_dirty()
    await settle()
    assert len(log) == 4
    a.status = WorkflowStatus.COMPLETED
    writer_a.mark_dirty()
    finishing = asyncio.ensure_future(writer_a.flush())
    await asyncio.sleep(0)
    assert not finishing.done()  # waits for the write in flight, never overlaps it
    slow.set()
    await finishing
    assert log[3:] == [("a", WorkflowStatus.RUNNING), ("a", WorkflowStatus.COMPLETED)]
    assert writer_a.final
    assert persist_a.most_in_flight == 1  # never two writes of one workflow at once
    await settle()
    assert not flusher.running


class GatedStore(MemoryStateStore):
    """Holds every append until `gate` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.arrived = asyncio.Event()
        self.appends: list[int] = []

    @property
    def completes_in_turn(self) -> bool:
        return False  # its appends wait

    async def append_events(self, workflow_id: str, events: Sequence[Mapping[str, Any]]) -> int:
        self.arrived.set()
        await self.gate.wait()
        self.appends.append(len(events))
        return await super().append_events(workflow_id, events)


async def test_events_pushed_during_an_append_follow_it_in_order() -> None:
    """Events told while the flusher's append is in flight go in the next append, after
    it; `finish` waits for that append, then appends the rest at once, terminal last."""
    store, flusher = GatedStore(), WriteBehind()
    state = a_state("w")
    state.steps["a"] = NodeRun(step_id="a", kind="agent", agent="nlp")
    events = EventRecorder(store, state, clock=lambda: 1.0, flusher=flusher)
    state.status = WorkflowStatus.RUNNING
    events.workflow(state)
    events.node(NodeRun(step_id="a", kind="agent", agent="nlp", status=NodeStatus.RUNNING))
    await store.arrived.wait()  # the flusher's append is in flight, held
    events.retrying("nlp", "a", 2, 0.5, "AgentTimeout")
    state.status = WorkflowStatus.COMPLETED
    finishing = asyncio.ensure_future(events.finish(state))
    await asyncio.sleep(0)
    assert not finishing.done()
    store.gate.set()
    await finishing
    told = [e["type"] for _, e in await store.events_since("w")]
    assert told == ["workflow.running", "step.started", "step.retrying", "workflow.completed"]
    assert store.appends == [2, 2]  # the held append, then the rest in one


async def test_finish_does_not_wait_for_the_delay() -> None:
    store = MemoryStateStore()
    state = a_state("w")
    events = EventRecorder(store, state, flusher=WriteBehind(), delay_s=3600.0)
    state.status = WorkflowStatus.RUNNING
    events.workflow(state)
    state.status = WorkflowStatus.FAILED
    async with asyncio.timeout(10):  # a hang guard: the delay is an hour
        await events.finish(state)
    told = [e["type"] for _, e in await store.events_since("w")]
    assert told == ["workflow.running", "workflow.failed"]


async def test_a_flush_and_the_flusher_never_write_one_workflow_at_once() -> None:
    """A transition during a flush's write is queued; the flusher writes it only after."""
    log: list[tuple[str, WorkflowStatus]] = []
    gate = asyncio.Event()
    persist = Persist(log, gate)
    state = a_state("a")
    writer = StateWriter(persist, state, flusher=WriteBehind())
    state.status = WorkflowStatus.RUNNING
    flushing = asyncio.ensure_future(writer.flush())  # its turn comes before the flusher's
    writer.mark_dirty()
    await settle()
    state.status = WorkflowStatus.PAUSED
    writer.mark_dirty()
    await settle()
    assert log == [("a", WorkflowStatus.RUNNING)]  # the flusher waits for the flush's write
    gate.set()
    await flushing
    await settle()
    assert log == [("a", WorkflowStatus.RUNNING), ("a", WorkflowStatus.PAUSED)]
    assert persist.most_in_flight == 1


class Held:
    """A job whose write starts, then waits for `gate`."""

    def __init__(self, name: str, started: Ran, gate: asyncio.Event) -> None:
        self.name, self._started, self._gate = name, started, gate

    async def write_behind(self) -> None:
        self._started.append(self.name)
        await self._gate.wait()


async def test_jobs_due_together_are_written_together() -> None:
    """Every job due when the flusher wakes has its write started before any of them
    ends (a batching store sends them in one exchange), in due order; a job that falls
    due while they are in flight is started too: no write waits for another's."""
    flusher, started, gate = WriteBehind(), Ran(), asyncio.Event()
    now = asyncio.get_running_loop().time()
    for name in ("a", "b", "c"):
        flusher.add(Held(name, started, gate), now)
    await started.until(3)  # on a flusher awaiting one write at a time: only "a" starts
    assert started == ["a", "b", "c"]
    flusher.add(Held("d", started, gate), now)
    await started.until(4)
    assert flusher.running  # four writes in flight
    gate.set()
    await settle()
    assert not flusher.running


async def test_the_flushers_write_started_after_a_terminal_flush_writes_nothing_more() -> None:
    """The flusher takes a writer's write, and before it starts the workflow ends and its
    terminal flush begins: the terminal document is written once, and never alongside."""
    log: list[tuple[str, WorkflowStatus]] = []
    gate = asyncio.Event()
    persist = Persist(log, gate)
    state = a_state("a")
    writer = StateWriter(persist, state, flusher=WriteBehind(), delay_s=3600.0)
    state.status = WorkflowStatus.RUNNING
    writer.mark_dirty()
    behind = writer.write_behind()  # what the flusher takes when the job is due
    assert behind is not None
    state.status = WorkflowStatus.COMPLETED
    writer.mark_dirty()
    flushing = asyncio.ensure_future(writer.flush())  # begins first
    flusher_write = asyncio.ensure_future(behind)  # then the flusher starts its write
    await settle()
    assert log == [("a", WorkflowStatus.COMPLETED)]
    gate.set()
    await asyncio.gather(flushing, flusher_write)
    assert log == [("a", WorkflowStatus.COMPLETED)]
    assert persist.most_in_flight == 1
    assert writer.final


async def test_a_flusher_for_a_store_writing_in_turn_writes_one_job_at_a_time() -> None:
    """`together=False` (the memory store's: nothing to share): each due write is awaited
    before the next starts, in due order."""
    flusher, started, gate = WriteBehind(together=False), Ran(), asyncio.Event()
    now = asyncio.get_running_loop().time()
    flusher.add(Held("a", started, gate), now)
    flusher.add(Held("b", started, gate), now)
    await settle()
    assert started == ["a"]
    gate.set()
    await started.until(2)
    assert started == ["a", "b"]


class OneAtATime(MemoryStateStore):
    """Holds each append until the test lets one through (`release.release()`)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Semaphore(0)
        self.arrived = Ran()

    @property
    def completes_in_turn(self) -> bool:
        return False  # its appends wait

    async def append_events(self, workflow_id: str, events: Sequence[Mapping[str, Any]]) -> int:
        self.arrived.append(workflow_id)
        await self.release.acquire()
        return await super().append_events(workflow_id, events)


async def test_a_workflows_stream_of_events_does_not_hold_the_flushers_turn_open() -> None:
    """Events told while a workflow's append is in flight wait for the flusher's next turn
    (no second delay), not appended by the same turn back to back: a job that fell due
    meanwhile is written then, beside them, not after the workflow stops telling."""
    store, flusher, ran = OneAtATime(), WriteBehind(), Ran()
    state = a_state("w")
    events = EventRecorder(store, state, clock=lambda: 1.0, flusher=flusher)
    state.status = WorkflowStatus.RUNNING
    events.workflow(state)
    await store.arrived.until(1)  # the first append, in flight
    assert events.write_behind() is None  # nothing told since: nothing to wait for
    events.node(NodeRun(step_id="a", kind="agent", agent="nlp", status=NodeStatus.RUNNING))
    flusher.add_after(Job("other", ran), 0.0)
    store.release.release()  # the first append ends
    await ran.until(1)  # "other" written while the workflow's next append is held
    await store.arrived.until(2)
    store.release.release()
    await settle()
    told = [e["type"] for _, e in await store.events_since("w")]
    assert told == ["workflow.running", "step.started"]
    assert not flusher.running


class Owes:
    """A job that counts its turns; it owes a write (`ran`'s) while `owed`."""

    def __init__(self, ran: Ran, *, owed: bool) -> None:
        self._ran, self.owed, self.turns = ran, owed, 0

    def write_behind(self) -> Awaitable[None] | None:
        self.turns += 1
        if not self.owed:
            return None
        self.owed = False
        return Job("written", self._ran).write_behind()


async def test_a_job_that_owes_nothing_leaves_the_queue_at_once_and_nothing_waits() -> None:
    """`write_now` on a queued job owing nothing (a workflow ended within the delay): it
    has its turn now, the queue is empty, and no timer or task waits for its due time."""
    flusher, ran = WriteBehind(), Ran()
    job = Owes(ran, owed=False)
    flusher.add_after(job, 3600.0)
    assert flusher.running and len(flusher) == 1
    flusher.write_now(job)
    assert job.turns == 1
    assert len(flusher) == 0
    assert not flusher.running  # on a flusher that sleeps until the job is due: still running
    flusher.write_now(job)  # no longer queued: no second turn
    assert job.turns == 1


async def test_a_job_taken_early_with_a_write_owed_is_written_at_once_and_once() -> None:
    """`write_now` starts what a job still owes without waiting for its due time, and the
    job's place in the queue is gone: the others are written when due, it is not again."""
    flusher, ran = WriteBehind(), Ran()
    now = asyncio.get_running_loop().time()
    job = Owes(ran, owed=True)
    flusher.add(job, now + 3600.0)
    flusher.add(Job("other", ran), now)
    flusher.write_now(job)
    await ran.until(2)
    assert sorted(ran) == ["other", "written"]
    await settle()
    assert job.turns == 1
    assert not flusher.running


async def test_a_workflows_writer_and_recorder_leave_the_queue_after_its_terminal_write() -> None:
    """A run that ends within the delay: its terminal flush writes everything, and
    `write_now` then finds nothing owed by either: nothing more is written, none waits."""
    store = MemoryStateStore()
    flusher = WriteBehind(together=False)
    state = a_state("w")
    writes: list[WorkflowStatus] = []

    async def persist(current: WorkflowState) -> bool:
        writes.append(current.status)
        return True

    events = EventRecorder(store, state, flusher=flusher, delay_s=3600.0)
    writer = StateWriter(persist, state, flusher=flusher, delay_s=3600.0)
    state.status = WorkflowStatus.RUNNING
    events.workflow(state)
    writer.mark_dirty()
    assert len(flusher) == 2
    state.status = WorkflowStatus.COMPLETED
    writer.mark_dirty()
    await writer.flush()
    await events.finish(state)
    flusher.write_now(writer)
    flusher.write_now(events)
    await settle()
    assert writes == [WorkflowStatus.COMPLETED]
    assert not flusher.running and len(flusher) == 0
    told = [e["type"] for _, e in await store.events_since("w")]
    assert told == ["workflow.running", "workflow.completed"]
