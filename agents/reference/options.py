"""The reference agents' command-line options, shared by both ways to start one.

`python -m agents.reference data --delay-ms 200` and `orchestrator agent data
--delay-ms 200` take the same flags, defined once here, so the two cannot drift:

    --delay-ms     sleep this long before answering each /process request
    --fail-rate    answer --fail-status to this share of /process requests (0..1)
    --fail-status  the HTTP status of an injected failure (400..599, default 503)
    --seed         seed the failure dice (a reproducible failure sequence)
    --db           the Data agent's SQLite file

Each value is checked by the same functions `POST /control` uses (agents.reference.faults),
so a flag out of range is a usage error (exit 2) naming the limit, never a traceback.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Final

from agents.reference.faults import check_delay_ms, check_fail_rate, check_fail_status
from agents.reference.service import AgentOptions

# What an A2A reference agent takes on its command line (it has no failure dice:
# its faults are `fail` and `input_required`, set through POST /control).
A2A_OPTIONS: Final = frozenset({"--delay-ms"})
_DEFAULTS: Final[AgentOptions] = {
    "delay_ms": 0.0,
    "fail_rate": 0.0,
    "fail_status": 503,
    "seed": None,
    "db_path": None,
}


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


def add_agent_options(parser: argparse.ArgumentParser) -> None:
    """Add --delay-ms, --fail-rate, --fail-status, --seed and --db to `parser`."""
    parser.add_argument(
        "--delay-ms",
        type=_checked(float, check_delay_ms),
        default=_DEFAULTS["delay_ms"],
        help="sleep this long before answering each /process request (default 0)",
    )
    parser.add_argument(
        "--fail-rate",
        type=_checked(float, check_fail_rate),
        default=_DEFAULTS["fail_rate"],
        help="answer --fail-status to this share of /process requests, 0..1 (default 0)",
    )
    parser.add_argument(
        "--fail-status",
        type=_status,
        default=_DEFAULTS["fail_status"],
        help="HTTP status of an injected failure (default 503)",
    )
    parser.add_argument(
        "--seed", type=int, help="seed the failure dice, for a reproducible failure sequence"
    )
    parser.add_argument(
        "--db",
        type=Path,
        dest="db_path",
        metavar="PATH",
        help="data agent only: SQLite file to query (default: bundled dataset)",
    )


def agent_options(args: argparse.Namespace) -> AgentOptions:
    """The options `add_agent_options` parsed, as `start_agent`/`run_agent` take them."""
    return {
        "delay_ms": args.delay_ms,
        "fail_rate": args.fail_rate,
        "fail_status": args.fail_status,
        "seed": args.seed,
        "db_path": args.db_path,
    }


def non_default_options(options: AgentOptions) -> dict[str, object]:
    """The options given a value other than their default: {"--delay-ms": 250.0, ...}."""
    flags = {"delay_ms": "--delay-ms", "fail_rate": "--fail-rate", "fail_status": "--fail-status",
             "seed": "--seed", "db_path": "--db"}  # fmt: skip
    given: dict[str, object] = dict(options)
    return {
        flags[name]: given.get(name)
        for name, default in _DEFAULTS.items()
        if given.get(name) != default
    }
