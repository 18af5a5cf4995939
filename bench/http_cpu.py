"""CPU per chain of the engine over real HTTP, A/B against another tree, interleaved.

    .venv/bin/python -m bench.http_cpu [--workflows 3000] [--pairs 4] [--against TREE]

Runs the built-in chain through the engine in-process on the memory store, 50 in
flight, against the zero-latency stub agents over real HTTP on 127.0.0.1 (what a
fake transport hides: the write-behind runs while agents answer, not within one
turn), and prints this process's CPU time (time.process_time) per chain; the stub
agents run in a child process, so their CPU is not counted. Wall time is noisy on a
shared machine, CPU time much less so.

With `--against TREE` each pair runs the chain once in TREE ("before") and once in
the current directory ("after"), each in a fresh process (`cd <tree> && PYTHONPATH=
<tree> python -m bench.http_cpu --one`; this file is run there, so the tree need
not have it), alternating which goes first, and prints
both medians and their ratio.

`--write-delay-s` sets the write-behind delay of the runs in the current directory only
(the service's default otherwise): `--against . --write-delay-s 60` compares the chain
with and without its running writes (a delay longer than the run leaves only the accept
and the terminal write), in the same tree.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import subprocess
import sys

import bench.targets as targets
from bench.chain import _free_port, _serve_stubs, _start, _wait_listening

CONCURRENCY = 50


async def ms_per_chain(workflows: int, write_delay_s: float | None = None) -> float:
    """CPU milliseconds per chain, engine over HTTP to stub agents in a child process."""
    from orchestrator.logs import configure_logging

    configure_logging("error")
    logging.disable(logging.WARNING)
    stub_port = _free_port()
    child = _start(_serve_stubs, stub_port)
    try:
        await _wait_listening(stub_port)
        definition = targets._chain_definition()
        # Passed only when set: a tree from before `write_delay_s` runs this file too.
        delay = {} if write_delay_s is None else {"write_delay_s": write_delay_s}
        _, cpu, nodes = await targets._engine_row(
            "http_cpu", stub_port, definition, CONCURRENCY, workflows, fake=False, **delay
        )
    finally:
        child.terminate()
        child.join(timeout=5)
    return cpu / (nodes / len(definition["nodes"])) * 1000.0


def _one_in(tree: str, workflows: int, loop: str, write_delay_s: float | None = None) -> float:
    # This file run in `tree` (which may predate it): its imports resolve there.
    argv = ["http_cpu", "--one", "--workflows", str(workflows), "--loop", loop]
    if write_delay_s is not None:
        argv += ["--write-delay-s", str(write_delay_s)]
    code = (
        f"import runpy, sys; sys.argv = {argv!r}; "
        f"runpy.run_path({__file__!r}, run_name='__main__')"
    )
    env = {**os.environ, "PYTHONPATH": tree}
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tree, env=env, check=True, capture_output=True, text=True,
    ).stdout
    return float(out.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workflows", type=int, default=3000)
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--against", help="the 'before' tree (a checkout of this repo)")
    parser.add_argument("--loop", choices=["auto", "asyncio", "uvloop"], default="asyncio")
    parser.add_argument("--one", action="store_true", help="one run here, print ms per chain")
    parser.add_argument(
        "--write-delay-s",
        type=float,
        help="the write-behind delay of the runs here (the 'after' runs with --against)",
    )
    args = parser.parse_args()
    if args.one or args.against is None:
        from orchestrator.collector import tune_collector
        from orchestrator.loop import loop_factory
        from orchestrator.settings import Settings

        tune_collector(Settings().gc_threshold)  # the collector as `orchestrator serve` sets it
        _, factory = loop_factory(args.loop)
        with asyncio.Runner(loop_factory=factory) as runner:
            ms = runner.run(ms_per_chain(args.workflows, args.write_delay_s))
            print(f"ms per chain {ms:.4f}")
        return
    here = os.getcwd()
    before: list[float] = []
    after: list[float] = []
    for pair in range(args.pairs):
        order = [(args.against, before, None), (here, after, args.write_delay_s)]
        for tree, runs, delay in order if pair % 2 == 0 else order[::-1]:
            runs.append(_one_in(tree, args.workflows, args.loop, delay))
        print(f"pair {pair + 1}: before {before[-1]:.4f}  after {after[-1]:.4f} ms", flush=True)
    b, a = statistics.median(before), statistics.median(after)
    print(f"median CPU per chain over HTTP: before {b:.4f} ms, after {a:.4f} ms ({a / b:.3f}x)")


if __name__ == "__main__":
    main()
