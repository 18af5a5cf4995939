"""Settings: the only code that reads the environment (and the optional TOML file).

`Settings.from_env(environ)` reads:

- ORCH_HOST / ORCH_PORT          where the API listens (127.0.0.1:8000)
- REDIS_URL                      Redis state store; unset = embedded in-memory store;
                                 redis+cluster://host:port names a Redis Cluster
- ORCH_REDIS_CLUSTER             "1": REDIS_URL (redis://) names a Redis Cluster node
- ORCH_STATE_TTL_S               TTL of a running workflow's keys, refreshed on write (3600)
- ORCH_RETENTION_S               how long a finished workflow (status, history) is kept (3600)
- ORCH_HISTORY_SHARDS            keys the history index is spread over (1; 8 on a Cluster)
- ORCH_KEY_PREFIX                Redis key prefix ("orch:")
- ORCH_REDIS_CONNECT_TIMEOUT_S   bound on connecting to Redis (1.0)
- ORCH_REDIS_TIMEOUT_S           bound on each Redis command (1.0)
- ORCH_REDIS_MAX_CONNECTIONS     connections in the Redis pool, pub/sub included (64)
- ORCH_REDIS_POOL_TIMEOUT_S      how long a command waits for a free pooled connection (2.0)
- ORCH_CONFIG                    optional TOML file, one table per agent (below)
- NLP_AGENT_URL, DATA_AGENT_URL, VIZ_AGENT_URL   override the agents' URLs
- ORCH_LOG_LEVEL                 "info"
- ORCH_MAX_QUERY_CHARS, ORCH_MAX_BODY_BYTES, ORCH_WORKFLOW_TIMEOUT_S, ORCH_MAX_PARALLEL
- ORCH_HTTP_TRANSPORT            "aiohttp" (default) or "httpx"
- ORCH_EVENT_LOOP                "auto" (uvloop when installed), "asyncio" or "uvloop"
- ORCH_STATE_WRITE_DELAY_S       write-behind: a running workflow's transitions reach the
                                 store within this delay, coalesced (0.005; 0 = at once)
- ORCH_LEASE_S                   owner lease; a silent replica's workflows are resumed after it (15)
- ORCH_SHUTDOWN_GRACE_S          on shutdown, time running workflows get to finish (5)
- ORCH_LOG_FORMAT                "json" (default) or "console" (readable lines for a terminal)
- ORCH_METRICS_DEFINITIONS       comma-separated definition names kept as Prometheus labels
                                 (besides the built-in chain; any other name is "other")
- ORCH_METRICS_MAX_STEPS         distinct step-id labels per such definition (50)
- ORCH_SSE_KEEPALIVE_S           idle time before an event stream sends a keep-alive comment (15)
- ORCH_SSE_MAX_STREAMS           event streams one replica serves at once; more get 503 (256)
- OTEL_EXPORTER_OTLP_ENDPOINT / OTEL_EXPORTER_OTLP_TRACES_ENDPOINT   turn tracing on (OTLP/HTTP);
  OTEL_SERVICE_NAME names the service ("agent-orchestrator"); OTEL_SDK_DISABLED=true keeps it off.
  The exporter reads the other standard OTEL_* variables itself.
- ORCH_EVAL_NODE_OPS, ORCH_EVAL_NODE_BYTES, ORCH_EVAL_WORKFLOW_OPS, ORCH_EVAL_WORKFLOW_BYTES
                                 evaluation budgets of expressions/templates/transforms
- ORCH_EVAL_TIMEOUT_S            wall-clock bound of one node's off-loop evaluation (10)
- ORCH_COMPILE_TIMEOUT_S         wall-clock bound of checking one definition, off the loop (10)
- ORCH_MAX_JSON_DEPTH            nesting depth of any JSON accepted or kept (64)
- ORCH_BODY_TIMEOUT_S            time a client has to send a request body (10)
- ORCH_HEADER_TIMEOUT_S          time a client has to send a request line and headers (10)
- ORCH_KEEPALIVE_TIMEOUT_S       idle keep-alive connection closed after (15)
- ORCH_MAX_METRIC_SERIES         distinct step series in the metrics (500; beyond: "(other)")
- ORCH_MEMORY_MAX_WORKFLOWS, ORCH_MEMORY_MAX_BYTES   embedded store bounds (10000, 256 MiB)
- ORCH_BREAKER_SYNC_S            how often a replica publishes its breakers and applies the
                                 deployment's ops modes (0.25; reports live 8x that, >= 2 s)
- ORCH_SYNC_WAIT_S               longest a sync query waits before answering 202 (25)
- ORCH_SCHEDULE_POLL_S           how often each replica looks for due schedules (1)
- ORCH_SCHEDULE_GRACE_S          a `skip` schedule's tick still fires this late (60)
- ORCH_STEP_TIMEOUT_S            deadline of a step without its own timeout_s, retries included (15)
- ORCH_INSECURE                  "1": serve without API keys on a non-loopback address anyway
- ORCH_CORS_ORIGINS              comma-separated exact origins allowed by CORS (adds to the file's)

TOML layout::

    [agents.nlp]
    url = "http://127.0.0.1:8001"
    concurrency = 64               # calls in flight to this agent at once (bulkhead)
    max_response_bytes = 4194304   # largest answer read (default 4 MiB)
    [agents.nlp.timeouts]   # connect, read, write, pool (seconds)
    read = 10
    [agents.nlp.breaker]    # policy, window_type, window_size, failure_rate_threshold, ...
    policy = "rate"         # (every BreakerConfig field; see the README's breaker table)
    [agents.nlp.retry]      # max_attempts, base_delay_s, max_delay_s, max_retry_after_s
    max_attempts = 3
    [agents.charts]
    url = "http://127.0.0.1:9003"
    protocol = "a2a"        # Agent2Agent, card at url/.well-known/agent-card.json

Any agent table beyond nlp/data/viz registers another agent (it then needs `url`).
The `[access]` (API keys, limits, CORS) and `[tenants]` tables are described in
orchestrator/access/config.py.
A bad file stops start-up with a `ConfigError` naming the file, the key and the problem.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from agents.registry import (
    DEFAULT_BREAKERS,
    DEFAULT_PORTS,
    DEFAULT_RETRIES,
    PROTOCOLS,
    AgentRegistry,
    AgentSpec,
    AgentTimeouts,
)
from circuit.breaker import validate_config
from circuit.config import BreakerConfig, RetryBudgetConfig, RetryConfig
from orchestrator.access.config import AccessConfig, AccessConfigError, check_origin, parse_access
from orchestrator.dag.budget import DEFAULT_LIMITS as _LIMITS
from orchestrator.dag.budget import Limits
from orchestrator.dag.model import DEFAULT_MAX_PARALLEL
from orchestrator.dag.values import MAX_JSON_DEPTH
from orchestrator.errors import StartupError
from orchestrator.loop import EventLoopChoice
from state.keys import DEFAULT_PREFIX, DEFAULT_RETENTION_S, DEFAULT_TTL_S


class ConfigError(StartupError, ValueError):
    """The environment or the config file is unusable; start-up must stop."""

    def __init__(self, message: str, *, source: str, key: str) -> None:
        super().__init__(f"{source}: {key}: {message}")
        self.source = source
        self.key = key


_URL_ENV = {"nlp": "NLP_AGENT_URL", "data": "DATA_AGENT_URL", "viz": "VIZ_AGENT_URL"}


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    # repr=False: the URL may carry the Redis password; print `redacted_redis_url`.
    redis_url: str | None = field(default=None, repr=False)
    state_ttl_s: int = DEFAULT_TTL_S
    # A finished workflow is compacted and kept this long (status, history, Idempotency-Key).
    retention_s: int = DEFAULT_RETENTION_S
    redis_cluster: bool = False
    # None: 1 on a single Redis, 8 on a Cluster (each shard one slot).
    history_shards: int | None = None
    key_prefix: str = DEFAULT_PREFIX
    # Redis faults: nothing waits on Redis longer than these before the API answers 503.
    redis_connect_timeout_s: float = 1.0
    redis_timeout_s: float = 1.0
    redis_max_connections: int = 64
    redis_pool_timeout_s: float = 2.0
    log_level: str = "info"
    http_transport: Literal["aiohttp", "httpx"] = "aiohttp"
    event_loop: EventLoopChoice = "auto"
    # Write-behind delay of running workflows' transitions (accept and terminal: at once).
    state_write_delay_s: float = 0.005
    max_query_chars: int = 2_000
    max_body_bytes: int = 1_048_576
    workflow_timeout_s: float = 120.0
    # Nodes of one workflow running at once (why 32: README "Defaults").
    max_parallel: int = DEFAULT_MAX_PARALLEL
    max_nodes: int = 10_000
    # Owner lease: a replica silent this long is presumed dead and its workflows resumed.
    lease_s: float = 15.0
    # On shutdown, running workflows get this long to finish before being handed off/cancelled.
    shutdown_grace_s: float = 5.0
    log_format: Literal["json", "console"] = "json"
    metrics_definitions: tuple[str, ...] = ()
    metrics_max_steps: int = 50
    sse_keepalive_s: float = 15.0
    sse_max_streams: int = 256
    # Tracing is on only when an OTLP endpoint is configured (or a provider is injected):
    # the full OTLP/HTTP traces URL.
    otel_endpoint: str | None = None
    otel_service_name: str = "agent-orchestrator"
    # Evaluation budgets and the off-loop time bounds (orchestrator.dag.budget).
    limits: Limits = field(default_factory=Limits)
    compile_timeout_s: float = 10.0
    max_json_depth: int = MAX_JSON_DEPTH
    body_timeout_s: float = 10.0
    header_timeout_s: float = 10.0
    keepalive_timeout_s: float = 15.0
    max_metric_series: int = 500
    memory_max_workflows: int = 10_000
    memory_max_bytes: int = 256 * 1024 * 1024
    # Breaker sharing: publish / apply-ops cycle of each replica (circuit/sharing.py).
    breaker_sync_s: float = 0.25
    # A sync query answers 202 (like async) if the workflow is still running after this;
    # below common gateway/proxy timeouts (30-60 s).
    sync_wait_s: float = 25.0
    # Deadline of each step without its own timeout_s (retries and backoff included),
    # so a hanging agent ends in a failed or fallen-back step well inside sync_wait_s.
    step_timeout_s: float = 15.0
    # Each replica looks for due schedules this often; a tick of a `skip` schedule
    # still fires when found up to schedule_grace_s late.
    schedule_poll_s: float = 1.0
    schedule_grace_s: float = 60.0
    agents: AgentRegistry = field(default_factory=lambda: default_registry())
    access: AccessConfig = field(default_factory=AccessConfig)

    @property
    def redacted_redis_url(self) -> str | None:
        """`redis_url` with any password replaced by `***`, for printing and logging."""
        return None if self.redis_url is None else redact_url(self.redis_url)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        src = "environment"
        config_path = env.get("ORCH_CONFIG")
        specs = {spec.name: spec for spec in default_registry().values()}
        access = AccessConfig()
        if config_path:
            specs, access = _load_file(Path(config_path), specs)
        for name, var in _URL_ENV.items():
            if env.get(var):
                specs[name] = dataclasses.replace(specs[name], url=_check_url(env[var], src, var))
        transport: Literal["aiohttp", "httpx"]
        match env.get("ORCH_HTTP_TRANSPORT", "aiohttp"):
            case "aiohttp":
                transport = "aiohttp"
            case "httpx":
                transport = "httpx"
            case other:
                raise ConfigError(
                    f"must be 'aiohttp' or 'httpx', got {other!r}",
                    source=src,
                    key="ORCH_HTTP_TRANSPORT",
                )
        log_format: Literal["json", "console"]
        match env.get("ORCH_LOG_FORMAT", "json").lower():
            case "json":
                log_format = "json"
            case "console":
                log_format = "console"
            case other:
                raise ConfigError(
                    f"must be 'json' or 'console', got {other!r}", source=src, key="ORCH_LOG_FORMAT"
                )
        otel_disabled = env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"
        # The signal-specific variable is the full URL; the general one is a base URL
        # the traces path is appended to (the OTLP exporter specification).
        otel_endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or None
        if otel_endpoint is None and env.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
            otel_endpoint = env["OTEL_EXPORTER_OTLP_ENDPOINT"].rstrip("/") + "/v1/traces"
        event_loop: EventLoopChoice
        match env.get("ORCH_EVENT_LOOP", "auto"):
            case "auto" | "asyncio" | "uvloop" as chosen:
                event_loop = chosen
            case other:
                raise ConfigError(
                    f"must be 'auto', 'asyncio' or 'uvloop', got {other!r}",
                    source=src,
                    key="ORCH_EVENT_LOOP",
                )
        origins = tuple(o.strip() for o in env.get("ORCH_CORS_ORIGINS", "").split(",") if o.strip())
        try:
            origins = tuple(check_origin(o, "ORCH_CORS_ORIGINS") for o in origins)
        except AccessConfigError as exc:
            raise ConfigError(str(exc), source=src, key=exc.key) from None
        if access.redis_keys and not env.get("REDIS_URL"):
            raise ConfigError(
                "[access] redis_keys = true needs REDIS_URL", source=src, key="REDIS_URL"
            )
        access = dataclasses.replace(
            access,
            cors_origins=tuple(dict.fromkeys((*access.cors_origins, *origins))),
            insecure=_env_flag(env, "ORCH_INSECURE"),
        )
        return cls(
            host=env.get("ORCH_HOST", "127.0.0.1"),
            port=_env_int(env, "ORCH_PORT", 8000, minimum=0),
            redis_url=env.get("REDIS_URL") or None,
            state_ttl_s=_env_int(env, "ORCH_STATE_TTL_S", DEFAULT_TTL_S, minimum=1),
            retention_s=_env_int(env, "ORCH_RETENTION_S", DEFAULT_RETENTION_S, minimum=1),
            redis_cluster=_env_flag(env, "ORCH_REDIS_CLUSTER"),
            history_shards=(
                _env_int(env, "ORCH_HISTORY_SHARDS", 1, minimum=1)
                if env.get("ORCH_HISTORY_SHARDS") else None
            ),
            key_prefix=env.get("ORCH_KEY_PREFIX", DEFAULT_PREFIX),
            redis_connect_timeout_s=_env_float(env, "ORCH_REDIS_CONNECT_TIMEOUT_S", 1.0),
            redis_timeout_s=_env_float(env, "ORCH_REDIS_TIMEOUT_S", 1.0),
            redis_max_connections=_env_int(env, "ORCH_REDIS_MAX_CONNECTIONS", 64, minimum=4),
            redis_pool_timeout_s=_env_float(env, "ORCH_REDIS_POOL_TIMEOUT_S", 2.0),
            log_level=env.get("ORCH_LOG_LEVEL", "info").lower(),
            http_transport=transport,
            event_loop=event_loop,
            state_write_delay_s=_env_number(
                env, "ORCH_STATE_WRITE_DELAY_S", 0.005, parse=float, minimum=0.0
            ),
            max_query_chars=_env_int(env, "ORCH_MAX_QUERY_CHARS", 2_000, minimum=1),
            max_body_bytes=_env_int(env, "ORCH_MAX_BODY_BYTES", 1_048_576, minimum=1_024),
            workflow_timeout_s=_env_float(env, "ORCH_WORKFLOW_TIMEOUT_S", 120.0),
            max_parallel=_env_int(env, "ORCH_MAX_PARALLEL", DEFAULT_MAX_PARALLEL, minimum=1),
            lease_s=_env_float(env, "ORCH_LEASE_S", 15.0),
            shutdown_grace_s=_env_float(env, "ORCH_SHUTDOWN_GRACE_S", 5.0),
            log_format=log_format,
            metrics_definitions=tuple(
                name.strip()
                for name in env.get("ORCH_METRICS_DEFINITIONS", "").split(",")
                if name.strip()
            ),
            metrics_max_steps=_env_int(env, "ORCH_METRICS_MAX_STEPS", 50, minimum=1),
            sse_keepalive_s=_env_float(env, "ORCH_SSE_KEEPALIVE_S", 15.0),
            sse_max_streams=_env_int(env, "ORCH_SSE_MAX_STREAMS", 256, minimum=1),
            otel_endpoint=None if otel_disabled else (otel_endpoint or None),
            otel_service_name=env.get("OTEL_SERVICE_NAME") or "agent-orchestrator",
            limits=Limits(
                node_ops=_env_int(env, "ORCH_EVAL_NODE_OPS", _LIMITS.node_ops, minimum=1_000),
                node_bytes=_env_int(env, "ORCH_EVAL_NODE_BYTES", _LIMITS.node_bytes, minimum=1_024),
                workflow_ops=_env_int(
                    env, "ORCH_EVAL_WORKFLOW_OPS", _LIMITS.workflow_ops, minimum=1_000
                ),
                workflow_bytes=_env_int(
                    env, "ORCH_EVAL_WORKFLOW_BYTES", _LIMITS.workflow_bytes, minimum=1_024
                ),
                offload_timeout_s=_env_float(env, "ORCH_EVAL_TIMEOUT_S", _LIMITS.offload_timeout_s),
            ),
            compile_timeout_s=_env_float(env, "ORCH_COMPILE_TIMEOUT_S", 10.0),
            max_json_depth=_env_int(env, "ORCH_MAX_JSON_DEPTH", MAX_JSON_DEPTH, minimum=4),
            body_timeout_s=_env_float(env, "ORCH_BODY_TIMEOUT_S", 10.0),
            header_timeout_s=_env_float(env, "ORCH_HEADER_TIMEOUT_S", 10.0),
            keepalive_timeout_s=_env_float(env, "ORCH_KEEPALIVE_TIMEOUT_S", 15.0),
            max_metric_series=_env_int(env, "ORCH_MAX_METRIC_SERIES", 500, minimum=1),
            memory_max_workflows=_env_int(env, "ORCH_MEMORY_MAX_WORKFLOWS", 10_000, minimum=1),
            memory_max_bytes=_env_int(
                env, "ORCH_MEMORY_MAX_BYTES", 256 * 1024 * 1024, minimum=1_024
            ),
            breaker_sync_s=_env_float(env, "ORCH_BREAKER_SYNC_S", 0.25),
            sync_wait_s=_env_float(env, "ORCH_SYNC_WAIT_S", 25.0),
            step_timeout_s=_env_float(env, "ORCH_STEP_TIMEOUT_S", 15.0),
            schedule_poll_s=_env_float(env, "ORCH_SCHEDULE_POLL_S", 1.0),
            schedule_grace_s=_env_float(env, "ORCH_SCHEDULE_GRACE_S", 60.0),
            agents=AgentRegistry(specs),
            access=access,
        )


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


_N = TypeVar("_N", int, float)


def _env_number(
    env: Mapping[str, str], key: str, default: _N, *, parse: type[_N], minimum: _N
) -> _N:
    """`key` parsed with `parse` (int or float), at least `minimum`; `default` when unset."""
    raw = env.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = parse(raw)
    except ValueError:
        kind = "an integer" if parse is int else "a number"
        raise ConfigError(f"expected {kind}, got {raw!r}", source="environment", key=key) from None
    if value < minimum:
        raise ConfigError(f"must be >= {minimum}, got {value}", source="environment", key=key)
    return value


def _env_int(env: Mapping[str, str], key: str, default: int, *, minimum: int) -> int:
    return _env_number(env, key, default, parse=int, minimum=minimum)


def _env_float(env: Mapping[str, str], key: str, default: float) -> float:
    # Durations: a zero or negative one would make no sense anywhere they are used.
    value = _env_number(env, key, default, parse=float, minimum=0.0)
    if value == 0:
        raise ConfigError("must be > 0, got 0.0", source="environment", key=key)
    return value


def _env_flag(env: Mapping[str, str], key: str) -> bool:
    raw = env.get(key, "").strip().lower()
    if raw in ("", "0", "false", "no"):
        return False
    if raw in ("1", "true", "yes"):
        return True
    raise ConfigError(f"expected 1 or 0, got {raw!r}", source="environment", key=key)


def _check_url(url: str, source: str, key: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"expected an http(s) URL, got {url!r}", source=source, key=key)
    return url


def _load_file(
    path: Path, specs: dict[str, AgentSpec]
) -> tuple[dict[str, AgentSpec], AccessConfig]:
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
    try:
        access = parse_access(raw.get("access"), raw.get("tenants"))
    except AccessConfigError as exc:
        raise ConfigError(str(exc), source=source, key=exc.key) from None
    agents = raw.get("agents", {})
    if not isinstance(agents, dict):
        raise ConfigError("must be a table of agent tables", source=source, key="agents")
    out = dict(specs)
    for name, table in agents.items():
        key = f"agents.{name}"
        if not isinstance(table, dict):
            raise ConfigError("must be a table", source=source, key=key)
        out[name] = _agent_from_table(name, table, out.get(name), source)
    for tenant, policy in access.tenants.items():
        for agent in sorted((policy.agents or frozenset()) - set(out)):
            raise ConfigError(
                f"unknown agent {agent!r}", source=source, key=f"tenants.{tenant}.agents"
            )
    return out, access


_AGENT_KEYS = {
    "url",
    "concurrency",
    "max_response_bytes",
    "timeouts",
    "breaker",
    "retry",
    "retry_budget",
    "protocol",
}


def _agent_from_table(
    name: str, table: dict[str, Any], base: AgentSpec | None, source: str
) -> AgentSpec:
    key = f"agents.{name}"
    unknown = set(table) - _AGENT_KEYS
    if unknown:
        raise ConfigError("unknown key", source=source, key=f"{key}.{sorted(unknown)[0]}")
    if base is None:
        if "url" not in table:
            raise ConfigError("a new agent needs a url", source=source, key=f"{key}.url")
        base = AgentSpec(name=name, url=str(table["url"]))
    url = base.url
    if "url" in table:
        if not isinstance(table["url"], str):
            raise ConfigError("must be a string", source=source, key=f"{key}.url")
        url = _check_url(table["url"], source, f"{key}.url")
    protocol = base.protocol
    if "protocol" in table:
        value = table["protocol"]
        if value not in PROTOCOLS:
            raise ConfigError(
                f"must be one of {', '.join(PROTOCOLS)}, got {value!r}",
                source=source,
                key=f"{key}.protocol",
            )
        protocol = value
    concurrency = base.concurrency
    if "concurrency" in table:
        concurrency = _positive(table["concurrency"], int, source, f"{key}.concurrency")
    breaker = _overlay(base.breaker, table.get("breaker"), source, f"{key}.breaker")
    try:
        validate_config(breaker)
    except ValueError as exc:
        raise ConfigError(str(exc), source=source, key=f"{key}.breaker") from None
    max_response = base.max_response_bytes
    if "max_response_bytes" in table:
        max_response = _positive(
            table["max_response_bytes"], int, source, f"{key}.max_response_bytes"
        )
    return dataclasses.replace(
        base,
        url=url,
        concurrency=concurrency,
        protocol=protocol,
        max_response_bytes=max_response,
        timeouts=_overlay(base.timeouts, table.get("timeouts"), source, f"{key}.timeouts"),
        breaker=breaker,
        retry=_overlay(base.retry, table.get("retry"), source, f"{key}.retry"),
        retry_budget=_overlay(
            base.retry_budget, table.get("retry_budget"), source, f"{key}.retry_budget"
        ),
    )


_C = TypeVar("_C", AgentTimeouts, BreakerConfig, RetryConfig, RetryBudgetConfig)


def _overlay(base: _C, table: object, source: str, key: str) -> _C:
    """Return `base` with the table's values, each checked against the field's type."""
    if table is None:
        return base
    if not isinstance(table, dict):
        raise ConfigError("must be a table", source=source, key=key)
    fields = {f.name: f for f in dataclasses.fields(base)}
    changes: dict[str, Any] = {}
    for name, value in table.items():
        if name not in fields:
            allowed = ", ".join(sorted(fields))
            raise ConfigError(
                f"unknown key (allowed: {allowed})", source=source, key=f"{key}.{name}"
            )
        current = getattr(base, name)
        if isinstance(current, str):
            choices = _CHOICES[name]
            if value not in choices:
                raise ConfigError(
                    f"must be one of {', '.join(map(repr, choices))}, got {value!r}",
                    source=source,
                    key=f"{key}.{name}",
                )
            changes[name] = value
        elif name in _MAY_BE_ZERO:
            changes[name] = _positive(value, float, source, f"{key}.{name}", zero_ok=True)
        else:
            want = int if isinstance(current, int) else float
            changes[name] = _positive(value, want, source, f"{key}.{name}")
    return dataclasses.replace(base, **changes)


# The string-valued fields of the tables, and what each may be.
_CHOICES: dict[str, tuple[str, ...]] = {
    "policy": ("rate", "consecutive"),
    "window_type": ("count", "time"),
    "share": ("view", "follow"),
}
# Fields where 0 is meaningful (no jitter).
_MAY_BE_ZERO = frozenset({"backoff_jitter"})


def _positive(
    value: object, want: type[int] | type[float], source: str, key: str, *, zero_ok: bool = False
) -> Any:
    # bool is an int subclass; `true` is never a sensible count or duration.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"expected {want.__name__}, got {value!r}", source=source, key=key)
    if want is int and not isinstance(value, int):
        raise ConfigError(f"expected int, got {value!r}", source=source, key=key)
    if value < 0 or (value == 0 and not zero_ok):
        raise ConfigError(f"must be > 0, got {value!r}", source=source, key=key)
    return want(value)
