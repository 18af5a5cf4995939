"""A burst of node starts (a fan-out's branches, dispatched in one go) is told to
`on_node` start by start and to `on_transition` once, before any branch runs: the
same states a call per start showed, since nothing can run between the starts.
Where the dispatcher may wait between starts (`before_start`, a `when`), each start
is handed on before that wait, as it was with a call per start. Nodes settled in one
wake-up (branches whose calls ended together) are told the same way: to `on_node`
one by one, then to `on_transition` once."""

from __future__ import annotations

from typing import Any

from agents.errors import AgentHTTPError
from orchestrator.dag.engine import DagEngine
from state.models import NodeRun, NodeStatus, WorkflowState, WorkflowStatus

from .conftest import FakeAgents, Harness, agent, compile_def, new_state

BRANCHES = ["b1", "b2", "b3", "b4"]
FANOUT: dict[str, Any] = {
    "nodes": [
        agent("root"),
        *(agent(b, depends_on=["root"]) for b in BRANCHES),
        agent("join", depends_on=BRANCHES),
    ]
}


class Recorder:
    """What the engine told, in order: ("node", id, status) and ("transition", statuses, calls)."""

    def __init__(self, fake: FakeAgents) -> None:
        self.fake = fake
        self.log: list[tuple[Any, ...]] = []

    def on_node(self, run: NodeRun) -> None:
        self.log.append(("node", run.step_id, run.status.value))

    async def on_transition(self, state: WorkflowState) -> None:
        statuses = {k: s.status.value for k, s in state.steps.items()}
        self.log.append(("transition", statuses, tuple(self.fake.order)))

    def transitions(self) -> list[tuple[Any, ...]]:
        return [e for e in self.log if e[0] == "transition"]

    def nodes(self) -> list[tuple[Any, ...]]:
        return [e for e in self.log if e[0] == "node"]


async def _run(
    harness: Harness, fake: FakeAgents, definition: dict[str, Any], *, confirm: bool
) -> tuple[Recorder, WorkflowState, list[dict[str, str]]]:
    recorder = Recorder(fake)
    compiled = compile_def(definition)
    state = new_state(compiled.name)
    seen_at_confirm: list[dict[str, str]] = []

    async def before_start() -> None:
        # What the last transition handed on, when the dispatcher is about to wait.
        last = recorder.transitions()[-1]
        seen_at_confirm.append(dict(last[1]))

    engine: DagEngine = harness.runner()
    await engine.run(
        compiled,
        state,
        on_transition=recorder.on_transition,
        on_node=recorder.on_node,
        before_start=before_start if confirm else None,
    )
    return recorder, state, seen_at_confirm


async def test_a_burst_of_starts_is_one_transition_after_every_start_was_told(
    harness: Harness, fake: FakeAgents
) -> None:
    recorder, state, _ = await _run(harness, fake, FANOUT, confirm=False)
    assert state.status is WorkflowStatus.COMPLETED
    starts = [
        i
        for i, e in enumerate(recorder.log)
        if e[0] == "node" and e[1] in BRANCHES and e[2] == "running"
    ]
    assert [recorder.log[i][1] for i in starts] == BRANCHES  # told one by one, in order
    after = recorder.log[starts[-1] + 1]
    assert after[0] == "transition"
    assert all(after[1][b] == "running" for b in BRANCHES)
    # Handed on before any branch ran; no transition between the starts.
    assert not any(b in after[2] for b in BRANCHES)
    assert all(recorder.log[i][0] == "node" for i in range(starts[0], starts[-1] + 1))


async def test_a_burst_behaves_like_a_transition_per_start(
    harness: Harness, fake: FakeAgents
) -> None:
    """With `before_start` (a wait before every start) each start gets its own
    transition before the wait; the node events and the final state are the same."""
    burst, burst_state, _ = await _run(harness, fake, FANOUT, confirm=False)
    fake.order.clear()
    each, each_state, seen = await _run(harness, fake, FANOUT, confirm=True)
    assert burst.nodes() == each.nodes()
    assert {k: (s.status, s.output) for k, s in burst_state.steps.items()} == {
        k: (s.status, s.output) for k, s in each_state.steps.items()
    }
    assert burst_state.status is each_state.status is WorkflowStatus.COMPLETED
    # Before each wait, every branch already started was in the last transition.
    for i, statuses in enumerate(seen[1 : 1 + len(BRANCHES)]):
        assert [b for b in BRANCHES if statuses[b] == "running"] == BRANCHES[:i]
    # The per-start path hands each branch start on by itself: more transitions.
    assert len(each.transitions()) == len(burst.transitions()) + len(BRANCHES) - 1


