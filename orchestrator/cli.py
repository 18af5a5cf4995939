"""The `orchestrator` console script: serve the API, run a reference agent, or both."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Literal, cast

from aiohttp import web

from agents.reference import AgentOptions, start_agent
from agents.reference.a2a_versions import VERSIONS as A2A_VERSIONS
from agents.reference.a2a_versions import Version as A2AVersion
from agents.reference.options import (
    A2A_OPTIONS,
    add_agent_options,
    agent_options,
    non_default_options,
)
from agents.registry import DEFAULT_PORTS, AgentRegistry
from orchestrator.access.exposure import UnsafeExposure, access_mode
from orchestrator.api.deadline import serve_with_head_deadline
from orchestrator.app import create_app
from orchestrator.collector import freeze_startup, tune_collector
from orchestrator.keys_cli import add_keys_parser, run_keys_command
from orchestrator.logs import configure_logging
from orchestrator.loop import EventLoopUnavailable, loop_factory
from orchestrator.settings import DEFAULTS, ConfigError, Settings

_EXAMPLE = (
    "curl -s -X POST {url}/api/query -H 'Content-Type: application/json' "
    '-d \'{{"query": "average revenue by region in 2024"}}\''
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"orchestrator: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command == "keys":  # a one-shot command: prints, logs nothing
        return asyncio.run(run_keys_command(args, settings))
    tune_collector(settings.gc_threshold)
    try:
        loop_name, factory = loop_factory(settings.event_loop)
    except EventLoopUnavailable as exc:
        print(f"orchestrator: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command == "agent":
        options = agent_options(args)
        unsupported = [f for f in non_default_options(options) if f not in A2A_OPTIONS]
        if args.a2a is not None and unsupported:
            parser.error(
                f"{', '.join(unsupported)}: an A2A agent takes only --delay-ms on its "
                'command line (its faults are set with POST /control {"fail": true})'
            )
        configure_logging(settings.log_level, settings.log_format)
        port = DEFAULT_PORTS[args.kind] if args.port is None else args.port
        if args.a2a is not None:
            ready = (
                f"{args.kind} agent (A2A v{args.a2a}) listening on http://{args.host}:{port}"
                f" | card: http://{args.host}:{port}/.well-known/agent-card.json"
            )
            starter = _a2a_starter(args.kind, args.host, port, args.a2a, options["delay_ms"])
        else:
            ready = f"{args.kind} agent listening on http://{args.host}:{port}{_faults(options)}"
            starter = _agent_starter(args.kind, args.host, port, options)
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(_serve_forever([starter], ready))
        return 0
    host = args.host or settings.host
    port = settings.port if args.port is None else args.port
    settings = dataclasses.replace(settings, host=host, port=port)
    if args.insecure:
        settings = dataclasses.replace(
            settings, access=dataclasses.replace(settings.access, insecure=True)
        )
    try:
        mode = access_mode(settings.access, host)
    except UnsafeExposure as exc:
        print(f"orchestrator: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    if args.command == "up":
        agents = {
            name: dataclasses.replace(spec, url=f"http://{host}:{args.agents_base_port + offset}")
            for offset, (name, spec) in enumerate(
                (n, settings.agents[n]) for n in ("nlp", "data", "viz")
            )
        }
        settings = dataclasses.replace(
            settings, agents=AgentRegistry({**dict(settings.agents), **agents})
        )
        starters = [
            _agent_starter(name, host, args.agents_base_port + offset)
            for offset, name in enumerate(("nlp", "data", "viz"))
        ]
    else:
        starters = []
    ready = f"{_announcement(settings, loop_name)}\n{mode}"
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(_serve_forever([*starters, _api_starter(settings)], ready))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The `orchestrator` command line (tests parse the README's commands with it)."""
    parser = argparse.ArgumentParser(
        prog="orchestrator",
        description="Agent orchestration service: runs NLP -> Data -> Viz and any DAG of agent "
        "tasks behind per-agent circuit breakers and retries.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser(
        "serve",
        help="run the API with settings from the environment",
        description="Run the orchestrator API. Agents, state store (REDIS_URL) and limits come "
        "from the environment and ORCH_CONFIG; see the README.",
    )
    up = sub.add_parser(
        "up",
        help="run the API and the three reference agents together (embedded state store)",
        description="Start the NLP, Data and Viz reference agents and the API in one process, "
        "with the in-memory state store unless REDIS_URL is set. For trying the service out.",
    )
    for p in (serve, up):
        p.add_argument(
            "--host",
            default=None,
            help=f"interface to bind (else ORCH_HOST; default {DEFAULTS.host})",
        )
        p.add_argument(
            "--port",
            type=int,
            default=None,
            help=f"API port (else ORCH_PORT; default {DEFAULTS.port})",
        )
        p.add_argument(
            "--insecure",
            action="store_true",
            help="with no API keys configured, listen on a non-loopback address anyway "
            "(everyone who can reach it is admin); also ORCH_INSECURE=1",
        )
    up.add_argument(
        "--agents-base-port",
        type=int,
        default=DEFAULT_PORTS["nlp"],
        help="port of the NLP agent; Data and Viz take the next two "
        f"(default {DEFAULT_PORTS['nlp']})",
    )
    agent = sub.add_parser(
        "agent",
        help="run one reference agent",
        description="Run one reference agent (nlp, data or viz) speaking the agent contract.",
    )
    add_keys_parser(sub)
    agent.add_argument("kind", choices=["nlp", "data", "viz"])
    agent.add_argument(
        "--host", default=DEFAULTS.host, help=f"interface to bind (default {DEFAULTS.host})"
    )
    agent.add_argument(
        "--port",
        type=int,
        default=None,
        help="port (default " + ", ".join(f"{k} {p}" for k, p in DEFAULT_PORTS.items()) + ")",
    )
    agent.add_argument(
        "--a2a",
        choices=list(A2A_VERSIONS),
        default=None,
        help="speak the Agent2Agent protocol (JSON-RPC) of this version instead of POST /process",
    )
    add_agent_options(agent)
    return parser


