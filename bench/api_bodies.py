"""Benchmark: the typed API bodies against the hand-written code they replaced.

    python -m bench.api_bodies [--repeat 7]

Rows (microseconds per call, best of --repeat runs of a batch; ratio new/old):

- status body: a workflow document encoded for GET .../status, for 3 (the chain),
  100 and 10,000 steps. old: `state.to_dict()` plus `duration_ms`, `orjson.dumps`
  (the route before issue 13); new: `replies.Workflow.of(state)`, msgspec's encoder.
- query body: POST /api/query's parsed JSON object checked into a request. old: the
  hand-written checks (copied below as the baseline); new: `parse_query_request`
  (msgspec.convert into `QueryRequest` + the query checks), for a plain query and
  for a 10,000-node workflow definition.
- document: the OpenAPI document generated from the body types (once per process;
  the route caches it).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from typing import Any

SCRIPT = os.path.abspath(__file__)
sys.path.insert(0, os.path.dirname(os.path.dirname(SCRIPT)))

import msgspec  # noqa: E402
import orjson  # noqa: E402

from orchestrator.api import replies  # noqa: E402
from orchestrator.api.openapi import openapi_document  # noqa: E402
from orchestrator.api.requests import parse_query_request  # noqa: E402
from state.models import NodeRun, NodeStatus, WorkflowState, WorkflowStatus  # noqa: E402


def _state(steps: int) -> WorkflowState:
    state = WorkflowState(
        workflow_id="w" * 32, definition_name="bench", status=WorkflowStatus.COMPLETED,
        inputs={"query": "revenue by region"}, created_at=1.0, updated_at=2.0, finished_at=2.0,
    )
    for i in range(steps):
        state.steps[f"n{i}"] = NodeRun(
            f"n{i}", "agent", agent="data", status=NodeStatus.COMPLETED, attempts=1,
            started_at=1.0 + i * 1e-4, finished_at=1.5, output={"rows": [[i, "x"]], "n": i},
        )
    state.result = {"rows": [[1, "x"]] * 10}
    return state


def _old_status(state: WorkflowState) -> bytes:
    body = state.to_dict()
    body["duration_ms"] = (
        round((state.finished_at - state.created_at) * 1000.0, 3) if state.finished_at else None
    )
    return orjson.dumps(body)


_encode = msgspec.json.Encoder().encode


def _new_status(state: WorkflowState) -> bytes:
    return _encode(replies.Workflow.of(state))


_FIELDS = frozenset({"query", "mode", "workflow", "wait_s"})


def _old_query(body: dict[str, Any], max_chars: int) -> tuple[Any, ...]:
    """The hand-written checks of api/requests.py before issue 13 (errors elided)."""
    if set(body) - _FIELDS:
        raise ValueError("unknown_field")
    workflow = body.get("workflow")
    if workflow is not None and not isinstance(workflow, dict):
        raise ValueError("invalid_type")
    query = body.get("query")
    if query is None:
        if workflow is None:
            raise ValueError("missing_field")
    elif not isinstance(query, str) or not query.strip() or len(query) > max_chars:
        raise ValueError("query")
    mode = body.get("mode", "sync")
    if not isinstance(mode, str) or mode not in ("sync", "async"):
        raise ValueError("mode")
    wait = body.get("wait_s")
    if wait is not None and (
        isinstance(wait, bool) or not isinstance(wait, int | float) or not 0 <= wait <= 300
    ):
        raise ValueError("wait_s")
    return query, mode, workflow, None if wait is None else float(wait)


def _definition(nodes: int) -> dict[str, Any]:
    return {
        "name": "big",
        "nodes": [
            {"id": f"n{i}", "kind": "agent", "agent": "data",
             "depends_on": [f"n{i - 1}"] if i else []}
            for i in range(nodes)
        ],
    }


def best_us(fn: Callable[[], object], repeat: int, batch: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(batch):
            fn()
        times.append((time.perf_counter() - start) / batch * 1e6)
    return min(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)
    rows: list[tuple[str, float, float]] = []
    for steps, batch in ((3, 2_000), (100, 200), (10_000, 3)):
        state = _state(steps)
        assert orjson.loads(_old_status(state)) == orjson.loads(_new_status(state))
        rows.append((
            f"status body, {steps:,} steps",
            best_us(lambda s=state: _old_status(s), args.repeat, batch),
            best_us(lambda s=state: _new_status(s), args.repeat, batch),
        ))
    for label, body in (
        ("query body, plain query", {"query": "revenue by region", "mode": "async"}),
        ("query body, 10,000-node workflow", {"workflow": _definition(10_000), "wait_s": 5}),
    ):
        rows.append((
            label,
            best_us(lambda b=body: _old_query(b, 4_000), args.repeat, 2_000),
            best_us(
                lambda b=body: parse_query_request(b, max_query_chars=4_000),
                args.repeat,
                2_000,
            ),
        ))
    start = time.perf_counter()
    openapi_document({"type": "object", "description": f"not cached: {start}"})
    document_ms = (time.perf_counter() - start) * 1000.0
    print(f"{'row':<36} {'old us':>10} {'new us':>10} {'new/old':>8}")
    for label, old, new in rows:
        print(f"{label:<36} {old:>10.1f} {new:>10.1f} {new / old:>8.2f}")
    print(f"OpenAPI document generated in {document_ms:.1f} ms (once per process)")


if __name__ == "__main__":
    main()
