"""Checks a definition against the registries and the graph, and compiles it once.

Every problem is collected before anything runs, each with its node id:
duplicate or reserved ids, unknown kinds, dependencies, agents and built-ins, a
`trigger` on a node without dependencies,
cycles (one concrete cycle per strongly connected component, listing its nodes),
malformed templates and expressions, and reads of nodes that are not ancestors
(a node may only read what is guaranteed to have finished before it starts).
`compile_workflow` adds the structural checks of `parse` and returns the
`CompiledWorkflow` the DAG engine executes: templates and expressions compiled once.
"""

from __future__ import annotations

import keyword
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from msgspec import UNSET

from orchestrator.dag.errors import DefinitionError, Problem
from orchestrator.dag.expressions import ALLOWED_FUNCTIONS, Expression, ExpressionError
from orchestrator.dag.expressions import compile_expression as _compile_expression
from orchestrator.dag.graph import Layering, ancestor_test, find_cycles, layer
from orchestrator.dag.kinds import Compiled, NodeKind, NodeKindRegistry, default_kinds
from orchestrator.dag.model import FallbackKind, NodeDef, UnreadNode, WorkflowDef
from orchestrator.dag.parse import DEFAULT_MAX_NODES, gc_paused, parse_lenient
from orchestrator.dag.templates import Template, TemplateError, compile_template
from orchestrator.dag.triggers import TriggerRule

INPUTS = "inputs"
# Ids that would collide with names expressions and templates already give meaning to.
RESERVED_IDS: frozenset[str] = frozenset(
    {INPUTS, "item", *ALLOWED_FUNCTIONS, *keyword.kwlist, "true", "false", "null"}
)


@dataclass(slots=True)
class CompiledNode:
    """A node ready to run: its kind, compiled params, `when` and fallback input.

    Read-only by contract (not frozen: building 10,000 of them is on the API's path).
    """

    node: NodeDef
    index: int
    kind: NodeKind
    compiled: Compiled
    when: Expression | None = None
    fallback_input: Template | None = None
    # The node's trigger rule, its default resolved (dag/triggers.py).
    trigger: TriggerRule = TriggerRule.ALL_SUCCESS
    # The agent the node calls, when it calls exactly one (agent nodes): read three times
    # per node run (its state, its context, its log context), so worked out once here.
    agent: str | None = field(init=False)
    # The node's id and its kind's name (`node.id`, `node.kind`), read several times per
    # node run: plain fields, set once per definition, where properties were a Python
    # call at every read (twelve per chain run).
    id: str = field(init=False)
    kind_name: str = field(init=False)

    def __post_init__(self) -> None:
        agents = self.compiled.agents
        self.agent = next(iter(agents)) if len(agents) == 1 else None
        self.id = self.node.id
        self.kind_name = self.node.kind


@dataclass(frozen=True, slots=True)
class CompiledWorkflow:
    """A definition that passed every check, compiled once; safe to run many times."""

    definition: WorkflowDef
    nodes: Mapping[str, CompiledNode]
    dependencies: Mapping[str, tuple[str, ...]]
    layering: Layering
    sinks: tuple[str, ...]
    output: Template | None = None
    # The nodes whose outputs a template of this workflow may read (by root name): the
    # sizes of those are remembered when they are kept (orchestrator.dag.values).
    read: frozenset[str] = frozenset()

    @property
    def name(self) -> str:
        return self.definition.name

    @property
    def dependents(self) -> Mapping[str, Sequence[str]]:
        """Node -> the nodes that depend on it directly (read-only by contract)."""
        return self.layering.dependents


@dataclass(slots=True)
class _Analysis:
    problems: list[Problem] = field(default_factory=list)
    compiled: dict[str, CompiledNode] = field(default_factory=dict)
    deps: dict[str, tuple[str, ...]] = field(default_factory=dict)
    layering: Layering | None = None
    output: Template | None = None

    def add(
        self,
        code: str,
        message: str,
        node_id: str | None = None,
        path: str | None = None,
        nodes: tuple[str, ...] = (),
    ) -> None:
        self.problems.append(Problem(code, message, node_id, path, nodes))


