"""A fixed amount of engine work to count instructions of: no timing, no floor.

    valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        .venv/bin/python -m bench.engine_run --shape chain --workflows 200 --read-timeout-s 600

Runs `--workflows` workflows of the chain or the fan-out (bench.targets' shapes) through
the engine in-process on the memory store, `--concurrency` in flight, against the stub
agents (a child process on 127.0.0.1, counted apart by valgrind), with the real aiohttp
transport or `--transport fake`. Run it twice, with N and with M workflows: the
difference of the two instruction counts over M - N is the cost of one workflow, start-up
and warm-up left out. On a shared machine that count is stable to about half a per cent
where CPU time moves by tens of per cent.

`--read-timeout-s` replaces every agent's timeouts for the count only: under valgrind the
loop runs ~50x slower, and the 6 s default read timeout would fire (and retries run) at 50
in flight, which never happens natively.

`--write-delay-s` sets the write-behind delay (the service's default otherwise). Set
past the run's length (`--write-delay-s 60`), a workflow writes only its accept and its
terminal document: the difference with the default is what the running writes and event
appends cost over real HTTP (the fake transport ends a chain within one turn, with none).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
from typing import Any

import bench.targets as targets
from bench.chain import _free_port, _start, _wait_listening


def _registry_with(timeout_s: float) -> Any:
    from agents.registry import AgentRegistry, AgentTimeouts

    shipped = targets._registry

    def registry(stub_port: int) -> Any:
        timeouts = AgentTimeouts(connect=timeout_s, read=timeout_s, write=timeout_s, pool=timeout_s)
        return AgentRegistry(
            [dataclasses.replace(s, timeouts=timeouts) for s in shipped(stub_port).values()]
        )

    return registry


async def main(args: argparse.Namespace) -> None:
    from orchestrator.logs import configure_logging

    configure_logging("error")
    logging.disable(logging.WARNING)
    if args.read_timeout_s is not None:
        targets._registry = _registry_with(args.read_timeout_s)
    definition = (
        targets.FANOUT_DEFINITION if args.shape == "fanout" else targets._chain_definition()
    )
    stub_port = _free_port()
    stubs = _start(targets._serve_stubs, stub_port)
    try:
        await _wait_listening(stub_port)
        await targets._engine_row(
            "run",
            stub_port,
            definition,
            args.concurrency,
            args.workflows,
            fake=args.transport == "fake",
            write_delay_s=args.write_delay_s,
        )
    finally:
        stubs.terminate()
        stubs.join(timeout=5)


if __name__ == "__main__":
    from orchestrator.collector import tune_collector
    from orchestrator.settings import Settings

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shape", choices=["chain", "fanout"], default="chain")
    parser.add_argument("--workflows", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--transport", choices=["http", "fake"], default="http")
    parser.add_argument("--read-timeout-s", type=float, default=None)
    parser.add_argument(
        "--write-delay-s",
        type=float,
        default=None,
        help="the write-behind delay (default: the service's); one longer than a run "
        "leaves only the accept and terminal writes, to count what the running ones cost",
    )
    parsed = parser.parse_args()
    tune_collector(Settings().gc_threshold)  # the collector as `orchestrator serve` sets it
    asyncio.run(asyncio.wait_for(main(parsed), timeout=1_500))
