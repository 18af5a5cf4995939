"""StateWriter's write-behind: transitions coalesce within the delay; the terminal write
is never delayed; nothing owed is lost."""

from __future__ import annotations

import asyncio

from orchestrator.state_writer import PACE_FROM_NODES, StateWriter
from state.models import NodeRun, WorkflowState, WorkflowStatus


class Persist:
    """Records the status of every document written; `written` is set on each write."""

    def __init__(self) -> None:
        self.saved: list[WorkflowStatus] = []
        self.written = asyncio.Event()

    async def __call__(self, state: WorkflowState) -> bool:
        self.saved.append(state.status)
        self.written.set()
        await asyncio.sleep(0)  # like a store awaiting its reply
        return True


def a_state() -> WorkflowState:
    return WorkflowState(workflow_id="wf", definition_name="chain", inputs={})


async def test_transitions_within_the_delay_cost_one_write_and_flush_does_not_wait() -> None:
    """Transitions over several loop turns inside the delay are written once, by the
    terminal flush, which cuts the delay short."""
    persist, state = Persist(), a_state()
    writer = StateWriter(persist, state, delay_s=3600.0)  # longer than the test, by far
    state.status = WorkflowStatus.RUNNING
    for _ in range(5):
        writer.mark_dirty()
        for _ in range(3):
            await asyncio.sleep(0)  # other work runs; the delay has not passed
    assert persist.saved == []  # written behind: nothing yet
    state.status = WorkflowStatus.COMPLETED
    writer.mark_dirty()
    await writer.flush()
    assert persist.saved == [WorkflowStatus.COMPLETED]
    assert writer.final


async def test_a_transition_reaches_the_store_within_the_delay_without_a_flush() -> None:
    """Written behind, not withheld: with no terminal flush the write still happens."""
    persist, state = Persist(), a_state()
    writer = StateWriter(persist, state, delay_s=0.002)
    state.status = WorkflowStatus.RUNNING
    writer.mark_dirty()
    writer.mark_dirty()
    async with asyncio.timeout(10):  # a hang guard, not a timing claim
        await persist.written.wait()
    await writer.flush()
    assert persist.saved == [WorkflowStatus.RUNNING]
    assert not writer.final


async def test_without_a_delay_the_first_transition_is_written_at_once() -> None:
    """delay_s=0 keeps the old behaviour: the first write starts on the next loop turn."""
    persist, state = Persist(), a_state()
    writer = StateWriter(persist, state)
    state.status = WorkflowStatus.RUNNING
    writer.mark_dirty()
    for _ in range(3):
        await asyncio.sleep(0)
    assert persist.saved == [WorkflowStatus.RUNNING]
    await writer.flush()


async def test_the_flushers_turn_after_the_terminal_write_has_nothing_to_await() -> None:
    """A workflow that ended within the delay wrote its terminal document itself: the
    flusher's later turn for its first transition returns nothing to await and writes
    nothing; a turn with a transition owed returns the write, which writes it."""
    persist, state = Persist(), a_state()
    writer = StateWriter(persist, state, delay_s=3600.0)
    state.status = WorkflowStatus.RUNNING
    writer.mark_dirty()  # queued behind, for the flusher's turn
    owed = writer.write_behind()  # that turn, taken now: the RUNNING state is owed
    assert owed is not None
    await owed
    assert persist.saved == [WorkflowStatus.RUNNING]
    assert writer.write_behind() is None  # nothing dirty: nothing made to await
    state.status = WorkflowStatus.COMPLETED
    writer.mark_dirty()
    await writer.flush()
    assert writer.write_behind() is None  # final: nothing more is ever written
    assert persist.saved == [WorkflowStatus.RUNNING, WorkflowStatus.COMPLETED]


async def a_running_write_in_flight() -> tuple[
    Persist, WorkflowState, StateWriter, asyncio.Future[None]
]:
    """A writer whose RUNNING write the flusher started and that is still in flight."""
    persist, state = Persist(), a_state()
    writer = StateWriter(persist, state, delay_s=3600.0)
    state.status = WorkflowStatus.RUNNING
    writer.mark_dirty()
    first = writer.write_behind()
    assert first is not None
    in_flight = asyncio.ensure_future(first)
    await persist.written.wait()  # the RUNNING write is in flight
    return persist, state, writer, in_flight


