"""What tracing costs on the hot path: off (the default) against on, in one process.

    python -m bench.tracing [--calls 3000] [--repeat 5] [--cap-s 20]

Two measurements, each row the best of --repeat interleaved runs bounded by --calls and
--cap-s seconds (other work on the machine only ever slows a run down):

- **agent call**: `AgentClient.call` over httpx with an in-process `MockTransport`
  answering the agent contract at once, so the client's own cost is all there is to see;
- **workflow**: the built-in NLP -> Data -> Viz chain run by `DagEngine` over that
  client (state kept in memory, nothing written).

Rows: tracer None (tracing off: what the service runs unless OTEL_EXPORTER_OTLP_ENDPOINT
is set); the OpenTelemetry API's no-op tracer (what "off" would cost had we always gone
through the API); the SDK tracer with no exporter (spans built and dropped: the floor of
"on"). `x off` is time per operation relative to the first row.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
import time
from collections.abc import Awaitable, Callable

import httpx
import orjson

SCRIPT = os.path.abspath(__file__)
sys.path.insert(0, os.path.dirname(os.path.dirname(SCRIPT)))

import structlog  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.trace import NoOpTracerProvider, Tracer  # noqa: E402

from agents.client import AgentClient  # noqa: E402
from agents.transport_httpx import HttpxTransport  # noqa: E402
from orchestrator.chain import chain_definition  # noqa: E402
from orchestrator.dag.compiler import compile_workflow  # noqa: E402
from orchestrator.dag.engine import DagEngine  # noqa: E402
from orchestrator.dag.kinds import default_kinds  # noqa: E402
from orchestrator.keyword_intent import keyword_intent_fallback  # noqa: E402
from orchestrator.settings import default_registry  # noqa: E402
from state.models import WorkflowState  # noqa: E402

ANSWER = orjson.dumps({"status": "success", "data": {"intent": {"metric": "revenue"}}})


def _answer(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, content=ANSWER, headers={"content-type": "application/json"})


TRACERS: dict[str, Callable[[], Tracer | None]] = {
    "tracing off (tracer None)": lambda: None,
    "OTel API no-op tracer": lambda: NoOpTracerProvider().get_tracer("bench"),
    "OTel SDK tracer, no exporter": lambda: TracerProvider().get_tracer("bench"),
}


async def _time(op: Callable[[], Awaitable[object]], calls: int, cap_s: float) -> float:
    """Seconds per operation over up to `calls` operations or `cap_s` seconds."""
    for _ in range(50):
        await op()
    gc.collect()
    done = 0
    started = time.perf_counter()
    deadline = started + cap_s
    while done < calls and time.perf_counter() < deadline:
        await op()
        done += 1
    return (time.perf_counter() - started) / max(done, 1)


Op = Callable[[], Awaitable[object]]


async def _agent_call_op(tracer: Tracer | None) -> tuple[Op, httpx.AsyncClient]:
    http = httpx.AsyncClient(transport=httpx.MockTransport(_answer))
    client = AgentClient(default_registry(), HttpxTransport(http), tracer=tracer)

    async def op() -> object:
        return await client.call("nlp", {"query": "q"}, workflow_id="wf", node_id="nlp")

    return op, http


async def _workflow_op(tracer: Tracer | None) -> tuple[Op, httpx.AsyncClient]:
    http = httpx.AsyncClient(transport=httpx.MockTransport(_answer))
    client = AgentClient(default_registry(), HttpxTransport(http), tracer=tracer)
    kinds = default_kinds()
    builtins = {"keyword_intent": keyword_intent_fallback}
    runner = DagEngine(
        agents=client, registry=default_registry(), kinds=kinds, builtins=builtins, tracer=tracer
    )
    chain = compile_workflow(
        chain_definition(timeout_s=60, max_parallel=10),
        agents=list(default_registry()),
        kinds=kinds,
        builtins=list(builtins),
    )

    async def ignore(_: WorkflowState) -> None:
        return None

    async def op() -> object:
        state = WorkflowState(workflow_id="wf", definition_name="chain", inputs={"query": "q"})
        await runner.run(chain, state, on_transition=ignore)
        return state

    return op, http


async def main(calls: int, repeat: int, cap_s: float) -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))  # warnings off
    for title, make, per in (
        ("agent call", _agent_call_op, calls),
        ("workflow (chain, 3 agent nodes)", _workflow_op, max(calls // 3, 1)),
    ):
        best = dict.fromkeys(TRACERS, float("inf"))
        for _ in range(repeat):
            for name, tracer in TRACERS.items():
                op, http = await make(tracer())
                try:
                    best[name] = min(best[name], await _time(op, per, cap_s))
                finally:
                    await http.aclose()
        off = best["tracing off (tracer None)"]
        print(f"\n{title}: best of {repeat} runs, up to {per} operations each")
        print(f"  {'row':34} {'us/op':>9} {'x off':>7}")
        for name, seconds in best.items():
            print(f"  {name:34} {seconds * 1e6:9.1f} {seconds / off:7.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--cap-s", type=float, default=20.0)
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.repeat, args.cap_s))
