"""`python -m agents.reference nlp|data|viz [options]`: run one reference agent."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import cast

from agents.reference.options import add_agent_options, agent_options
from agents.reference.service import AGENT_KINDS, AgentKind, run_agent
from agents.registry import DEFAULT_PORTS


def build_parser() -> argparse.ArgumentParser:
    ports = ", ".join(f"{kind} {port}" for kind, port in DEFAULT_PORTS.items())
    parser = argparse.ArgumentParser(
        prog="python -m agents.reference",
        description=(
            "Run one reference agent as an HTTP service speaking the agent contract "
            "(POST /process, GET /health), with GET /stats and GET|POST /control to "
            "inject delays and failures live."
        ),
    )
    parser.add_argument(
        "kind",
        choices=AGENT_KINDS,
        help="nlp: question -> intent; data: intent -> rows from the bundled sales "
        "dataset; viz: intent + rows -> Vega-Lite spec",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    parser.add_argument("--port", type=int, help=f"port to bind (default per kind: {ports})")
    add_agent_options(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    run_agent(cast(AgentKind, args.kind), host=args.host, port=args.port, **agent_options(args))


if __name__ == "__main__":
    main()