async def test_a_when_between_starts_hands_the_earlier_starts_on_first(
    harness: Harness, fake: FakeAgents
) -> None:
    """A `when` may wait (it is computed under the deadline): the starts before it
    are handed to on_transition before it is evaluated."""
    definition = {
        "nodes": [
            agent("root"),
            agent("b1", depends_on=["root"]),
            agent("b2", depends_on=["root"], when="root.agent != 'nobody'"),
            agent("join", depends_on=["b1", "b2"]),
        ]
    }
    recorder, state, _ = await _run(harness, fake, definition, confirm=False)
    assert state.status is WorkflowStatus.COMPLETED
    log = recorder.log
    b1 = log.index(("node", "b1", "running"))
    b2 = log.index(("node", "b2", "running"))
    between = [e for e in log[b1 + 1 : b2] if e[0] == "transition"]
    assert len(between) == 1
    assert between[0][1]["b1"] == "running" and between[0][1]["b2"] == "pending"


async def test_nodes_that_end_together_are_one_transition_after_every_settle_was_told(
    harness: Harness, fake: FakeAgents
) -> None:
    """Branches whose calls end in the same turn of the loop are settled together: each
    told to on_node, in definition order, then one on_transition showing them all."""
    recorder, state, _ = await _run(harness, fake, FANOUT, confirm=False)
    assert state.status is WorkflowStatus.COMPLETED
    ends = [
        i
        for i, e in enumerate(recorder.log)
        if e[0] == "node" and e[1] in BRANCHES and e[2] == "completed"
    ]
    assert [recorder.log[i][1] for i in ends] == BRANCHES
    assert all(recorder.log[i][0] == "node" for i in range(ends[0], ends[-1] + 1))
    after = recorder.log[ends[-1] + 1]
    assert after[0] == "transition"
    assert all(after[1][b] == "completed" for b in BRANCHES)
    assert after[1]["join"] == "pending"


async def test_settles_together_keep_every_outcome_and_the_stop(
    harness: Harness, fake: FakeAgents
) -> None:
    """In one batch of settles a failure that continues and one that stops are recorded
    as they were one by one: the others keep their results, the workflow fails on the
    stopping node, and every settled node but that one was told."""
    definition: dict[str, Any] = {
        "nodes": [
            agent("root"),
            agent("b1", depends_on=["root"]),
            agent("b2", depends_on=["root"], on_failure="continue"),
            agent("b3", depends_on=["root"]),
            agent("b4", depends_on=["root"]),
            agent("join", depends_on=BRANCHES),
        ]
    }
    fake.behaviours["b2"] = AgentHTTPError(agent="a", status=500, body="down")
    fake.behaviours["b3"] = AgentHTTPError(agent="a", status=500, body="down")
    recorder, state, _ = await _run(harness, fake, definition, confirm=False)
    assert state.status is WorkflowStatus.FAILED
    assert state.error is not None and state.error.step_id == "b3"
    steps = state.steps
    assert [steps[b].status for b in BRANCHES] == [
        NodeStatus.COMPLETED,
        NodeStatus.FAILED,
        NodeStatus.FAILED,
        NodeStatus.COMPLETED,
    ]
    assert steps["b4"].output is not None and steps["join"].status is NodeStatus.CANCELLED
    told = [(e[1], e[2]) for e in recorder.nodes() if e[1] in BRANCHES and e[2] != "running"]
    assert told == [("b1", "completed"), ("b2", "failed"), ("b4", "completed")]
    # One transition for the batch, after the last told settle.
    last = recorder.log.index(("node", "b4", "completed"))
    assert recorder.log[last + 1][0] == "transition"
