"""Benchmark: what the per-agent concurrency and max_parallel defaults cost or buy.

    .venv/bin/python -m bench.defaults [--runs 2]

Against stub agents that answer after a fixed latency (a child process on 127.0.0.1),
engine in-process on the memory store:

- the chain with agents answering in 200 ms and 150 workflows in flight, per-agent
  concurrency 32 (the old default) and 64 (the new one): a bulkhead caps a replica at
  concurrency / latency calls per second, whatever its CPU;
- the 20-node fan-out (18 wide) with agents answering in 20 ms, 1 in flight,
  max_parallel 10 (old) and 32 (new): one wave or two.

Bounded: a fixed number of workflows per row.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import dataclasses
import logging
import statistics
from typing import Any

import orjson
from aiohttp import web

from bench import targets
from bench.chain import _ANSWERS, _free_port, _registry, _start, _wait_listening


def _serve_slow_stubs(port: int, latency_s: float) -> None:
    """Child process: /nlp, /data and /viz answering after `latency_s`."""

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        await asyncio.sleep(latency_s)
        body = orjson.dumps(_ANSWERS[request.match_info["agent"]])
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_post("/{agent}/process", handle)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def _with_concurrency(concurrency: int) -> Any:
    from agents.registry import AgentRegistry

    def registry(port: int) -> AgentRegistry:
        return AgentRegistry(
            [dataclasses.replace(s, concurrency=concurrency) for s in _registry(port).values()]
        )

    return registry


async def _rows(runs: int) -> None:
    slow, fast = _free_port(), _free_port()
    children = [_start(_serve_slow_stubs, slow, 0.2), _start(_serve_slow_stubs, fast, 0.02)]
    try:
        await _wait_listening(slow)
        await _wait_listening(fast)
        chain = targets._chain_definition()
        for concurrency in (32, 64):
            targets._registry = _with_concurrency(concurrency)
            rates = [
                (await targets._engine_row("c", slow, chain, 150, 450, fake=False))[0].per_s
                for _ in range(runs)
            ]
            print(
                f"chain, agents answering in 200 ms, 150 in flight, agent concurrency "
                f"{concurrency:>2}: {statistics.median(rates):6.0f} wf/s "
                f"(runs: {', '.join(f'{r:.0f}' for r in rates)})"
            )
        targets._registry = _registry
        for max_parallel in (10, 32):
            definition = copy.deepcopy(targets.FANOUT_DEFINITION)
            definition["options"]["max_parallel"] = max_parallel
            p50s = [
                (await targets._engine_row("f", fast, definition, 1, 30, fake=False))[0].pct(0.5)
                for _ in range(runs)
            ]
            print(
                f"fan-out (18 wide), agents answering in 20 ms, 1 in flight, max_parallel "
                f"{max_parallel:>2}: p50 {statistics.median(p50s):6.1f} ms"
            )
    finally:
        for child in children:
            child.terminate()
            child.join(timeout=5)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=2, help="runs per row; the median is shown")
    args = parser.parse_args()
    from orchestrator.logs import configure_logging

    configure_logging("error")
    logging.disable(logging.WARNING)
    asyncio.run(asyncio.wait_for(_rows(args.runs), timeout=600))
