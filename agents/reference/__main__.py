"""`python -m agents.reference nlp|data|viz [options]`: run one reference agent."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import cast

from agents.reference.faults import check_delay_ms, check_fail_rate, check_fail_status
from agents.reference.service import AGENT_KINDS, AgentKind, run_agent
from agents.registry import DEFAULT_PORTS


def _checked(
    convert: Callable[[str], float], check: Callable[[float], float]
) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            return check(convert(text))
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc

    return parse


def _status(text: str) -> int:
    try:
        return check_fail_status(int(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


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
    parser.add_argument(
        "--delay-ms",
        type=_checked(float, check_delay_ms),
        default=0.0,
        help="sleep this long before answering each /process request (default 0)",
    )
    parser.add_argument(
        "--fail-rate",
        type=_checked(float, check_fail_rate),
        default=0.0,
        help="answer --fail-status to this share of /process requests, 0..1 (default 0)",
    )
    parser.add_argument(
        "--fail-status",
        type=_status,
        default=503,
        help="HTTP status of an injected failure (default 503)",
    )
    parser.add_argument(
        "--seed", type=int, help="seed the failure dice, for a reproducible failure sequence"
    )
    parser.add_argument(
        "--db", type=Path, help="data agent only: SQLite file to query (default: bundled dataset)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    run_agent(
        cast(AgentKind, args.kind),
        host=args.host,
        port=args.port,
        delay_ms=args.delay_ms,
        fail_rate=args.fail_rate,
        fail_status=args.fail_status,
        seed=args.seed,
        db_path=args.db,
    )


if __name__ == "__main__":
    main()