def check_definition(
    defn: WorkflowDef,
    *,
    agents: Collection[str],
    kinds: NodeKindRegistry | None = None,
    builtins: Collection[str] = (),
) -> list[Problem]:
    """Every problem of `defn` against the registries and as a graph ([] if none)."""
    with gc_paused():
        return _analyse(
            defn, agents=agents, kinds=kinds or default_kinds(), builtins=builtins
        ).problems


def compile_workflow(
    raw: object,
    *,
    agents: Collection[str],
    kinds: NodeKindRegistry | None = None,
    builtins: Collection[str] = (),
    max_nodes: int = DEFAULT_MAX_NODES,
) -> CompiledWorkflow:
    """Parse (unless `raw` is already a WorkflowDef), validate and compile.

    Raises DefinitionError with the structural and the semantic problems together.
    """
    with gc_paused():
        return _compile(
            raw,
            agents=agents,
            kinds=kinds or default_kinds(),
            builtins=builtins,
            max_nodes=max_nodes,
        )


def _compile(
    raw: object,
    *,
    agents: Collection[str],
    kinds: NodeKindRegistry,
    builtins: Collection[str],
    max_nodes: int,
) -> CompiledWorkflow:
    if isinstance(raw, WorkflowDef):
        defn, problems, malformed = raw, [], set[str]()
        if len(raw.nodes) > max_nodes:
            raise DefinitionError(
                [
                    Problem(
                        "too_many_nodes",
                        f"the workflow has {len(raw.nodes)} nodes; the limit is {max_nodes}",
                        path="nodes",
                    )
                ]
            )
    else:
        parsed = parse_lenient(raw, max_nodes=max_nodes, kinds=kinds)
        if parsed.definition is None:
            raise DefinitionError(parsed.problems)
        defn, problems, malformed = parsed.definition, parsed.problems, parsed.malformed
    analysis = _analyse(defn, agents=agents, kinds=kinds, builtins=builtins, malformed=malformed)
    problems = problems + analysis.problems
    if problems:
        raise DefinitionError(problems)
    assert analysis.layering is not None
    dependents = analysis.layering.dependents
    return CompiledWorkflow(
        definition=defn,
        nodes=analysis.compiled,
        dependencies=analysis.deps,
        layering=analysis.layering,
        sinks=tuple([n for n, ds in dependents.items() if not ds]),
        output=analysis.output,
        read=_read_by_templates(analysis),
    )


def _read_by_templates(analysis: _Analysis) -> frozenset[str]:
    """Every root name a node's params, a fallback input or the output may read."""
    read: set[str] = set()
    for cn in analysis.compiled.values():
        read |= cn.compiled.references
        if cn.fallback_input is not None:
            read |= cn.fallback_input.references
    if analysis.output is not None:
        read |= analysis.output.references
    return frozenset(read)


