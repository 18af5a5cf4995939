"""Benchmark: encoding and decoding the state documents (state/layout.py over state/models.py).

    python -m bench.state_documents                      # this checkout
    PYTHONPATH=/path/to/old/checkout python -m bench.state_documents --label before

What every save and read of a workflow costs in CPU, without any store: the fields
of a first write (`FieldCache.changes`), of one transition (one step changed), the
compacted final document (`compacted`), and reading each layout back (`assemble`),
for workflows of 3 and 1,000 steps. Only public functions whose signatures did not
change, so the same script measures the hand-written code before the typed models.
Each figure is the best of --repeat rounds (a loaded machine adds, never subtracts).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any


def _state(steps: int) -> Any:
    from state.models import NodeFailure, NodeRun, NodeStatus, WorkflowState, WorkflowStatus

    runs = {}
    for i in range(steps):
        failed = i % 10 == 9
        runs[f"n{i}"] = NodeRun(
            step_id=f"n{i}",
            kind="agent",
            agent="data",
            status=NodeStatus.FAILED if failed else NodeStatus.COMPLETED,
            attempts=2,
            started_at=1700000000.0 + i,
            finished_at=1700000000.5 + i,
            output=None if failed else {"rows": [{"region": "EU", "total": i}], "n": i},
            error=NodeFailure(type="AgentUnavailable", message="refused", agent="data")
            if failed
            else None,
        )
    return WorkflowState(
        workflow_id="w" * 32,
        definition_name="report",
        status=WorkflowStatus.RUNNING,
        inputs={"query": "revenue by region"},
        steps=runs,
        result=None,
        owner="replica-a",
        tenant="acme",
    )


def _best(fn: Callable[[], Any], *, rounds: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        for _ in range(rounds):
            fn()
        best = min(best, (time.process_time() - start) / rounds)
    return best * 1e6  # microseconds


def _row(steps: int, repeat: int) -> list[float]:
    from state.layout import FieldCache, assemble, compacted
    from state.models import NodeStatus, WorkflowStatus

    rounds = max(1, 3000 // steps)
    state = _state(steps)
    first = FieldCache().changes(state).fields
    cache = FieldCache()
    cache.remember(cache.changes(state))
    last = state.steps[f"n{steps - 1}"]

    def transition() -> None:
        flip = last.status is NodeStatus.COMPLETED
        last.status = NodeStatus.RUNNING if flip else NodeStatus.COMPLETED
        cache.remember(cache.changes(state))

    done = _state(steps)
    done.status = WorkflowStatus.COMPLETED
    final = compacted(done)
    return [
        _best(fn, rounds=rounds, repeat=repeat)
        for fn in (
            lambda: FieldCache().changes(state),
            transition,
            lambda: compacted(done),
            lambda: assemble(first),
            lambda: assemble(final),
        )
    ]


def main(args: argparse.Namespace) -> None:
    print(f"{args.label}: microseconds per operation (best of {args.repeat})")
    print(
        f"{'steps':>6} {'first write':>12} {'transition':>11} {'compacted':>10} "
        f"{'read running':>13} {'read final':>11}"
    )
    for steps in (3, 1000):
        first, transition, final, read_running, read_final = _row(steps, args.repeat)
        print(
            f"{steps:>6} {first:>12.1f} {transition:>11.1f} {final:>10.1f} "
            f"{read_running:>13.1f} {read_final:>11.1f}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--label", default="this checkout")
    parser.add_argument("--repeat", type=int, default=5)
    main(parser.parse_args())
