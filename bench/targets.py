"""Benchmark: the performance targets of issue 11, every row with its ratio to a floor.

    REDIS_URL=redis://127.0.0.1:6411/14 .venv/bin/python -m bench.targets \
        [--runs 3] [--workflows 1000] [--loop auto|asyncio|uvloop] [--gc-threshold N]

Workloads, against zero-latency stub agents in a child process on 127.0.0.1:

- chain: NLP -> Data -> Viz (the built-in definition);
- fan-out: 20 nodes, root -> 18 in parallel -> join.

Floors, measured in the same run: the same calls made directly with one shared
`aiohttp.ClientSession` (in-process), and `floor_service`, a minimal aiohttp server
(own process) whose handler makes the chain's calls with one shared session.

`--loop` picks the event loop of every process measured (this one, floor_service
and the service, through ORCH_EVENT_LOOP), and `--gc-threshold` the garbage
collector's first threshold of each (the service's ORCH_GC_THRESHOLD, default 50,000;
see orchestrator/collector.py): ratios compare like with like.

Rows: each the median of `--runs` runs (runs interleaved, so the machine's other
work is shared out); every in-process row runs in a fresh process of its own, and the
service rows are driven from one (`_in_fresh_process` says why). To measure another
checkout, start the run in it: `python -m` puts the current directory ahead of
PYTHONPATH (the first line printed names the code measured). CPU per node runs the
engine with a fake transport that answers at once (no network): process CPU time /
nodes run. Peak RSS runs each fan-out at 50 in flight in a fresh process and reads its
ru_maxrss. Bounded: a fixed number of workflows per row, and the whole run by a time cap.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import multiprocessing
import os
import resource
import statistics
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp
import orjson
from aiohttp import web

from bench.chain import (
    _ANSWERS,
    Row,
    _drive,
    _free_port,
    _registry,
    _serve_api,
    _serve_stubs,
    _service,
    _start,
    _wait_listening,
)

if TYPE_CHECKING:  # (imported where used: a spawned row process loads only what it runs)
    from agents.registry import AgentRegistry
    from agents.transport import AgentTransport
    from orchestrator.dag.compiler import CompiledWorkflow
    from orchestrator.dag.engine import DagEngine

QUERY = "average revenue by region in 2024"
T = TypeVar("T")
# The whole run's time cap (a bench must stop by itself), and so any one process's.
_RUN_CAP_S = 1_500
# What `--only` can pick: the in-process engine rows (with their floors), the service
# rows, CPU per node with the fake transport, state writes per workflow, peak RSS.
ROW_GROUPS = ("engine", "service", "cpu", "writes", "rss")
FANOUT_WIDTH = 18

FANOUT_DEFINITION: dict[str, Any] = {
    "name": "fanout",
    "options": {"on_failure": "stop"},
    "nodes": [
        {"id": "root", "kind": "agent", "agent": "nlp", "input": {"query": "{{ inputs.query }}"}},
        *(
            {
                "id": f"part{i}",
                "kind": "agent",
                "agent": "data",
                "depends_on": ["root"],
                "input": {"intent": "{{ root.intent }}", "part": i},
            }
            for i in range(FANOUT_WIDTH)
        ),
        {
            "id": "join",
            "kind": "agent",
            "agent": "viz",
            "depends_on": [f"part{i}" for i in range(FANOUT_WIDTH)],
            "input": {"intent": "{{ root.intent }}"},
        },
    ],
}


# -- floors ---------------------------------------------------------------------------


class _Floor:
    """The same calls with one shared aiohttp session, no orchestration."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base

    async def post(self, agent: str, node_id: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        body = orjson.dumps({"workflow_id": "w", "step_id": node_id, "input": payload})
        async with self.session.post(
            f"{self.base}/{agent}/process", data=body, headers={"Content-Type": "application/json"}
        ) as r:
            data: dict[str, Any] = orjson.loads(await r.read())["data"]
            return data

    async def chain(self) -> dict[str, Any]:
        nlp = await self.post("nlp", "nlp", {"query": QUERY})
        data = await self.post("data", "data", {"intent": nlp["intent"]})
        viz = await self.post("viz", "viz", {"intent": nlp["intent"], **data})
        return {"intent": nlp["intent"], "data": data, "chart": viz.get("spec")}

    async def fanout(self) -> None:
        root = await self.post("nlp", "root", {"query": QUERY})
        await asyncio.gather(
            *(
                self.post("data", f"part{i}", {"intent": root["intent"], "part": i})
                for i in range(FANOUT_WIDTH)
            )
        )
        await self.post("viz", "join", {"intent": root["intent"]})


# The floor's pool. Not imported from agents.transport: the RSS floor process must not
# load our packages. The floor is not starved of connections by it at 50 in flight.
FLOOR_CONNECTIONS = 256


def _session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=FLOOR_CONNECTIONS))


