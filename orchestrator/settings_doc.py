"""The README's settings tables, generated from the settings model (so they cannot drift).

Each table sits in README.md between ``<!-- settings:<name> -->`` and
``<!-- /settings:<name> -->``; `python -m orchestrator.settings_doc --write README.md`
rewrites them, `--check README.md` exits 1 when one is stale (the test suite checks
the same). The defaults come from the model itself (`Settings()`, the per-agent
defaults of `default_registry()`, `AccessConfig()`); this module holds only the
words that explain each key.
"""

from __future__ import annotations

import argparse
import functools
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from agents.registry import AgentSpec
from orchestrator.access.config import AccessConfig
from orchestrator.settings import VARIABLES, Settings, default_of

_AGENTS = ("nlp", "data", "viz")


def show(value: Any, *, name: str = "", toml: bool = False) -> str:
    """A default as written in the environment (`25`, `0.005`, `0`) or in TOML (`"rate"`)."""
    if toml and isinstance(value, str):
        return f'`"{value}"`'
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "`1`" if value else "`0`"
    if isinstance(value, tuple):
        return "empty" if not value else "`" + ",".join(map(str, value)) + "`"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = f"`{value}`"
    if isinstance(value, int) and name.endswith("bytes") and value >= 1024 and value % 1024 == 0:
        text += f" ({_size(value)})"
    return text


def _size(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} bytes"  # pragma: no cover - callers pass multiples of 1024


def env_table() -> str:
    rows = ["| variable | default | what |", "|---|---|---|"]
    for var in VARIABLES:
        if var.field is None or var.unset is not None and default_of(var.field) is None:
            default = f"unset: {var.unset}" if var.unset else "unset"
        else:
            default = show(default_of(var.field), name=var.name.lower())
        rows.append(f"| `{var.name}` | {default} | {var.doc} |")
    return "\n".join(rows)


# What each key of an agent's table does (the defaults come from the model).
_AGENT_DOCS: dict[str, str] = {
    "url": "where the agent listens (`NLP_AGENT_URL` … win over it); a new agent needs it",
    "protocol": '`"native"` (`POST {url}/process`) or `"a2a"` (Agent2Agent, below)',
    "concurrency": "calls in flight to this agent at once, across all workflows (bulkhead)",
    "max_response_bytes": "largest answer read, counted decoded; past it "
    "`agent_response_too_large`",
    "timeouts.connect": "per attempt, seconds: connecting",
    "timeouts.read": "per attempt: waiting for the answer",
    "timeouts.write": "per attempt: sending the request (httpx only; aiohttp has none)",
    "timeouts.pool": "per attempt: waiting for a pooled connection",
    "retry.max_attempts": "attempts in all, the first included (`1` = no retry)",
    "retry.base_delay_s": "backoff base: full jitter over `base × 2^n`",
    "retry.max_delay_s": "backoff cap",
    "retry.max_retry_after_s": "a longer `Retry-After` is capped to this",
    "retry_budget.ratio": "retries allowed: at most this share of recent calls …",
    "retry_budget.floor": "… plus this many per window",
    "retry_budget.window_s": "the window, seconds",
}

_BREAKER_DOCS: dict[str, str] = {
    "policy": '`"rate"` (window rates) or `"consecutive"` (`fail_max` in a row)',
    "fail_max": "consecutive: failures in a row that open it",
    "window_type": 'rate: the window is the last N calls (`"count"`) or the last N seconds '
    '(`"time"`, one-second buckets)',
    "window_size": "rate: N",
    "failure_rate_threshold": "rate: open when at least this % of the window's calls failed "
    "(timeouts, connection errors, 5xx; a 4xx is a success, a 429 neither)",
    "slow_call_duration_s": "rate: a call this slow or slower is slow, failed or not",
    "slow_call_rate_threshold": "rate: open when at least this % of the window is slow",
    "minimum_calls": "rate: never open on fewer calls in the window",
    "reset_timeout_s": "both: the base open wait before a half-open probe",
    "backoff_multiplier": "both: each failed probe multiplies the wait …",
    "max_reset_timeout_s": "… capped here (never below the base) …",
    "backoff_jitter": "… and draws it from `[wait × (1 − jitter), wait]`; a close resets it",
    "success_threshold": "probes that must succeed to close",
    "half_open_max_calls": "probes admitted at once (the rest fail fast)",
    "share": 'across replicas (below): `"view"` publishes and obeys ops actions; `"follow"` '
    "also opens when `follow_share` of the live replicas opened theirs",
    "follow_share": "share of live replicas for `follow`",
}