def _faults(options: AgentOptions) -> str:
    """What the agent was told to do wrong, for its start-up line (nothing when healthy)."""
    given = non_default_options(options)
    return "".join(f" | {flag} {value}" for flag, value in given.items())


def _announcement(settings: Settings, loop_name: str = "asyncio") -> str:
    url = f"http://{settings.host}:{settings.port}"
    store = f"redis ({settings.redacted_redis_url})" if settings.redis_url else "memory (embedded)"
    agents = ", ".join(f"{name}={spec.url}" for name, spec in settings.agents.items())
    return (
        f"orchestrator listening on {url} | state store: {store} | event loop: {loop_name} "
        f"| agents: {agents}\n"
        f"try: {_EXAMPLE.format(url=url)}"
        + (" -H 'Authorization: Bearer <your key>'" if settings.access.enabled else "")
    )


_Starter = Callable[[], Awaitable[web.AppRunner]]
_Kind = Literal["nlp", "data", "viz"]


def _agent_starter(
    kind: str, host: str, port: int | None, options: AgentOptions | None = None
) -> _Starter:
    async def start() -> web.AppRunner:
        chosen = DEFAULT_PORTS[kind] if port is None else port
        runner, _ = await start_agent(cast(_Kind, kind), host=host, port=chosen, **(options or {}))
        return runner

    return start


def _a2a_starter(kind: str, host: str, port: int, version: str, delay_ms: float) -> _Starter:
    async def start() -> web.AppRunner:
        # The A2A SDK is loaded only by an A2A agent's process, not by every command.
        from agents.reference.a2a_service import start_a2a_agent

        runner, _ = await start_a2a_agent(
            cast(_Kind, kind),
            host=host,
            port=port,
            version=cast(A2AVersion, version),
            delay_ms=delay_ms,
        )
        return runner

    return start


def _api_starter(settings: Settings) -> _Starter:
    async def start() -> web.AppRunner:
        app = create_app(settings)
        listening: list[asyncio.Server] = []

        async def stop_listening(app: web.Application) -> None:
            # First thing on shutdown: no new connections (what a site's stop() does).
            for server in listening:
                server.close()

        app.on_shutdown.insert(0, stop_listening)
        # shutdown_timeout: in-flight requests get this long once on_shutdown has ended
        # the workflows (after ORCH_SHUTDOWN_GRACE_S), so SIGTERM exits within grace + ~2 s.
        runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=2.0)
        await runner.setup()
        # Not a TCPSite: every connection is wrapped so a request head that trickles in
        # is cut off after ORCH_HEADER_TIMEOUT_S (aiohttp has no such timeout).
        listening.append(
            await serve_with_head_deadline(
                runner, settings.host, settings.port, timeout_s=settings.header_timeout_s
            )
        )
        return runner

    return start


async def _serve_forever(starters: Sequence[_Starter], ready: str) -> None:
    """Start everything, print `ready` once every socket listens, run until SIGINT/SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    runners: list[web.AppRunner] = []
    try:
        for start in starters:
            runners.append(await start())
        freeze_startup()
        print(ready, flush=True)
        await stop.wait()
    finally:
        for runner in reversed(runners):
            await runner.cleanup()
