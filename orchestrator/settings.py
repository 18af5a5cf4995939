"""Settings: the one typed model of the configuration, and the only reader of the environment.

`Settings.from_env(environ)` reads the environment variables of `VARIABLES`
(orchestrator/settings_env.py: each one's name, the field it sets and what it does) and
the optional TOML file named by `ORCH_CONFIG` (orchestrator/settings_file.py: one table
per agent, plus `[access]` and `[tenants]`).

**Where defaults live.** Every default is written once, as the default of a field of
the model: `Settings` below, and the dataclasses it holds — `AgentSpec`/`AgentTimeouts`
(agents/registry.py, with the per-agent breaker and retry defaults), `BreakerConfig`,
`RetryConfig`, `RetryBudgetConfig` (circuit/config.py), `Limits` (dag/budget.py),
`AccessConfig`/`Limits` (orchestrator/access/). Where a lower package (state/, circuit/,
dag/), which may not import this module, needs the same value as its own parameter
default, the value is a named constant there and the field refers to it; parameters in
the rest of orchestrator/ read `DEFAULTS`. Everything else reads the model: the CLI's
help, the README's settings tables (generated from it by
`python -m orchestrator.settings_doc --write README.md`, and checked by
tests/orchestrator/test_settings_defaults.py, which also fails when another module
hard-codes a default the model owns).

**Checking.** Each field's type carries its constraint (`Annotated[int, Meta(ge=1)]`);
msgspec converts and checks every value (orchestrator/settings_values.py), laxly for
the environment's strings, strictly for TOML's typed values. A bad value stops
start-up with a `ConfigError` naming the variable or the file and key, the value and
what was expected.

Why msgspec rather than pydantic-settings: the model stays plain frozen dataclasses
(`dataclasses.replace` works on it everywhere, and mypy sees ordinary fields); msgspec
checks a value against an annotated type in one call without owning how the
environment is read, so the variable names, the "empty is unset" rule, the comma lists
and the file's per-agent overlay stay ours and explicit, and every error names exactly
one variable or key. It is also the library the other typed boundaries use.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from msgspec import Meta

from agents.registry import (
    DEFAULT_BREAKERS,
    DEFAULT_PORTS,
    DEFAULT_RETRIES,
    AgentRegistry,
    AgentSpec,
)
from circuit.config import PositiveFloat, PositiveInt
from circuit.sharing import DEFAULT_SYNC_INTERVAL_S
from orchestrator.access.config import AccessConfig, AccessConfigError, check_origin
from orchestrator.dag.budget import Limits
from orchestrator.dag.model import DEFAULT_MAX_PARALLEL, DEFAULT_TIMEOUT_S
from orchestrator.dag.parse import DEFAULT_MAX_NODES
from orchestrator.dag.values import MAX_JSON_DEPTH
from orchestrator.loop import EventLoopChoice
from orchestrator.metrics import DEFAULT_MAX_NODE_LABELS, DEFAULT_MAX_SERIES
from orchestrator.settings_env import VARIABLES, Variable
from orchestrator.settings_file import load_file
from orchestrator.settings_values import ConfigError, convert, type_hints
from state.bounds import (
    DEFAULT_COMMAND_TIMEOUT_S,
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_POOL_TIMEOUT_S,
)
from state.keys import DEFAULT_LEASE_S, DEFAULT_PREFIX, DEFAULT_RETENTION_S, DEFAULT_TTL_S

__all__ = [
    "DEFAULTS",
    "VARIABLES",
    "ConfigError",
    "Settings",
    "Variable",
    "default_registry",
    "redact_url",
]

# Durations are PositiveFloat (a zero or negative one makes no sense anywhere they are used).
Port = Annotated[int, Meta(ge=0, le=65535)]
LogLevel = Literal["debug", "info", "warning", "error", "critical"]


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: Port = 8000
    # repr=False: the URL may carry the Redis password; print `redacted_redis_url`.
    redis_url: str | None = field(default=None, repr=False)
    state_ttl_s: PositiveInt = DEFAULT_TTL_S
    # A finished workflow is compacted and kept this long (status, history, Idempotency-Key).
    retention_s: PositiveInt = DEFAULT_RETENTION_S
    redis_cluster: bool = False
    # None: 1 on a single Redis, 8 on a Cluster (each shard one slot).
    history_shards: PositiveInt | None = None
    key_prefix: str = DEFAULT_PREFIX
    # Redis faults: nothing waits on Redis longer than these before the API answers 503.
    redis_connect_timeout_s: PositiveFloat = DEFAULT_CONNECT_TIMEOUT_S
    redis_timeout_s: PositiveFloat = DEFAULT_COMMAND_TIMEOUT_S
    # At least 4: the pool serves commands, pub/sub and the lease heartbeat at once.
    redis_max_connections: Annotated[int, Meta(ge=4)] = DEFAULT_MAX_CONNECTIONS
    redis_pool_timeout_s: PositiveFloat = DEFAULT_POOL_TIMEOUT_S
    log_level: LogLevel = "info"
    http_transport: Literal["aiohttp", "httpx"] = "aiohttp"
    event_loop: EventLoopChoice = "auto"
    # First threshold of the cyclic garbage collector (why 50,000: orchestrator/collector.py);
    # capped where a larger one would be a collector switched off (and CPython's C int ends).
    gc_threshold: Annotated[int, Meta(ge=0, le=10_000_000)] = 50_000
    # Write-behind delay of running workflows' transitions (accept and terminal: at once).
    state_write_delay_s: Annotated[float, Meta(ge=0)] = 0.005
    max_query_chars: PositiveInt = 2_000
    max_body_bytes: Annotated[int, Meta(ge=1024)] = 1_048_576
    workflow_timeout_s: PositiveFloat = DEFAULT_TIMEOUT_S
    # Nodes of one workflow running at once (why 32: README "Defaults").
    max_parallel: PositiveInt = DEFAULT_MAX_PARALLEL
    max_nodes: PositiveInt = DEFAULT_MAX_NODES
    # Owner lease: a replica silent this long is presumed dead and its workflows resumed.
    lease_s: PositiveFloat = DEFAULT_LEASE_S
    # On shutdown, running workflows get this long to finish before being handed off/cancelled.
    shutdown_grace_s: PositiveFloat = 5.0
    log_format: Literal["json", "console"] = "json"
    metrics_definitions: tuple[str, ...] = ()
    metrics_max_steps: PositiveInt = DEFAULT_MAX_NODE_LABELS
    sse_keepalive_s: PositiveFloat = 15.0
    sse_max_streams: PositiveInt = 256
    # Tracing is on only when an OTLP endpoint is configured (or a provider is injected):
    # the full OTLP/HTTP traces URL.
    otel_endpoint: str | None = None
    otel_service_name: str = "agent-orchestrator"
    # Evaluation budgets and the off-loop time bounds (orchestrator.dag.budget).
    limits: Limits = field(default_factory=Limits)
    compile_timeout_s: PositiveFloat = 10.0
    max_json_depth: Annotated[int, Meta(ge=4)] = MAX_JSON_DEPTH
    body_timeout_s: PositiveFloat = 10.0
    header_timeout_s: PositiveFloat = 10.0
    keepalive_timeout_s: PositiveFloat = 15.0
    max_metric_series: PositiveInt = DEFAULT_MAX_SERIES
    memory_max_workflows: PositiveInt = 10_000
    memory_max_bytes: Annotated[int, Meta(ge=1024)] = 256 * 1024 * 1024
    # Breaker sharing: publish / apply-ops cycle of each replica (circuit/sharing.py).
    breaker_sync_s: PositiveFloat = DEFAULT_SYNC_INTERVAL_S
    # A sync query answers 202 (like async) if the workflow is still running after this;
    # below common gateway/proxy timeouts (30-60 s).
    sync_wait_s: PositiveFloat = 25.0
    # Deadline of each step without its own timeout_s (retries and backoff included),
    # so a hanging agent ends in a failed or fallen-back step well inside sync_wait_s.
    step_timeout_s: PositiveFloat = 15.0
    # Each replica looks for due schedules this often; a tick of a `skip` schedule
    # still fires when found up to schedule_grace_s late.
    schedule_poll_s: PositiveFloat = 1.0
    schedule_grace_s: PositiveFloat = 60.0
    agents: AgentRegistry = field(default_factory=lambda: default_registry())
    access: AccessConfig = field(default_factory=AccessConfig)

    @property
    def redacted_redis_url(self) -> str | None:
        """`redis_url` with any password replaced by `***`, for printing and logging."""
        return None if self.redis_url is None else redact_url(self.redis_url)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """The settings of `environ` (default: the process environment) and its ORCH_CONFIG."""
        env = os.environ if environ is None else environ
        base = cls()
        specs = dict(base.agents)
        access = base.access
        if config_path := env.get("ORCH_CONFIG"):
            specs, access = load_file(Path(config_path), specs, access)
        values: dict[str, Any] = {}
        for var in VARIABLES:
            if var.field is None or var.by_hand:
                continue
            raw = env.get(var.name, "").strip()
            if raw:
                values[var.field] = _read(var, raw)
        nested = _nest(values)
        for name, fields in nested.pop("agents", {}).items():
            specs[name] = dataclasses.replace(specs[name], **fields)
        if access.redis_keys and not env.get("REDIS_URL"):
            raise ConfigError(
                "[access] redis_keys = true needs REDIS_URL", source=_ENV, key="REDIS_URL"
            )
        access = dataclasses.replace(
            access,
            cors_origins=tuple(dict.fromkeys((*access.cors_origins, *_origins(env)))),
            **nested.pop("access", {}),
        )
        limits = dataclasses.replace(base.limits, **nested.pop("limits", {}))
        return cls(
            **nested,
            otel_endpoint=_otel_endpoint(env),
            limits=limits,
            agents=AgentRegistry(specs),
            access=access,
        )

_ENV = "environment"


def _read(var: Variable, raw: str) -> Any:
    assert var.field is not None
    tp = var.tp if var.tp is not None else field_type(var.field)
    value: object = raw.lower() if var.lower else raw
    if var.split:
        value = [part.strip() for part in raw.split(",") if part.strip()]
    elif tp is bool:
        # The flags also take yes/no, as they always did.
        value = {"yes": "true", "no": "false"}.get(raw.lower(), raw.lower())
    return convert(value, tp, source=_ENV, key=var.name, lax=True)


def _nest(values: dict[str, Any]) -> dict[str, Any]:
    """Dotted paths as nested tables: {"limits.node_ops": 1} -> {"limits": {"node_ops": 1}}."""
    out: dict[str, Any] = {}
    for path, value in values.items():
        *parents, leaf = path.split(".")
        table = out
        for part in parents:
            table = table.setdefault(part, {})
        table[leaf] = value
    return out


def field_type(path: str) -> Any:
    """The annotated type of a dotted field path of the model ("limits.node_ops")."""
    owner: Any = Settings
    tp: Any = None
    for part in path.split("."):
        if owner is AgentRegistry:  # agents.<name>.<field>: every agent is an AgentSpec
            owner = AgentSpec
            continue
        tp = type_hints(owner)[part]
        owner = typing.get_args(tp)[0] if typing.get_origin(tp) is Annotated else tp
    return tp


def default_of(path: str) -> Any:
    """The model's default for a dotted field path ("agents.nlp.url", "limits.node_ops")."""
    value: Any = Settings()
    for part in path.split("."):
        value = value[part] if isinstance(value, Mapping) else getattr(value, part)
    return value