async def _floor_row(name: str, stub_port: int, work: str, conc: int, n: int) -> Row:
    async with _session() as session:
        floor = _Floor(session, f"http://127.0.0.1:{stub_port}")
        one: Callable[[], Awaitable[Any]] = getattr(floor, work)
        return await _drive(name, one, concurrency=conc, count=n)


def _same_collector() -> None:
    """A child process collects garbage as this one does (`--gc-threshold`, passed on
    as ORCH_GC_THRESHOLD, which the service reads itself): every side of a ratio runs
    under the same collector settings."""
    from orchestrator.collector import tune_collector

    tune_collector(int(os.environ.get("ORCH_GC_THRESHOLD", "0")))


def _serve_floor_service(port: int, stub_port: int) -> None:
    """Child process: floor_service — POST /api/query makes the chain's calls directly."""
    _same_collector()
    key: web.AppKey[_Floor] = web.AppKey("floor", _Floor)

    async def query(request: web.Request) -> web.Response:
        body = await request.json()
        if not isinstance(body.get("query"), str):
            raise web.HTTPBadRequest()
        result = await request.app[key].chain()
        return web.Response(
            body=orjson.dumps({"status": "completed", **result}), content_type="application/json"
        )

    async def session(app: web.Application) -> Any:
        async with _session() as s:
            app[key] = _Floor(s, f"http://127.0.0.1:{stub_port}")
            yield

    from orchestrator.loop import loop_factory

    app = web.Application()
    app.router.add_post("/api/query", query)
    app.cleanup_ctx.append(session)
    _, factory = loop_factory(os.environ.get("ORCH_EVENT_LOOP", "auto"))  # type: ignore[arg-type]
    loop = factory() if factory is not None else None
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None, loop=loop)


# -- the engine in-process --------------------------------------------------------------


class FakeTransport:
    """An AgentTransport that answers every agent at once: no sockets, no waiting."""

    def __init__(self) -> None:
        from agents.transport import TransportResponse

        self._answers = {
            f"/{name}/process": TransportResponse(200, {}, orjson.dumps(body))
            for name, body in _ANSWERS.items()
        }

    async def request(self, method: str, url: str, **_: Any) -> Any:
        return self._answers[url[url.index("/", 8) :]]

    async def aclose(self) -> None:
        return None


def _engine_and_workflow(
    registry: AgentRegistry, transport: AgentTransport, definition: Mapping[str, Any]
) -> tuple[DagEngine, CompiledWorkflow]:
    """(a DAG engine calling `registry`'s agents over `transport`, `definition` compiled
    for it): what every in-process row and bench.status_lag run the chain on."""
    from agents.client import AgentClient
    from orchestrator.builtins import BUILTIN_FALLBACKS
    from orchestrator.dag.compiler import compile_workflow
    from orchestrator.dag.engine import DagEngine
    from orchestrator.dag.kinds import default_kinds

    kinds = default_kinds()
    runner = DagEngine(
        agents=AgentClient(registry, transport),
        registry=registry,
        kinds=kinds,
        builtins=BUILTIN_FALLBACKS,
    )
    compiled = compile_workflow(
        definition, agents=list(registry), kinds=kinds, builtins=list(BUILTIN_FALLBACKS)
    )
    return runner, compiled


