"""The plan of a workflow, for display: levels, dependencies, critical path, parallelism.

Levels are for people only: the DAG engine never waits for a level, it starts each
node as soon as its own dependencies are done. Level i holds the nodes whose
longest chain of dependencies has i edges.

The critical path is the heaviest chain of dependencies. Nodes weigh their
`estimate_ms` when at least one node of the workflow carries one (nodes without
count 0 ms, so unit: "ms"); otherwise every node weighs 1 (unit: "nodes", the
length is the number of nodes on the path).

`max_parallelism` is the most nodes running at once if every node took the same
time: the widest level, capped by `options.max_parallel`. (With uneven durations
eager execution can run more: up to the width of the partial order.)

`triggers` gives the rule of every node that has dependencies, defaults resolved.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from orchestrator.dag.compiler import CompiledWorkflow
from orchestrator.dag.errors import DefinitionError, Problem
from orchestrator.dag.graph import critical_path, find_cycles, layer
from orchestrator.dag.model import WorkflowDef


@dataclass(frozen=True, slots=True)
class Plan:
    levels: list[list[str]]
    dependencies: dict[str, list[str]]
    critical_path: list[str]
    max_parallelism: int
    critical_path_length: float
    critical_path_unit: Literal["nodes", "ms"]
    # The trigger rule of every node with dependencies (defaults resolved).
    triggers: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "levels": self.levels,
            "dependencies": self.dependencies,
            "critical_path": self.critical_path,
            "critical_path_length": self.critical_path_length,
            "critical_path_unit": self.critical_path_unit,
            "max_parallelism": self.max_parallelism,
            "triggers": self.triggers,
        }


def plan_workflow(defn_or_compiled: WorkflowDef | CompiledWorkflow) -> Plan:
    """The plan of a compiled workflow, or of a bare definition (dependencies on
    unknown nodes ignored; DefinitionError if it has a cycle)."""
    if isinstance(defn_or_compiled, CompiledWorkflow):
        defn = defn_or_compiled.definition
        deps = defn_or_compiled.dependencies
        layering = defn_or_compiled.layering
    else:
        defn = defn_or_compiled
        known = {n.id for n in defn.nodes}
        deps = {}
        for n in defn.nodes:
            deps.setdefault(n.id, tuple(d for d in n.depends_on if d in known))
        layering = layer(deps)
        if layering.blocked:
            raise DefinitionError(
                Problem(
                    "cycle", f"dependency cycle: {' -> '.join([*c, c[0]])}", c[0], None, tuple(c)
                )
                for c in find_cycles(deps, layering.blocked)
            )
    estimates = {n.id: n.estimate_ms for n in defn.nodes if n.estimate_ms is not None}
    if estimates:
        path, length = critical_path(layering.order, deps, lambda n: estimates.get(n) or 0.0)
        unit: Literal["nodes", "ms"] = "ms"
    else:
        path, length = critical_path(layering.order, deps, 1.0)
        unit = "nodes"
    widest = max((len(level) for level in layering.levels), default=0)
    return Plan(
        levels=[list(level) for level in layering.levels],
        dependencies=dict(zip(deps, map(list, deps.values()), strict=True)),
        critical_path=path,
        max_parallelism=min(widest, defn.options.max_parallel),
        critical_path_length=length,
        critical_path_unit=unit,
        triggers={n.id: n.effective_trigger().value for n in defn.nodes if deps.get(n.id)},
    )