def _origins(env: Mapping[str, str]) -> tuple[str, ...]:
    raw = env.get("ORCH_CORS_ORIGINS", "")
    try:
        return tuple(
            check_origin(o.strip(), "ORCH_CORS_ORIGINS") for o in raw.split(",") if o.strip()
        )
    except AccessConfigError as exc:
        raise ConfigError(str(exc), source=_ENV, key=exc.key) from None


def _otel_endpoint(env: Mapping[str, str]) -> str | None:
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    # The signal-specific variable is the full URL; the general one is a base URL
    # the traces path is appended to (the OTLP exporter specification).
    if endpoint := env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip():
        return endpoint
    if endpoint := env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip():
        return endpoint.rstrip("/") + "/v1/traces"
    return None


def redact_url(url: str) -> str:
    """`url` with the password of its userinfo (``redis://user:secret@host``) hidden."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    authority, slash, path = rest.partition("/")
    userinfo, at, host = authority.rpartition("@")
    if not at:
        return url
    user, colon, _ = userinfo.partition(":")
    hidden = f"{user}:***" if colon else "***"
    return f"{scheme}://{hidden}@{host}{slash}{path}"


def default_registry(host: str = "127.0.0.1") -> AgentRegistry:
    """The reference agents nlp, data and viz on `host`, each with its own defaults."""
    return AgentRegistry(
        [
            AgentSpec(
                name=name,
                url=f"http://{host}:{port}",
                breaker=DEFAULT_BREAKERS[name],
                retry=DEFAULT_RETRIES[name],
            )
            for name, port in DEFAULT_PORTS.items()
        ]
    )


# The model's defaults, for parameters in orchestrator/ that stand for a setting
# (`lease_s: float = DEFAULTS.lease_s`): they read the default instead of restating it.
DEFAULTS = Settings()