async def _engine_row(
    name: str,
    stub_port: int,
    definition: Mapping[str, Any],
    conc: int,
    n: int,
    *,
    fake: bool,
    write_delay_s: float | None = None,
) -> tuple[Row, float, int]:
    """(row, CPU seconds, nodes run) for the engine in-process on the memory store
    (`write_delay_s`: the write-behind delay, when not the service's default)."""
    from agents.transport import create_transport
    from orchestrator.lifecycle import WorkflowOrchestrator
    from state.memory import MemoryStateStore

    registry = _registry(stub_port)
    transport: Any = FakeTransport() if fake else create_transport()
    runner, compiled = _engine_and_workflow(registry, transport, definition)
    store = MemoryStateStore()
    orchestrator = (
        WorkflowOrchestrator(store=store, dag_engine=runner)
        if write_delay_s is None
        else WorkflowOrchestrator(store=store, dag_engine=runner, write_delay_s=write_delay_s)
    )
    await orchestrator.start()
    try:

        async def one() -> None:
            state = await orchestrator.submit(compiled, {"query": QUERY})
            done = await orchestrator.wait(state.workflow_id)
            assert done.status.value == "completed", done.to_dict()

        cpu = time.process_time()
        row = await _drive(name, one, concurrency=conc, count=n)
        cpu = time.process_time() - cpu
        return row, cpu, (n + min(50, n)) * len(compiled.nodes)
    finally:
        await orchestrator.close()
        await transport.aclose()
        await store.close()


async def _saves_per_chain(delay_s: float, conc: int, n: int) -> float:
    """State writes per chain workflow with write-behind `delay_s`, fake instant agents."""
    saves, _ = await _writes_per_workflow(delay_s, conc, n)
    return saves


async def _writes_per_workflow(
    delay_s: float,
    conc: int,
    n: int,
    *,
    stub_port: int | None = None,
    definition: Mapping[str, Any] | None = None,
) -> tuple[float, float]:
    """(state writes, event appends) per workflow with write-behind `delay_s`: the chain
    (or `definition`) against fake instant agents, or the stub agents at `stub_port`."""
    from agents.transport import create_transport
    from orchestrator.lifecycle import WorkflowOrchestrator
    from state.memory import MemoryStateStore
    from state.models import WorkflowState

    class Counting(MemoryStateStore):
        saves = 0

        appends = 0

        async def save(
            self,
            state: WorkflowState,
            *,
            token: int | None = None,
            events: Sequence[Mapping[str, Any]] = (),
        ) -> bool:
            self.saves += 1
            return await super().save(state, token=token, events=events)

        async def append_events(
            self, workflow_id: str, events: Sequence[Mapping[str, Any]]
        ) -> int:
            self.appends += 1
            return await super().append_events(workflow_id, events)

    registry = _registry(1 if stub_port is None else stub_port)
    transport: Any = FakeTransport() if stub_port is None else create_transport()
    runner, chain = _engine_and_workflow(
        registry, transport, _chain_definition() if definition is None else definition
    )
    store = Counting()
    orchestrator = WorkflowOrchestrator(store=store, dag_engine=runner, write_delay_s=delay_s)
    await orchestrator.start()
    try:

        async def one() -> None:
            state = await orchestrator.submit(chain, {"query": QUERY})
            await orchestrator.wait(state.workflow_id)

        await _drive("saves", one, concurrency=conc, count=n)
        total = n + min(50, n)
        return store.saves / total, store.appends / total
    finally:
        await orchestrator.close()
        await transport.aclose()


# -- peak RSS in a fresh process ---------------------------------------------------------


