"""The HTTP service around a reference agent: the contract's routes, stats and fault control.

Routes (every body is JSON):

    POST /process   the agent contract (agents.reference.contract); subject to faults
    GET  /health    200 {"status": "ok", "agent": name}; 503 if the agent cannot work
    GET  /stats     {"requests", "in_flight", "cancelled", "injected_failures",
                     "rejected", "duplicates"} counted over /process, and
                     "traceparents": the W3C `traceparent` headers of the last
                     requests that carried one (newest last, at most 32)
    GET  /control   the failure-injection settings
    POST /control   change them live: {"delay_ms", "fail_rate", "fail_status", "seed"}

`cancelled` counts /process requests whose client went away mid-handling. aiohttp
cancels the handler on disconnect only when the server runs with
`handler_cancellation=True`; `start_agent` and `run_agent` always set it.
`duplicates` counts requests repeating an `Idempotency-Key` seen recently.
"""

from __future__ import annotations

import asyncio
import random
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Final, Literal, TypedDict, Unpack, get_args

import structlog
from aiohttp import web

from agents.reference.contract import (
    Agent,
    AgentInputError,
    error_response,
    json_response,
    parse_envelope,
    parse_json_object,
    success_response,
)
from agents.reference.data import DataAgent
from agents.reference.dataset import DEFAULT_PATH
from agents.reference.faults import Faults
from agents.reference.nlp import NlpAgent
from agents.reference.viz import VizAgent
from agents.registry import DEFAULT_PORTS

AgentKind = Literal["nlp", "data", "viz"]
AGENT_KINDS: Final[tuple[AgentKind, ...]] = get_args(AgentKind)
# Viz requests carry the Data agent's rows inline; aiohttp's 1 MiB default is too tight.
MAX_BODY_BYTES: Final = 16 * 1024 * 1024
_IDEMPOTENCY_MEMORY: Final = 4096

log = structlog.get_logger(__name__)


class AgentOptions(TypedDict, total=False):
    """Options every entry point accepts (CLI flags of the same names)."""

    delay_ms: float
    fail_rate: float
    fail_status: int
    seed: int | None
    # Data agent only: the SQLite file to query (the bundled dataset by default).
    db_path: Path | None


@dataclass
class Stats:
    requests: int = 0
    in_flight: int = 0
    cancelled: int = 0
    injected_failures: int = 0
    rejected: int = 0
    duplicates: int = 0
    # So a test can check the orchestrator joins the agent to the workflow's trace.
    traceparents: list[str] = field(default_factory=list)


class _SeenKeys:
    """The most recent Idempotency-Keys, oldest forgotten first."""

    def __init__(self, capacity: int) -> None:
        self._keys: OrderedDict[str, None] = OrderedDict()
        self._capacity = capacity

    def seen(self, key: str) -> bool:
        if key in self._keys:
            self._keys.move_to_end(key)
            return True
        self._keys[key] = None
        if len(self._keys) > self._capacity:
            self._keys.popitem(last=False)
        return False


AGENT: Final = web.AppKey("agent", Agent)
STATS: Final = web.AppKey("stats", Stats)
FAULTS: Final = web.AppKey("faults", Faults)
SEEN_KEYS: Final = web.AppKey("seen_keys", _SeenKeys)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error as the contract's JSON body; bad input is a 4xx, never a 500."""
    try:
        return await handler(request)
    except AgentInputError as exc:
        if request.path == "/process":
            request.app[STATS].rejected += 1
        return error_response(exc.status, exc.code, exc.message)
    except web.HTTPException as exc:  # 404, 405, 413 from aiohttp itself
        if exc.status < 400:
            raise
        code = exc.reason.lower().replace(" ", "_")
        response = error_response(exc.status, code, exc.text or exc.reason)
        if "Allow" in exc.headers:  # a 405 says which methods would work
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception:
        log.exception("agent_internal_error", agent=request.app[AGENT].name, path=request.path)
        return error_response(500, "internal_error", "the agent failed; see its log")


