"""Benchmark: msgspec or pydantic v2 for the workflow definition's typed model?

    python -m bench.definition_models [--nodes 10000] [--repeat 7] [--seed 1]

The same definition model twice: msgspec is the one the service uses
(orchestrator/dag/model.py with the built-in kinds' node types); the pydantic v2
model below mirrors it field for field (the same types, bounds, patterns, unknown
fields forbidden, the kind as the discriminator, the same cross-field rules). Both
decode the random DAGs of bench/dag_plan.py (graph and templated, --nodes nodes).

Columns, best of --repeat:

- python: decode and validate the already-parsed JSON (what the API does: the body
  is read by orjson, the `workflow` member handed to the model), in ms;
- json: decode and validate straight from the JSON bytes, in ms;
- peak: the peak of memory allocated while decoding from Python objects
  (tracemalloc), in MB: what 10,000 node objects cost.
"""

from __future__ import annotations

import argparse
import functools
import gc
import os
import random
import sys
import time
import tracemalloc
from collections.abc import Callable
from typing import Annotated, Any, Literal, Self, Union

SCRIPT = os.path.abspath(__file__)
sys.path.insert(0, os.path.dirname(os.path.dirname(SCRIPT)))

import msgspec  # noqa: E402
import orjson  # noqa: E402
from pydantic import BaseModel, ConfigDict, Field, model_validator  # noqa: E402

from bench.dag_plan import random_dag  # noqa: E402
from orchestrator.dag.kinds import default_kinds  # noqa: E402
from orchestrator.dag.model import NAME_PATTERN, NODE_ID_PATTERN  # noqa: E402

# Lists where the model has tuples: strict pydantic takes only a tuple for a tuple from
# Python objects (a JSON array is a list).
# -- the pydantic v2 mirror of orchestrator/dag/model.py and the built-in kinds --------

_STRICT = ConfigDict(extra="forbid", frozen=True, strict=True)
NodeId = Annotated[str, Field(pattern=NODE_ID_PATTERN)]
Name = Annotated[str, Field(pattern=NAME_PATTERN)]
Expr = Annotated[str, Field(min_length=1, max_length=2000)]
DotPath = Annotated[str, Field(min_length=1, max_length=500)]
Seconds = Annotated[float, Field(gt=0, le=86_400)]
Trigger = Literal[
    "all_success", "all_done", "one_success", "none_failed", "none_failed_min_one_success"
]
_MISSING: Any = object()


class PFallback(BaseModel):
    model_config = _STRICT
    agent: Name | None = None
    input: Any = _MISSING
    value: Any = _MISSING
    builtin: Name | None = None

    @model_validator(mode="after")
    def _one_form(self) -> Self:
        given = [self.agent is not None, self.value is not _MISSING, self.builtin is not None]
        if sum(given) != 1:
            raise ValueError("a fallback needs exactly one of 'agent', 'value', 'builtin'")
        return self


class PRetry(BaseModel):
    model_config = _STRICT
    max_attempts: Annotated[int, Field(ge=1, le=10)] | None = None
    base_delay_s: Annotated[float, Field(ge=0, le=60)] | None = None
    max_delay_s: Annotated[float, Field(ge=0, le=300)] | None = None


class PNode(BaseModel):
    model_config = _STRICT
    id: NodeId
    description: Annotated[str, Field(max_length=2000)] | None = None
    depends_on: list[Annotated[str, Field(min_length=1, max_length=64)]] = []
    when: Expr | None = None
    on_failure: Literal["stop", "continue"] | None = None
    fallback: PFallback | None = None
    timeout_s: Seconds | None = None
    estimate_ms: Annotated[float, Field(ge=0)] | None = None
    trigger: Trigger | None = None


class PAgentNode(PNode):
    kind: Literal["agent"]
    agent: Name
    input: Any = None
    retry: PRetry | None = None


class PCase(BaseModel):
    model_config = _STRICT
    when: Expr
    value: Annotated[str, Field(min_length=1)]


class PConditionNode(PNode):
    kind: Literal["condition"]
    expr: Expr | None = None
    cases: Annotated[list[PCase], Field(min_length=1)] | None = None
    default: Annotated[str, Field(min_length=1)] | None = None


class PTransformNode(PNode):
    kind: Literal["transform"]
    source: Any = _MISSING
    select: DotPath | None = None
    filter: Expr | None = None
    map: dict[Annotated[str, Field(pattern=NODE_ID_PATTERN)], DotPath] | None = None


class PAggregateNode(PNode):
    kind: Literal["aggregate"]
    op: Literal["merge", "concat", "sum", "avg", "count", "min", "max"]
    path: DotPath | None = None


class PValidateNode(PNode):
    kind: Literal["validate"]
    schema_: dict[str, Any] | bool = Field(alias="schema")
    source: Any = _MISSING


class POptions(BaseModel):
    model_config = _STRICT
    max_parallel: Annotated[int, Field(ge=1, le=1000)] = 32
    timeout_s: Seconds = 120.0
    on_failure: Literal["stop", "continue"] = "stop"


class PEdge(BaseModel):
    model_config = _STRICT
    source: NodeId
    target: NodeId
    id: Annotated[str, Field(max_length=200)] | None = None


PAnyNode = Annotated[
    Union[PAgentNode, PConditionNode, PTransformNode, PAggregateNode, PValidateNode],  # noqa: UP007
    Field(discriminator="kind"),
]


class PWorkflow(BaseModel):
    model_config = _STRICT
    nodes: Annotated[list[PAnyNode], Field(min_length=1)]
    name: Annotated[str, Field(min_length=1, max_length=200)] = "workflow"
    description: Annotated[str, Field(max_length=2000)] | None = None
    inputs: dict[str, Any] = Field(default_factory=dict)
    options: POptions = POptions()
    edges: list[PEdge] = []
    output: Any = None


# -- measuring ----------------------------------------------------------------------


def best_ms(fns: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """The best time of each function, run in turn (a B C A B C ...): a slow spell of
    a shared machine then hits every column alike."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            gc.collect()
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) * 1000.0)
    return {name: min(t) for name, t in times.items()}


def peak_mb(fn: Callable[[], object]) -> float:
    gc.collect()
    tracemalloc.start()
    try:
        kept = fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del kept
    return peak / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    model = default_kinds().definition_type()
    decoder = msgspec.json.Decoder(model)
    print(f"{'workload':>9} {'model':>8} {'python':>7} {'json':>7} {'peak':>6}   (ms, ms, MB)")
    for templated in (False, True):
        raw = random_dag(args.nodes, random.Random(args.seed), templated=templated)
        body = orjson.dumps(raw)
        # Both must accept the workload before anything is timed.
        msgspec.convert(raw, model)
        PWorkflow.model_validate(raw)
        workload = "templated" if templated else "graph"
        fns: dict[str, Callable[[], object]] = {
            "msgspec python": functools.partial(msgspec.convert, raw, model),
            "msgspec json": functools.partial(decoder.decode, body),
            "pydantic python": functools.partial(PWorkflow.model_validate, raw),
            "pydantic json": functools.partial(PWorkflow.model_validate_json, body),
        }
        best = best_ms(fns, args.repeat)
        for name in ("msgspec", "pydantic"):
            peak = peak_mb(fns[f"{name} python"])
            print(
                f"{workload:>9} {name:>8} {best[f'{name} python']:>7.1f} "
                f"{best[f'{name} json']:>7.1f} {peak:>6.1f}"
            )

if __name__ == "__main__":
    main()