def _rss_child(kind: str, stub_port: int, n: int, out: Any) -> None:
    _same_collector()

    async def run() -> None:
        if kind == "floor":
            await _floor_row("rss", stub_port, "fanout", 50, n)
        else:
            await _engine_row("rss", stub_port, FANOUT_DEFINITION, 50, n, fake=False)

    if kind != "floor":
        from orchestrator.logs import configure_logging

        configure_logging("error")
    asyncio.run(run())
    out.send(_high_water_mb())


def _high_water_mb() -> float:
    # VmHWM, not ru_maxrss: ru_maxrss survives exec, so a spawned child would report
    # its parent's peak when that was higher.
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _peak_rss_mb(kind: str, stub_port: int, n: int) -> float:
    mb: float = _spawned(_rss_child, (kind, stub_port, n), f"RSS child {kind}", timeout_s=300)
    return mb


def _spawned(
    target: Callable[..., None], args: tuple[Any, ...], what: str, *, timeout_s: float
) -> Any:
    """Run `target(*args, out)` in a fresh process (spawned: nothing inherited from this
    one) and return what it sends on `out`; `what` names it if it does not finish."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    process = ctx.Process(target=target, args=(*args, child))
    process.start()
    try:
        if not parent.poll(timeout_s):
            raise RuntimeError(f"{what} did not finish")
        return parent.recv()
    finally:
        process.join(timeout=10)
        if process.is_alive():
            process.terminate()


# -- the table ----------------------------------------------------------------------------


@dataclasses.dataclass
class Target:
    figure: str
    value: float
    floor: float
    unit: str
    target: str
    higher_is_better: bool

    @property
    def ratio(self) -> float:
        return self.value / self.floor

    @property
    def met(self) -> bool:
        bound = float(self.target.lstrip("≥≤ ×"))
        return self.ratio >= bound if self.higher_is_better else self.ratio <= bound


def _median(rows: list[Row], attr: Callable[[Row], float]) -> float:
    return statistics.median(attr(r) for r in rows)


async def _one_run(
    args: argparse.Namespace,
    only: set[str],
    stub_port: int,
    keep: Callable[[Row], None],
    cpu_per_node: dict[str, list[float]],
) -> None:
    """One run of every in-process row `only` picks (runs are interleaved), each row
    in a fresh process of its own (`_in_fresh_process` says why)."""
    chain_def = _chain_definition()
    over_http, fake = partial(_engine_row, fake=False), partial(_engine_row, fake=True)

    async def fresh(work: Callable[..., Awaitable[T]], *work_args: Any) -> T:
        return await asyncio.to_thread(_in_fresh_process, args.loop, work, *work_args)

    if "engine" in only:
        for conc, n in ((1, args.workflows // 5), (50, args.workflows)):
            keep(await fresh(_floor_row, "floor, chain", stub_port, "chain", conc, n))
            row, _, _ = await fresh(over_http, "engine, chain", stub_port, chain_def, conc, n)
            keep(row)
        n = args.workflows // 4
        keep(await fresh(_floor_row, "floor, fan-out", stub_port, "fanout", 50, n))
        row, _, _ = await fresh(over_http, "engine, fan-out", stub_port, FANOUT_DEFINITION, 50, n)
        keep(row)
    if "cpu" in only:
        for label, definition in (("chain", chain_def), ("fan-out", FANOUT_DEFINITION)):
            _, cpu, nodes = await fresh(
                fake, "cpu", stub_port, definition, 50, args.workflows // 2
            )
            cpu_per_node.setdefault(label, []).append(cpu / nodes * 1000.0)


async def _service_runs(runs: int, workflows: int, ports: Mapping[str, int]) -> list[Row]:
    """`runs` runs of the service rows: floor_service and the services in turn."""
    rows: list[Row] = []
    for _ in range(runs):
        for conc, n in ((1, workflows // 5), (50, workflows)):
            for label, port in ports.items():
                rows.append(await _service(label, port, conc, n))
    return rows


async def _keep_service_rows(
    args: argparse.Namespace, ports: Mapping[str, int], keep: Callable[[Row], None]
) -> None:
    """The service rows' runs, driven from a fresh process (`_in_fresh_process`)."""
    rows = await asyncio.to_thread(
        _in_fresh_process, args.loop, _service_runs, args.runs, args.workflows, ports
    )
    for row in rows:
        keep(row)


