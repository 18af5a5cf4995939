"""The TOML file named by ORCH_CONFIG: agents, access and tenants, onto the model's defaults.

Layout::

    [agents.nlp]
    url = "http://127.0.0.1:8001"
    concurrency = 64               # calls in flight to this agent at once (bulkhead)
    max_response_bytes = 4194304   # largest answer read
    [agents.nlp.timeouts]          # connect, read, write, pool (seconds)
    read = 10
    [agents.nlp.breaker]           # every BreakerConfig field (circuit/config.py)
    policy = "rate"
    [agents.nlp.retry]             # every RetryConfig field
    max_attempts = 3
    [agents.nlp.retry_budget]      # every RetryBudgetConfig field
    [agents.charts]
    url = "http://127.0.0.1:9003"
    protocol = "a2a"               # Agent2Agent, card at url/.well-known/agent-card.json

A table of an agent already registered (nlp, data, viz) changes only the keys it
names: the others keep that agent's defaults. Any other name registers another agent
(it then needs `url`). The `[access]` and `[tenants]` tables are described in
orchestrator/access/config.py. Every key is checked against the type of the model
field it sets (orchestrator/settings_values.py), and a bad file stops start-up with
a `ConfigError` naming the file, the key and the problem.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from agents.registry import AgentSpec, AgentUrl
from circuit.breaker import validate_config
from orchestrator.access.config import AccessConfig, AccessConfigError, parse_access
from orchestrator.settings_values import ConfigError, convert, overlay


def load_file(
    path: Path, specs: dict[str, AgentSpec], access: AccessConfig
) -> tuple[dict[str, AgentSpec], AccessConfig]:
    """`specs` and `access` with the file's tables applied (the file's agents added)."""
    source = str(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("file not found", source=source, key="ORCH_CONFIG") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", source=source, key="ORCH_CONFIG") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}", source=source, key="(file)") from exc
    unknown = set(raw) - {"agents", "access", "tenants"}
    if unknown:
        raise ConfigError("unknown top-level table", source=source, key=sorted(unknown)[0])
    if "access" in raw or "tenants" in raw:
        try:
            access = parse_access(raw.get("access"), raw.get("tenants"))
        except AccessConfigError as exc:
            raise ConfigError(str(exc), source=source, key=exc.key) from None
    agents = raw.get("agents", {})
    if not isinstance(agents, dict):
        raise ConfigError("must be a table of agent tables", source=source, key="agents")
    out = dict(specs)
    for name, table in agents.items():
        out[name] = _agent(name, table, out.get(name), source)
    for tenant, policy in access.tenants.items():
        for agent in sorted((policy.agents or frozenset()) - set(out)):
            raise ConfigError(
                f"unknown agent {agent!r}", source=source, key=f"tenants.{tenant}.agents"
            )
    return out, access


def _agent(name: str, table: Any, base: AgentSpec | None, source: str) -> AgentSpec:
    key = f"agents.{name}"
    if not isinstance(table, dict):
        raise ConfigError("must be a table", source=source, key=key)
    if base is None:
        if "url" not in table:
            raise ConfigError("a new agent needs a url", source=source, key=f"{key}.url")
        url = convert(table["url"], AgentUrl, source=source, key=f"{key}.url", lax=False)
        base = AgentSpec(name=name, url=url)
    spec = overlay(base, table, source=source, key=key, fixed=frozenset({"name"}))
    try:
        validate_config(spec.breaker)
    except ValueError as exc:
        raise ConfigError(str(exc), source=source, key=f"{key}.breaker") from None
    return spec
