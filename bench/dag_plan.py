"""Benchmark: validating and planning random DAGs of 100, 1,000 and 10,000 nodes.

    python -m bench.dag_plan [--sizes 100,1000,10000] [--repeat 5] [--seed 1]

Two workloads of random DAGs (node i depends on 1-3 of the 50 nodes before it):

- graph: agent nodes with no templates or expressions: the graph work alone
  (ids, registries, dependencies, cycles, levels, critical path);
- templated: every node's input reads each of its dependencies with a template,
  and one node in ten has a `when` expression: every template and expression is
  compiled and every reference checked for ancestry.

Columns (milliseconds, best of --repeat):

- decode: the typed model's check alone (`msgspec.convert` into the definition
  type of the built-in kinds: types, bounds, patterns, unknown fields);
- parse: decode + size limits + depends_on without repeats + edges folded
  (`parse_definition`);
- validate: `compile_workflow` of the parsed definition;
- plan: `plan_workflow` of the compiled workflow;
- val+plan: validate + plan, the target (10,000 nodes under 50 ms);
- gc: the garbage collection the engine defers while it compiles (it pauses the
  collector), paid by whatever allocates next; measured as `gc.collect(1)` at once;
- total: parse + validate + plan + gc, i.e. what POST /api/workflows/validate costs.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

SCRIPT = os.path.abspath(__file__)
# Runnable as `python bench/dag_plan.py` too: make the project importable.
sys.path.insert(0, os.path.dirname(os.path.dirname(SCRIPT)))

import msgspec  # noqa: E402

from orchestrator.dag.compiler import compile_workflow  # noqa: E402
from orchestrator.dag.kinds import default_kinds  # noqa: E402
from orchestrator.dag.parse import parse_definition  # noqa: E402
from orchestrator.dag.plan import plan_workflow  # noqa: E402

AGENTS = {"nlp", "data", "viz"}
TARGET_MS = 50.0


def random_dag(n: int, rng: random.Random, *, templated: bool) -> dict[str, Any]:
    nodes: list[dict[str, Any]] = []
    for i in range(n):
        window = range(max(0, i - 50), i)
        deps = sorted(rng.sample(window, min(len(window), rng.randint(1, 3)))) if i else []
        node: dict[str, Any] = {
            "id": f"n{i}",
            "kind": "agent",
            "agent": rng.choice(sorted(AGENTS)),
            "depends_on": [f"n{d}" for d in deps],
        }
        if templated:
            node["input"] = {f"in{d}": f"{{{{ n{d}.rows }}}}" for d in deps} or {
                "q": "{{ inputs.q }}"
            }
            if deps and i % 10 == 0:
                node["when"] = f"len(n{deps[0]}.rows) > 0"
        nodes.append(node)
    return {"name": f"random-{n}", "inputs": {"q": "x"}, "nodes": nodes}


def best_ms(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
    return min(times)


def gc_debt_ms(fn: Callable[[], object], repeat: int) -> float:
    """The young-generation collection left over after `fn` (best of `repeat`)."""
    times = []
    for _ in range(repeat):
        gc.collect()
        keep = fn()
        start = time.perf_counter()
        gc.collect(1)
        times.append((time.perf_counter() - start) * 1000.0)
        del keep
    return min(times)


@dataclass(frozen=True)
class Row:
    decode: float
    parse: float
    validate: float
    plan: float
    gc: float
    total: float


def measure(raw: dict[str, Any], repeat: int) -> Row:
    kinds = default_kinds()
    model = kinds.definition_type()
    defn = parse_definition(raw, kinds=kinds)
    compiled = compile_workflow(defn, agents=AGENTS, kinds=kinds)

    def everything() -> object:
        return plan_workflow(compile_workflow(raw, agents=AGENTS, kinds=kinds))

    gc_ms = gc_debt_ms(everything, repeat)
    return Row(
        decode=best_ms(lambda: msgspec.convert(raw, model), repeat),
        parse=best_ms(lambda: parse_definition(raw, kinds=kinds), repeat),
        validate=best_ms(lambda: compile_workflow(defn, agents=AGENTS, kinds=kinds), repeat),
        plan=best_ms(lambda: plan_workflow(compiled), repeat),
        gc=gc_ms,
        total=best_ms(everything, repeat) + gc_ms,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    print(
        f"{'workload':>9} {'nodes':>6} {'edges':>6} {'decode':>7} {'parse':>7} "
        f"{'validate':>8} {'plan':>6} {'val+plan':>8} {'gc':>6} {'total':>7}   (ms)"
    )
    verdicts = []
    for templated in (False, True):
        rng = random.Random(args.seed)
        workload = "templated" if templated else "graph"
        for n in (int(s) for s in args.sizes.split(",")):
            raw = random_dag(n, rng, templated=templated)
            edges = sum(len(node["depends_on"]) for node in raw["nodes"])
            row = measure(raw, args.repeat)
            both = row.validate + row.plan
            print(
                f"{workload:>9} {n:>6} {edges:>6} {row.decode:>7.1f} "
                f"{row.parse:>7.1f} {row.validate:>8.1f} {row.plan:>6.1f} {both:>8.1f} "
                f"{row.gc:>6.1f} {row.total:>7.1f}"
            )
            if n == 10_000:
                met = "met" if both < TARGET_MS else "NOT met"
                verdicts.append(
                    f"{workload}: 10,000 nodes validated and planned in {both:.1f} ms "
                    f"(target < {TARGET_MS:.0f} ms: {met}); with decoding, parsing and gc "
                    f"{row.total:.1f} ms"
                )
    for line in verdicts:
        print(line)


if __name__ == "__main__":
    main()