def _analyse(
    defn: WorkflowDef,
    *,
    agents: Collection[str],
    kinds: NodeKindRegistry,
    builtins: Collection[str],
    malformed: Collection[str] = (),
) -> _Analysis:
    out = _Analysis()
    first = _check_ids(defn, out)
    agent_names = frozenset(agents)
    ids = set(first)
    # (node, its index, root names read, where they are read: "" params, "when", ...)
    reads: list[tuple[NodeDef, int, frozenset[str], str]] = []
    for i, node in enumerate(defn.nodes):
        if first.get(node.id) != i:
            continue  # a duplicate: reported, and left out of the graph
        deps = node.depends_on
        if not ids.issuperset(deps):
            for d in deps:
                if d not in first:
                    out.add(
                        "unknown_dependency",
                        f"node {node.id!r} depends on {d!r}, which is not a node",
                        node.id,
                        f"nodes/{i}/depends_on",
                    )
            deps = tuple(d for d in deps if d in first)
        out.deps[node.id] = deps
        _check_trigger(node, i, out)
        # A node parsing could not read (an UnreadNode) had its problems reported there.
        unread = node.id in malformed or isinstance(node, UnreadNode)
        compiled = _compile_node(node, i, kinds, unread, agent_names, builtins, out)
        if compiled is None:
            continue
        out.compiled[node.id] = compiled
        # Reads of "inputs" and of direct dependencies (nearly all of them) are settled
        # here; the rest wait for the whole graph (_check_reads).
        names = compiled.compiled.references
        if names and not _direct(names, deps):
            reads.append((node, i, names, ""))
        if compiled.when is not None and not _direct(compiled.when.names, deps):
            reads.append((node, i, compiled.when.names, "/when"))
        fallback = compiled.fallback_input
        if fallback is not None and not _direct(fallback.references, deps):
            reads.append((node, i, fallback.references, "/fallback/input"))
    out.layering = layering = layer(out.deps)
    if layering.blocked:
        for cycle in find_cycles(out.deps, layering.blocked):
            shown = " -> ".join([*cycle, cycle[0]])
            out.add(
                "cycle",
                f"dependency cycle: {shown} (each depends on the next)",
                cycle[0],
                f"nodes/{first[cycle[0]]}/depends_on",
                tuple(cycle),
            )
    else:
        _check_reads(reads, first, out.deps, out)
    _check_output(defn, first, out)
    return out


def _check_ids(defn: WorkflowDef, out: _Analysis) -> dict[str, int]:
    first: dict[str, int] = {}
    for i, node in enumerate(defn.nodes):
        if node.id in first:
            out.add(
                "duplicate_id",
                f"node id {node.id!r} is used more than once (nodes #{first[node.id]} and #{i})",
                node.id,
                f"nodes/{i}/id",
            )
            continue
        first[node.id] = i
        if node.id in RESERVED_IDS:
            out.add(
                "reserved_id",
                f"node id {node.id!r} is reserved; choose another",
                node.id,
                f"nodes/{i}/id",
            )
    return first


def _compile_node(
    node: NodeDef,
    i: int,
    kinds: NodeKindRegistry,
    malformed: bool,
    agents: frozenset[str],
    builtins: Collection[str],
    out: _Analysis,
) -> CompiledNode | None:
    if malformed:
        # Parsing reported what is wrong with it (an unknown kind too): it only takes
        # part in the graph checks.
        return None
    kind = kinds.get(node.kind)
    if kind is None:
        known = ", ".join(sorted(kinds))
        out.add(
            "unknown_kind",
            f"node {node.id!r}: unknown kind {node.kind!r} (known: {known})",
            node.id,
            f"nodes/{i}/kind",
        )
        return None
    ok = True
    compiled: Compiled | None = None
    try:
        compiled = kind.compile(node)
    except DefinitionError as exc:
        ok = False
        for p in exc.problems:
            path = f"nodes/{i}/{p.path}" if p.path else f"nodes/{i}"
            out.problems.append(Problem(p.code, p.message, node.id, path, p.nodes))
    if compiled is not None and not compiled.agents <= agents:
        ok = False
        for agent in sorted(compiled.agents - agents):
            out.add(
                "unknown_agent",
                _unknown_agent(node, agent, agents),
                node.id,
                f"nodes/{i}/agent",
            )
    when = None
    if node.when is not None:
        when = _when(node, i, out)
        ok = ok and when is not None
    fallback_input = None
    if node.fallback is not None:
        fallback_input, fallback_ok = _fallback(node, i, agents, builtins, out)
        ok = ok and fallback_ok
    if not ok or compiled is None:
        return None
    return CompiledNode(node, i, kind, compiled, when, fallback_input, node.effective_trigger())