def _per_agent(path: str) -> str:
    """One default, or each reference agent's and another agent's when they differ."""
    settings = Settings()
    values = {name: _dig(settings.agents[name], path) for name in _AGENTS}
    if path == "url":
        return ", ".join(f"{name} {show(value)}" for name, value in values.items())
    values["another agent"] = _dig(AgentSpec(name="new", url="http://new"), path)
    if len(set(values.values())) == 1:
        return show(values["nlp"], name=path, toml=True)
    return ", ".join(f"{k} {show(v, name=path, toml=True)}" for k, v in values.items())


def _dig(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def agent_table() -> str:
    rows = ["| key (`[agents.<name>]`) | default | what |", "|---|---|---|"]
    for path, doc in _AGENT_DOCS.items():
        section, _, key = path.rpartition(".")
        shown = f"[{section}] {key}" if section else key
        rows.append(f"| `{shown}` | {_per_agent(path)} | {doc} |")
    return "\n".join(rows)


def breaker_table() -> str:
    rows = ["| key (`[agents.<name>.breaker]`) | default | what |", "|---|---|---|"]
    for key, doc in _BREAKER_DOCS.items():
        rows.append(f"| `{key}` | {_per_agent('breaker.' + key)} | {doc} |")
    return "\n".join(rows)


_LIMIT_DOCS: dict[str, tuple[str, str]] = {
    "requests_per_s": ("key", "429 `rate_limited`, `Retry-After` (token bucket refill, /s)"),
    "burst": ("key", "the bucket's size"),
    "max_in_flight": ("key", "429 `too_many_workflows` (workflows not yet finished)"),
    "max_async_workflows": (
        "tenant",
        "429 `tenant_quota_exceeded` (async workflows held in state, until their TTL ends)",
    ),
}


def limits_table() -> str:
    access = AccessConfig()
    rows = ["| key (`[access.limits]`) | per | default | over it |", "|---|---|---|---|"]
    for key, (per, doc) in _LIMIT_DOCS.items():
        owner: Any = access if key == "max_async_workflows" else access.default_limits
        rows.append(f"| `{key}` | {per} | {show(getattr(owner, key))} | {doc} |")
    return "\n".join(rows)


TABLES: dict[str, Callable[[], str]] = {
    "env": env_table,
    "agents": agent_table,
    "breaker": breaker_table,
    "limits": limits_table,
}


def _block(name: str) -> re.Pattern[str]:
    return re.compile(rf"(<!-- settings:{name} -->)(.*?)(<!-- /settings:{name} -->)", re.DOTALL)


def blocks(text: str) -> dict[str, str]:
    """The generated tables as they stand in `text` (a README), by name."""
    found = {}
    for name in TABLES:
        match = _block(name).search(text)
        if match:
            found[name] = match.group(2)
    return found


def render(text: str) -> str:
    """`text` with every table rewritten from the model."""
    for name, table in TABLES.items():
        fresh = f"\n\n{table()}\n\n"
        # A function, not a replacement string: the table's backslashes stay as they are.
        text = _block(name).sub(functools.partial(_replace, fresh), text)
    return text


def _replace(fresh: str, match: re.Match[str]) -> str:
    return match.group(1) + fresh + match.group(3)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orchestrator.settings_doc")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", type=Path, metavar="README", help="rewrite the tables")
    mode.add_argument("--check", type=Path, metavar="README", help="exit 1 if one is stale")
    args = parser.parse_args(argv)
    path: Path = args.write or args.check
    text = path.read_text(encoding="utf-8")
    fresh = render(text)
    if args.write:
        path.write_text(fresh, encoding="utf-8")
        return 0
    found, wanted = blocks(text), blocks(fresh)
    problems = {n: "missing" for n in TABLES if n not in found}
    problems |= {n: "stale" for n in found if found[n] != wanted[n]}
    for name, problem in problems.items():
        print(f"{path}: settings table {name!r} is {problem}")
    return 1 if problems else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