def _in_fresh_process(loop: str, work: Callable[..., Awaitable[T]], *args: Any) -> T:
    """`work(*args)` run in a fresh process (spawned: nothing inherited from this one),
    on `loop`, under the service's collector settings; its result sent back.

    Every row is measured from a process that measured nothing before it. The ratios
    moved with what the measuring process had run: driven from the process that had
    run the in-process rows, floor_service (bound by the whole machine, its driver
    and the stub agents included, not by its own core as the service is) ran slower
    with its CPU per request unchanged (on uvloop 3,300-3,700 wf/s against 4,260-4,670,
    7 runs each), which lifted the service's ratio to it from ~0.47 to ~0.56; and the
    in-process rows read the engine's p99 ratio at 1.3-1.8 in a process that had driven
    the services before, at 1.9-2.15 in a fresh one. (pyperf runs each benchmark in
    fresh worker processes for the same reason.)"""
    what = f"{getattr(work, '__name__', work)} in its process"
    result: T = _spawned(_fresh_child, (loop, work, args), what, timeout_s=_RUN_CAP_S)
    return result


def _fresh_child(loop: str, work: Callable[..., Awaitable[Any]], args: Any, out: Any) -> None:
    """Child process of `_in_fresh_process`: set up as this process is, then `work`."""
    import logging

    from orchestrator.logs import configure_logging
    from orchestrator.loop import loop_factory

    configure_logging("error")
    logging.disable(logging.WARNING)
    _same_collector()
    _, factory = loop_factory(loop)  # type: ignore[arg-type]
    with asyncio.Runner(loop_factory=factory) as runner:
        out.send(runner.run(work(*args)))


