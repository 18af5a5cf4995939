"""A burst of node starts (a fan-out's branches, dispatched in one go) is told to
`on_node` start by start and to `on_transition` once, before any branch runs: the
same states a call per start showed, since nothing can run between the starts.
Where the dispatcher may wait between starts (`before_start`, a `when`), each start
is handed on before that wait, as it was with a call per start."""

from __future__ import annotations

from typing import Any

from orchestrator.dag.engine import DagEngine
from state.models import NodeRun, WorkflowState, WorkflowStatus

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