async def _process(request: web.Request) -> web.StreamResponse:
    stats, faults = request.app[STATS], request.app[FAULTS]
    stats.requests += 1
    stats.in_flight += 1
    try:
        traceparent = request.headers.get("traceparent")
        if traceparent is not None:
            stats.traceparents = [*stats.traceparents[-31:], traceparent]
        key = request.headers.get("Idempotency-Key")
        if key is not None and request.app[SEEN_KEYS].seen(key):
            stats.duplicates += 1
        if faults.delay_ms > 0:
            await asyncio.sleep(faults.delay_ms / 1000)
        if faults.should_fail():
            stats.injected_failures += 1
            message = f"injected failure (fail_rate={faults.fail_rate})"
            return error_response(faults.fail_status, "injected_failure", message)
        envelope = parse_envelope(await request.read())
        return success_response(await request.app[AGENT].process(envelope.input))
    except asyncio.CancelledError:
        # The client disconnected (aiohttp cancels the handler) or the server is stopping.
        stats.cancelled += 1
        raise
    finally:
        stats.in_flight -= 1


async def _health(request: web.Request) -> web.StreamResponse:
    agent = request.app[AGENT]
    if await agent.healthy():
        return json_response({"status": "ok", "agent": agent.name})
    body = {
        "status": "error",
        "agent": agent.name,
        "error": {"code": "unhealthy", "message": f"the {agent.name} agent cannot work"},
    }
    return json_response(body, status=503)


async def _stats(request: web.Request) -> web.StreamResponse:
    return json_response(asdict(request.app[STATS]))


async def _get_control(request: web.Request) -> web.StreamResponse:
    return json_response({"status": "ok", **request.app[FAULTS].as_dict()})


async def _set_control(request: web.Request) -> web.StreamResponse:
    changes = parse_json_object(await request.read(), what="the control body")
    faults = request.app[FAULTS]
    faults.update(changes)
    log.info("agent_faults_changed", agent=request.app[AGENT].name, **faults.as_dict())
    return json_response({"status": "ok", **faults.as_dict()})


def make_agent(kind: AgentKind, db_path: Path | None) -> Agent:
    if kind == "nlp":
        return NlpAgent()
    if kind == "data":
        return DataAgent(db_path or DEFAULT_PATH)
    if kind == "viz":
        return VizAgent()
    raise ValueError(f"unknown agent kind {kind!r}; known: {', '.join(AGENT_KINDS)}")


def create_agent_app(
    kind: AgentKind,
    *,
    delay_ms: float = 0,
    fail_rate: float = 0.0,
    fail_status: int = 503,
    seed: int | None = None,
    db_path: Path | None = None,
) -> web.Application:
    """The aiohttp application of one reference agent (see the module docstring).

    Raises ValueError for an unknown kind or out-of-range fault settings.
    Serve it with handler_cancellation=True (start_agent does) so `cancelled` counts.
    """
    agent = make_agent(kind, db_path)
    faults = Faults(
        delay_ms=delay_ms, fail_rate=fail_rate, fail_status=fail_status, rng=random.Random(seed)
    )
    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[_errors])
    app[AGENT] = agent
    app[STATS] = Stats()
    app[FAULTS] = faults
    app[SEEN_KEYS] = _SeenKeys(_IDEMPOTENCY_MEMORY)
    app.router.add_post("/process", _process)
    app.router.add_get("/health", _health)
    app.router.add_get("/stats", _stats)
    app.router.add_get("/control", _get_control)
    app.router.add_post("/control", _set_control)
    return app


async def start_agent(
    kind: AgentKind, *, host: str = "127.0.0.1", port: int = 0, **opts: Unpack[AgentOptions]
) -> tuple[web.AppRunner, int]:
    """Serve one agent in the running event loop; returns the runner and the bound port.

    `port=0` picks a free port. Stop it with `await runner.cleanup()`.
    """
    runner = web.AppRunner(
        create_agent_app(kind, **opts), handler_cancellation=True, access_log=None
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = runner.addresses[0][1]
    return runner, int(bound)


def run_agent(
    kind: AgentKind,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    **opts: Unpack[AgentOptions],
) -> None:
    """Serve one agent until interrupted (the CLI's entry point); port defaults per kind."""
    app = create_agent_app(kind, **opts)
    port = DEFAULT_PORTS[kind] if port is None else port
    web.run_app(app, host=host, port=port, handler_cancellation=True, access_log=None)
