"""LoopTurns: whether a task gave the event loop a turn since its mark, one tick per turn."""

from __future__ import annotations

import asyncio

from orchestrator.dag.engine import LoopTurns


async def test_the_count_moves_only_once_the_marking_task_yielded() -> None:
    turns = LoopTurns()
    loop = asyncio.get_running_loop()
    mark = turns.mark(loop)
    assert turns.count == mark  # no turn yet: the tick waits for this task to yield
    await asyncio.sleep(0)
    assert turns.count != mark


async def test_many_marks_in_one_turn_share_one_tick() -> None:
    """Every run of a turn marks; one callback serves them all, and tells each of them."""
    turns = LoopTurns()
    loop = asyncio.get_running_loop()
    marks = [turns.mark(loop) for _ in range(10)]
    await asyncio.sleep(0)
    assert turns.count == marks[0] + 1  # one tick, not ten
    assert all(turns.count != m for m in marks)


async def test_a_task_resumed_in_the_same_loop_iteration_still_sees_its_turn() -> None:
    """A tick already pending when another task marks still runs before that task's
    resumption: the count it compares against has moved by then."""
    turns = LoopTurns()
    loop = asyncio.get_running_loop()
    first = turns.mark(loop)  # the tick is pending from here
    seen: list[bool] = []

    async def other() -> None:
        mark = turns.mark(loop)  # pending tick: no new one
        await asyncio.sleep(0)
        seen.append(turns.count != mark)

    task = asyncio.create_task(other())
    await task
    assert seen == [True]
    assert turns.count != first


async def test_a_turn_that_saw_no_yield_reads_the_same_count() -> None:
    """Work done without awaiting anything (an inline stretch) leaves the count as marked."""
    turns = LoopTurns()
    loop = asyncio.get_running_loop()
    mark = turns.mark(loop)
    for _ in range(1000):
        turns.mark(loop)
    assert turns.count == mark


def test_a_new_loop_starts_afresh() -> None:
    """A tick armed on a loop that closed before it ran does not stop the next loop's."""
    turns = LoopTurns()
    first_loop = asyncio.new_event_loop()
    turns.mark(first_loop)  # armed there ...
    first_loop.close()  # ... and never run

    async def marks_and_yields() -> bool:
        mark = turns.mark(asyncio.get_running_loop())
        await asyncio.sleep(0)
        return turns.count != mark

    assert asyncio.run(marks_and_yields())