async def test_the_flushers_turn_during_a_write_owes_nothing_and_the_write_queues_what_is() -> None:
    """A write in flight: the flusher's turn has nothing to await (no coroutine waiting
    beside that write, holding the turn open); the write, once it ends, queues the writer
    again with no second delay, and the flusher writes the state marked dirty meanwhile."""
    persist, state, writer, in_flight = await a_running_write_in_flight()
    state.status = WorkflowStatus.PAUSED
    writer.mark_dirty()
    assert writer.write_behind() is None
    await in_flight
    async with asyncio.timeout(10):  # a hang guard: the delay is an hour
        while len(persist.saved) < 2:
            persist.written.clear()
            await persist.written.wait()
    assert persist.saved == [WorkflowStatus.RUNNING, WorkflowStatus.PAUSED]


async def test_a_flush_during_a_write_waits_for_it_then_writes_the_terminal_state() -> None:
    """`flush` with a write in flight (no future exists for it until someone waits): it
    waits for that write, then writes the terminal state, last; two waiters at once are
    both released, and a flush with nothing owed writes nothing."""
    persist, state, writer, in_flight = await a_running_write_in_flight()
    state.status = WorkflowStatus.COMPLETED
    writer.mark_dirty()
    flushes = [asyncio.ensure_future(writer.flush()) for _ in range(2)]
    await asyncio.gather(in_flight, *flushes)
    assert persist.saved == [WorkflowStatus.RUNNING, WorkflowStatus.COMPLETED]
    assert writer.final
    await writer.flush()  # nothing owed
    assert persist.saved == [WorkflowStatus.RUNNING, WorkflowStatus.COMPLETED]


class SlowStore(Persist):
    """A Persist whose every write takes `write_s` more on the writer's clock (the loop's
    clock, ahead by what the writes took)."""

    def __init__(self, write_s: float) -> None:
        super().__init__()
        self.ahead = 0.0
        self.write_s = write_s

    def clock(self) -> float:
        return asyncio.get_running_loop().time() + self.ahead

    async def __call__(self, state: WorkflowState) -> bool:
        self.ahead += self.write_s
        return await super().__call__(state)


def a_workflow_of(nodes: int) -> WorkflowState:
    state = a_state()
    state.steps = {f"n{i}": NodeRun(step_id=f"n{i}", kind="agent") for i in range(nodes)}
    state.status = WorkflowStatus.RUNNING
    return state


async def next_write(persist: Persist) -> None:
    persist.written.clear()
    async with asyncio.timeout(10):  # a hang guard, not a timing claim
        await persist.written.wait()


async def test_a_workflow_of_pace_from_nodes_waits_after_a_slow_write() -> None:
    """From PACE_FROM_NODES nodes on, the write after one that took d waits pace * d: a
    transition then is not written on the flusher's next turns, but after the pause."""
    persist = SlowStore(write_s=0.01)  # pace 4: a 40 ms pause
    state = a_workflow_of(PACE_FROM_NODES)
    writer = StateWriter(persist, state, clock=persist.clock)
    writer.mark_dirty()
    await next_write(persist)
    writer.mark_dirty()
    for _ in range(5):
        await asyncio.sleep(0)  # the flusher's turns: the pause is owed first
    assert len(persist.saved) == 1
    await next_write(persist)
    assert len(persist.saved) == 2
    await writer.flush()


async def test_a_smaller_workflow_is_never_paced_however_slow_its_writes() -> None:
    """Under PACE_FROM_NODES nodes (the flusher's direct write, no pacing around it), every
    transition is written on the flusher's next turn, as with writes that take no time."""
    persist = SlowStore(write_s=3600.0)  # a pause of hours, were it paced
    state = a_workflow_of(PACE_FROM_NODES - 1)
    writer = StateWriter(persist, state, clock=persist.clock)
    for written in range(1, 4):
        writer.mark_dirty()
        await next_write(persist)
        await asyncio.sleep(0)  # the write's end: it resets the in-flight mark
        assert len(persist.saved) == written
    await writer.flush()
    assert persist.saved == [WorkflowStatus.RUNNING] * 3
