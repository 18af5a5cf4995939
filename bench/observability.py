"""What the operations features cost a workflow: the event log, the store metrics, tracing off.

    python -m bench.observability [--workflows 400] [--repeat 5] [--cap-s 20]

The chain (NLP -> Data -> Viz) run by `WorkflowOrchestrator` on the memory store, one
workflow at a time, over `AgentClient` with an in-process `httpx.MockTransport`: no
network, so the engine's own CPU per workflow is all there is to see; it is measured as
this process's CPU time (`time.process_time`), so other work on the machine does not
count. Rows, each the best of --repeat interleaved runs bounded by --workflows and
--cap-s seconds:

- as shipped: progress events appended to the store's log, the store wrapped in
  `MeteredStore`, Prometheus workflow/step series recorded, tracing off;
- without the event log: `EventRecorder` replaced by one that records nothing;
- without the store metrics: the bare `MemoryStateStore`;
- with neither: roughly the engine before this work.

`x shipped` is time per workflow relative to the first row.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
import time
from typing import Any

import httpx
import orjson

SCRIPT = os.path.abspath(__file__)
sys.path.insert(0, os.path.dirname(os.path.dirname(SCRIPT)))

import structlog  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402

import orchestrator.lifecycle as lifecycle_module  # noqa: E402
from agents.client import AgentClient  # noqa: E402
from agents.transport_httpx import HttpxTransport  # noqa: E402
from orchestrator.builtins import BUILTIN_FALLBACKS  # noqa: E402
from orchestrator.chain import chain_definition  # noqa: E402
from orchestrator.dag.compiler import compile_workflow  # noqa: E402
from orchestrator.dag.engine import DagEngine  # noqa: E402
from orchestrator.dag.kinds import default_kinds  # noqa: E402
from orchestrator.events import EventRecorder  # noqa: E402
from orchestrator.lifecycle import WorkflowOrchestrator  # noqa: E402
from orchestrator.metered_store import MeteredStore  # noqa: E402
from orchestrator.metrics import StoreMetrics, WorkflowMetrics  # noqa: E402
from orchestrator.settings import default_registry  # noqa: E402
from state.memory import MemoryStateStore  # noqa: E402
from state.models import NodeRun, WorkflowState  # noqa: E402
from state.store import StateStore  # noqa: E402

ANSWERS: dict[str, Any] = {
    "nlp": {"intent": {"metric": "revenue", "group_by": ["region"]}},
    "data": {"columns": ["region"], "rows": [{"region": "EMEA"}]},
    "viz": {"spec": {"mark": "bar"}},
}


def _answer(request: httpx.Request) -> httpx.Response:
    agent = {"8001": "nlp", "8002": "data", "8003": "viz"}[str(request.url.port)]
    body = orjson.dumps({"status": "success", "data": ANSWERS[agent]})
    return httpx.Response(200, content=body, headers={"content-type": "application/json"})


class SilentRecorder(EventRecorder):
    """Records nothing: the engine without the event log."""

    def workflow(self, state: WorkflowState) -> None:
        return None

    def node(self, run: NodeRun) -> None:
        return None

    def retrying(self, agent: str, node_id: str, attempt: int, delay_s: float, error: str) -> None:
        return None

    async def finish(self, state: WorkflowState) -> None:
        return None


ROWS = {
    "as shipped": (True, True),
    "without the event log": (False, True),
    "without the store metrics": (True, False),
    "with neither": (False, False),
}


async def _run(events: bool, metered: bool, workflows: int, cap_s: float) -> float:
    lifecycle_module.EventRecorder = EventRecorder if events else SilentRecorder  # type: ignore[misc]
    registry = CollectorRegistry()
    store: StateStore = MemoryStateStore()
    if metered:
        store = MeteredStore(store, StoreMetrics(registry))
    async with httpx.AsyncClient(transport=httpx.MockTransport(_answer)) as http:
        client = AgentClient(default_registry(), HttpxTransport(http))
        kinds = default_kinds()
        runner = DagEngine(
            agents=client, registry=default_registry(), kinds=kinds, builtins=BUILTIN_FALLBACKS
        )
        chain = compile_workflow(
            chain_definition(timeout_s=60, max_parallel=10),
            agents=list(default_registry()),
            kinds=kinds,
            builtins=list(BUILTIN_FALLBACKS),
        )
        orchestrator = WorkflowOrchestrator(
            store=store,
            dag_engine=runner,
            metrics=WorkflowMetrics(registry=registry),
            leases=store.leases(),
        )
        await orchestrator.start()
        try:
            for _ in range(30):  # warm-up
                state = await orchestrator.submit(chain, {"query": "q"})
                await orchestrator.wait(state.workflow_id)
            gc.collect()
            done = 0
            # CPU time of this process: the machine's other load does not count.
            started = time.process_time()
            deadline = time.perf_counter() + cap_s
            while done < workflows and time.perf_counter() < deadline:
                state = await orchestrator.submit(chain, {"query": "q"})
                await orchestrator.wait(state.workflow_id)
                done += 1
            elapsed = time.process_time() - started
        finally:
            await orchestrator.close()
            await store.close()
    return elapsed / max(done, 1)


async def main(workflows: int, repeat: int, cap_s: float) -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    best = dict.fromkeys(ROWS, float("inf"))
    for _ in range(repeat):
        for name, (events, metered) in ROWS.items():
            best[name] = min(best[name], await _run(events, metered, workflows, cap_s))
    shipped = best["as shipped"]
    print(f"chain on the memory store, one at a time: best of {repeat} runs, "
          f"up to {workflows} workflows each")
    print(f"  {'row':28} {'CPU us/workflow':>16} {'x shipped':>10}")
    for name, seconds in best.items():
        print(f"  {name:28} {seconds * 1e6:16.1f} {seconds / shipped:10.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workflows", type=int, default=400)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--cap-s", type=float, default=20.0)
    args = parser.parse_args()
    asyncio.run(main(args.workflows, args.repeat, args.cap_s))