def _check_trigger(node: NodeDef, i: int, out: _Analysis) -> None:
    # A rule over no dependencies never applies: most likely a forgotten depends_on.
    if node.trigger is not None and not node.depends_on:
        out.add(
            "trigger_without_dependencies",
            f"node {node.id!r}: trigger {node.trigger.value!r} has no dependencies to apply to",
            node.id,
            f"nodes/{i}/trigger",
        )


def _unknown_agent(node: NodeDef, agent: str, agents: Collection[str]) -> str:
    known = ", ".join(sorted(agents)) or "none"
    return f"node {node.id!r}: unknown agent {agent!r} (registered: {known})"


def _when(node: NodeDef, i: int, out: _Analysis) -> Expression | None:
    if node.when is None:
        return None
    try:
        return _compile_expression(node.when)
    except ExpressionError as exc:
        out.add(
            "invalid_expression", f"node {node.id!r}: 'when': {exc}", node.id, f"nodes/{i}/when"
        )
        return None


def _fallback(
    node: NodeDef, i: int, agents: Collection[str], builtins: Collection[str], out: _Analysis
) -> tuple[Template | None, bool]:
    fb = node.fallback
    if fb is None:
        return None, True
    if fb.kind is FallbackKind.BUILTIN and fb.target not in builtins:
        known = ", ".join(sorted(builtins)) or "none"
        out.add(
            "unknown_builtin",
            f"node {node.id!r}: unknown built-in fallback {fb.target!r} (known: {known})",
            node.id,
            f"nodes/{i}/fallback/builtin",
        )
        return None, False
    if fb.kind is not FallbackKind.AGENT:
        return None, True
    ok = True
    if fb.target not in agents:
        ok = False
        out.add(
            "unknown_agent",
            _unknown_agent(node, str(fb.target), agents) + " (fallback)",
            node.id,
            f"nodes/{i}/fallback/agent",
        )
    if fb.input is UNSET:
        return None, ok
    try:
        return compile_template(fb.input), ok
    except TemplateError as exc:
        out.add(
            "invalid_template",
            f"node {node.id!r}: fallback input: {exc}",
            node.id,
            f"nodes/{i}/fallback/input",
        )
        return None, False


def _direct(names: frozenset[str], deps: tuple[str, ...]) -> bool:
    """Whether every name is "inputs" or one of `deps` (no graph search needed)."""
    # A loop, not a set difference: both are a handful of items, and nothing is built.
    for name in names:
        if name not in deps and name != INPUTS:
            return False
    return True


def _check_reads(
    reads: list[tuple[NodeDef, int, frozenset[str], str]],
    first: Mapping[str, int],
    deps: Mapping[str, tuple[str, ...]],
    out: _Analysis,
) -> None:
    if not reads:
        return
    is_ancestor = ancestor_test(deps)
    for node, i, names, where in reads:
        path = f"nodes/{i}{where}"
        for name in sorted(names.difference(deps[node.id])):
            if name == INPUTS:
                continue
            if name == node.id:
                out.add(
                    "invalid_reference", f"node {node.id!r} reads its own output", node.id, path
                )
            elif name not in first:
                out.add(
                    "unknown_reference",
                    f"node {node.id!r} reads {name!r}, which is neither 'inputs' nor a node",
                    node.id,
                    path,
                )
            elif not is_ancestor(name, node.id):
                out.add(
                    "not_an_ancestor",
                    f"node {node.id!r} reads {name!r}, which it does not depend on "
                    f"(directly or indirectly): add {name!r} to its depends_on",
                    node.id,
                    path,
                )


def _check_output(defn: WorkflowDef, first: Mapping[str, int], out: _Analysis) -> None:
    if defn.output is None:
        return
    try:
        out.output = compile_template(defn.output)
    except TemplateError as exc:
        out.add("invalid_template", f"output: {exc}", path="output")
        return
    for name in sorted(out.output.references):
        if name != INPUTS and name not in first:
            out.add(
                "unknown_reference",
                f"output reads {name!r}, which is neither 'inputs' nor a node",
                path="output",
            )