async def _writes_rows(
    workflows: int, stub_port: int
) -> tuple[dict[tuple[int, float], float], dict[tuple[str, int, float], tuple[float, float]]]:
    """State writes per chain with fake agents; writes and event appends per workflow with
    the stub agents (real HTTP), chain and fan-out: each at 1 and 50 in flight, without
    and with the write-behind delay."""
    saves = {
        (conc, delay): await _saves_per_chain(delay, conc, workflows // 2)
        for conc in (1, 50)
        for delay in (0.0, 0.005)
    }
    http_writes = {}
    for label, definition in (("chain", _chain_definition()), ("fan-out", FANOUT_DEFINITION)):
        for conc in (1, 50):
            for delay in (0.0, 0.005):
                http_writes[(label, conc, delay)] = await _writes_per_workflow(
                    delay,
                    conc,
                    workflows // (2 if label == "chain" else 4),
                    stub_port=stub_port,
                    definition=definition,
                )
    return saves, http_writes


async def main(args: argparse.Namespace) -> None:
    import logging

    from orchestrator.logs import configure_logging

    configure_logging("error")
    logging.disable(logging.WARNING)
    redis_url = os.environ.get("REDIS_URL")
    stub_port = _free_port()
    children = [_start(_serve_stubs, stub_port)]
    rows: dict[str, list[Row]] = {}
    cpu_per_node: dict[str, list[float]] = {}
    saves: dict[tuple[int, float], float] = {}
    http_writes: dict[tuple[str, int, float], tuple[float, float]] = {}
    rss: dict[str, list[float]] = {}

    def keep(row: Row) -> None:
        rows.setdefault(f"{row.name} @{row.concurrency}", []).append(row)

    try:
        await _wait_listening(stub_port)
        only = set(args.only or ROW_GROUPS)
        services = [("floor_service", _serve_floor_service, ())]
        services.append(("service, memory store", _serve_api, (None,)))
        if redis_url:
            services.append(("service, redis store", _serve_api, (redis_url,)))
        if "service" not in only:
            services = []
        ports: dict[str, int] = {}
        for label, target, extra in services:
            ports[label] = _free_port()
            children.append(_start(target, ports[label], stub_port, *extra))
            await _wait_listening(ports[label])
        if ports:
            await _keep_service_rows(args, ports, keep)
        for _ in range(args.runs):
            await _one_run(args, only, stub_port, keep, cpu_per_node)
        if "writes" in only:
            saves, http_writes = await _writes_rows(args.workflows, stub_port)
        if "rss" in only:
            for _ in range(args.runs if only == {"rss"} else 1):
                for kind in ("floor", "engine"):
                    rss.setdefault(kind, []).append(
                        _peak_rss_mb(kind, stub_port, args.workflows // 4)
                    )
    finally:
        for child in children:
            child.terminate()
            child.join(timeout=5)
    _print_rows(rows)
    _print_targets(rows, cpu_per_node, rss, redis=bool(redis_url))
    print()
    _print_writes(saves, http_writes)


def _print_writes(
    saves: dict[tuple[int, float], float],
    http_writes: dict[tuple[str, int, float], tuple[float, float]],
) -> None:
    for (conc, delay), per_chain in saves.items():
        print(
            f"state writes per chain, {conc:>2} in flight, ORCH_STATE_WRITE_DELAY_S={delay:g}: "
            f"{per_chain:.2f}"
        )
    for (label, conc, delay), (writes, appends) in http_writes.items():
        print(
            f"real HTTP, {label:<7} {conc:>2} in flight, ORCH_STATE_WRITE_DELAY_S={delay:g}: "
            f"state writes per workflow {writes:.2f}, event appends {appends:.2f}"
        )


def _chain_definition() -> dict[str, Any]:
    from orchestrator.chain import CHAIN_DEFINITION

    return CHAIN_DEFINITION


def _print_rows(rows: dict[str, list[Row]]) -> None:
    print(
        f"{'row (median of runs)':40} {'wf/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'x floor wf/s':>12}"
    )
    for key, runs in rows.items():
        floor_key = "floor_service" if key.startswith("service") else None
        conc = key.rsplit("@", 1)[1]
        if floor_key is None:
            floor_key = "floor, fan-out" if "fan-out" in key else "floor, chain"
        floor = rows.get(f"{floor_key} @{conc}")
        per_s = _median(runs, lambda r: r.per_s)
        ratio = per_s / _median(floor, lambda r: r.per_s) if floor else float("nan")
        print(
            f"{key:40} {per_s:>8.0f} {_median(runs, lambda r: r.pct(0.5)):>8.2f} "
            f"{_median(runs, lambda r: r.pct(0.99)):>8.2f} {ratio:>12.2f}"
        )


def _print_targets(
    rows: dict[str, list[Row]],
    cpu_per_node: dict[str, list[float]],
    rss: dict[str, list[float]],
    *,
    redis: bool,
) -> None:
    def m(key: str, attr: Callable[[Row], float]) -> float:
        return _median(rows[key], attr)

    def per_s(r: Row) -> float:
        return r.per_s

    def p50(r: Row) -> float:
        return r.pct(0.5)

    def p99(r: Row) -> float:
        return r.pct(0.99)

    targets: list[Target] = []
    if "engine, chain @50" in rows:
        targets += [
            Target(
                "chain, engine in-process, memory: wf/s @50 vs floor",
                m("engine, chain @50", per_s),
                m("floor, chain @50", per_s),
                "wf/s",
                "≥ 0.5",
                True,
            ),
            Target(
                "fan-out, engine in-process: wf/s @50 vs floor",
                m("engine, fan-out @50", per_s),
                m("floor, fan-out @50", per_s),
                "wf/s",
                "≥ 0.7",
                True,
            ),
            Target(
                "chain, engine in-process: p99 @50 vs floor",
                m("engine, chain @50", p99),
                m("floor, chain @50", p99),
                "ms",
                "≤ 2",
                False,
            ),
        ]
    if redis and "service, redis store @50" in rows:
        targets += [
            Target(
                "chain, service with Redis: wf/s @50 vs floor_service",
                m("service, redis store @50", per_s),
                m("floor_service @50", per_s),
                "wf/s",
                "≥ 0.5",
                True,
            ),
            Target(
                "chain, service with Redis: p50 @1 vs floor_service",
                m("service, redis store @1", p50),
                m("floor_service @1", p50),
                "ms",
                "≤ 2",
                False,
            ),
        ]
    print()
    print(f"{'target figure':56} {'value':>9} {'floor':>9} {'ratio':>7} {'target':>7}  met")
    for t in targets:
        print(
            f"{t.figure:56} {t.value:>9.2f} {t.floor:>9.2f} {t.ratio:>6.2f}x {t.target:>7}  "
            f"{'yes' if t.met else 'NO'}"
        )
    for label, values in cpu_per_node.items():
        ms = statistics.median(values)
        print(
            f"{'orchestration CPU per node, ' + label + ', fake transport':56} {ms:>7.4f}ms "
            f"{'':>9} {'':>7} {'≤ 0.05':>7}  {'yes' if ms <= 0.05 else 'NO'}"
        )
    if rss:
        engine, floor = statistics.median(rss["engine"]), statistics.median(rss["floor"])
        ratio = engine / floor
        print(
            f"{'peak RSS, fan-out @50 vs the floor (MB)':56} {engine:>9.1f} "
            f"{floor:>9.1f} {ratio:>6.2f}x {'≤ 1.3':>7}  {'yes' if ratio <= 1.3 else 'NO'}"
        )
    if not redis:
        print("\n(no REDIS_URL: the service-with-Redis rows were not measured)")


if __name__ == "__main__":
    from orchestrator.settings import Settings

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workflows", type=int, default=1_000, help="workflows per row at 50")
    parser.add_argument("--runs", type=int, default=3, help="runs per row; the median is shown")
    parser.add_argument("--loop", choices=["auto", "asyncio", "uvloop"], default="auto")
    parser.add_argument(
        "--gc-threshold",
        type=int,
        default=Settings().gc_threshold,
        help="the collector's first threshold in every process measured, floors included "
        "(default: the service's ORCH_GC_THRESHOLD default; 0: CPython's)",
    )
    parser.add_argument(
        "--only",
        choices=ROW_GROUPS,
        action="append",
        help="measure only these groups of rows (repeatable; default: all)",
    )
    parsed = parser.parse_args()
    from orchestrator.collector import tune_collector
    from orchestrator.loop import loop_factory

    os.environ["ORCH_EVENT_LOOP"] = parsed.loop  # for the service processes
    os.environ["ORCH_GC_THRESHOLD"] = str(parsed.gc_threshold)
    thresholds = tune_collector(parsed.gc_threshold)
    loop_name, factory = loop_factory(parsed.loop)
    import orchestrator

    # Which checkout runs: `python -m` puts the current directory ahead of PYTHONPATH, so
    # a run started in one checkout measures that one whatever PYTHONPATH names (to
    # measure another tree, start the run in it).
    print(
        f"code measured: {os.path.dirname(os.path.dirname(orchestrator.__file__))}; "
        f"event loop: {loop_name}; gc thresholds {thresholds} in every process; "
        f"{parsed.runs} runs per row, medians\n"
    )
    with asyncio.Runner(loop_factory=factory) as runner:
        # Bounded however the run goes: a bench must stop by itself.
        runner.run(asyncio.wait_for(main(parsed), timeout=_RUN_CAP_S))
