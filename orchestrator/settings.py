"""Settings: the one typed model of the configuration, and the only reader of the environment.

`Settings.from_env(environ)` reads the environment variables of `VARIABLES` and the
optional TOML file named by `ORCH_CONFIG` (orchestrator/settings_file.py: one table per
agent, plus `[access]` and `[tenants]`).

**Where defaults live.** Every default is written once, as the default of a field of
the model: `Settings` below, and the dataclasses it holds — `AgentSpec`/`AgentTimeouts`
(agents/registry.py, with the per-agent breaker and retry defaults), `BreakerConfig`,
`RetryConfig`, `RetryBudgetConfig` (circuit/config.py), `Limits` (dag/budget.py),
`AccessConfig`/`Limits` (orchestrator/access/). Where a lower package (state/, dag/),
which may not import this module, needs the same value as its own parameter default,
the value is a named constant there and the field refers to it. Everything else reads
the model: the CLI's help, the README's settings tables (generated from it by
`python -m orchestrator.settings_doc --write README.md`, and checked by
tests/orchestrator/test_settings_defaults.py, which also fails when another module
hard-codes a default the model owns).

**Checking.** Each field's type carries its constraint (`Annotated[int, Meta(ge=1)]`);
msgspec converts and checks every value (orchestrator/settings_values.py), laxly for
the environment's strings, strictly for TOML's typed values. A bad value stops
start-up with a `ConfigError` naming the variable or the file and key, the value and
what was expected.
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
from orchestrator.metrics import DEFAULT_MAX_SERIES, DEFAULT_MAX_STEP_LABELS
from orchestrator.settings_file import load_file
from orchestrator.settings_values import ConfigError, convert
from state.connect import (
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
    metrics_max_steps: PositiveInt = DEFAULT_MAX_STEP_LABELS
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
        for name in ("nlp", "data", "viz"):
            if (url := values.pop(f"agents.{name}.url", None)) is not None:
                specs[name] = dataclasses.replace(specs[name], url=url)
        limits = {
            k.removeprefix("limits."): v for k, v in values.items() if k.startswith("limits.")
        }
        for key in limits:
            del values[f"limits.{key}"]
        if access.redis_keys and not env.get("REDIS_URL"):
            raise ConfigError(
                "[access] redis_keys = true needs REDIS_URL", source=_ENV, key="REDIS_URL"
            )
        access = dataclasses.replace(
            access,
            cors_origins=tuple(dict.fromkeys((*access.cors_origins, *_origins(env)))),
            insecure=values.pop("access.insecure", access.insecure),
        )
        return cls(
            **values,
            otel_endpoint=_otel_endpoint(env),
            limits=dataclasses.replace(base.limits, **limits),
            agents=AgentRegistry(specs),
            access=access,
        )


@dataclass(frozen=True, slots=True)
class Variable:
    """One environment variable: the model field it sets (dotted into nested values).

    `field` None: the variable sets no single field (ORCH_CONFIG names the file).
    `by_hand`: read by its own code in `from_env` rather than converted by its type.
    `tp` overrides the field's type where the field's own type is looser than what
    the environment may set (the evaluation budgets have floors).
    `split`: a comma-separated list. `unset`: what leaving it unset means, when the
    field's default alone does not say it.
    """

    name: str
    field: str | None
    doc: str
    tp: Any = None
    split: bool = False
    lower: bool = False
    by_hand: bool = False
    unset: str | None = None


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


def field_type(path: str) -> Any:
    """The annotated type of a dotted field path of the model ("limits.node_ops")."""
    owner: Any = Settings
    tp: Any = None
    for part in path.split("."):
        if owner is AgentRegistry:  # agents.<name>.<field>: every agent is an AgentSpec
            owner = AgentSpec
            continue
        tp = typing.get_type_hints(owner, include_extras=True)[part]
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


_MIN_OPS = Annotated[int, Meta(ge=1_000)]
_MIN_BYTES = Annotated[int, Meta(ge=1_024)]

# Every environment variable the service reads, in the README's order. The defaults are
# the model's (README "Configuration" is generated from this table and the model).
VARIABLES: tuple[Variable, ...] = (
    Variable("ORCH_HOST", "host", "interface the API listens on"),
    Variable("ORCH_PORT", "port", "port the API listens on"),
    Variable(
        "REDIS_URL",
        "redis_url",
        "Redis state store (e.g. `redis://127.0.0.1:6379/0`); `redis+cluster://host:port` "
        "(or `rediss+cluster://`) names a Redis Cluster",
        unset="the embedded in-memory store",
    ),
    Variable(
        "ORCH_REDIS_CLUSTER",
        "redis_cluster",
        "`1`: the `redis://` URL names a node of a Redis Cluster",
    ),
    Variable(
        "ORCH_STATE_TTL_S",
        "state_ttl_s",
        "TTL of every key of a *running* workflow, refreshed on every write",
    ),
    Variable(
        "ORCH_RETENTION_S",
        "retention_s",
        "how long a *finished* workflow is kept (compacted) for status, history and its "
        "Idempotency-Key",
    ),
    Variable(
        "ORCH_HISTORY_SHARDS",
        "history_shards",
        "keys the history index is spread over (one hash slot each); set the same on every replica",
        unset="1, or 8 on a Cluster",
    ),
    Variable("ORCH_KEY_PREFIX", "key_prefix", "prefix of every Redis key"),
    Variable(
        "ORCH_REDIS_CONNECT_TIMEOUT_S",
        "redis_connect_timeout_s",
        "bound on connecting to Redis; past it the call fails (503 at the API) instead of hanging",
    ),
    Variable(
        "ORCH_REDIS_TIMEOUT_S",
        "redis_timeout_s",
        "bound on each Redis command (503 at the API past it)",
    ),
    Variable(
        "ORCH_REDIS_MAX_CONNECTIONS",
        "redis_max_connections",
        "Redis connections per client, pub/sub included (at least 4)",
    ),
    Variable(
        "ORCH_REDIS_POOL_TIMEOUT_S",
        "redis_pool_timeout_s",
        "how long a command waits for a free pooled connection before 503",
    ),
    Variable("NLP_AGENT_URL", "agents.nlp.url", "the NLP agent's URL (wins over the file's)"),
    Variable("DATA_AGENT_URL", "agents.data.url", "the Data agent's URL (wins over the file's)"),
    Variable("VIZ_AGENT_URL", "agents.viz.url", "the Viz agent's URL (wins over the file's)"),
    Variable(
        "ORCH_CONFIG",
        None,
        'TOML file: one table per agent (below), `[access]` and `[tenants]` (see "Access")',
        unset="no file",
    ),
    Variable("ORCH_MAX_QUERY_CHARS", "max_query_chars", "longest `query` accepted"),
    Variable("ORCH_MAX_BODY_BYTES", "max_body_bytes", "largest request body (at least 1024)"),
    Variable("ORCH_WORKFLOW_TIMEOUT_S", "workflow_timeout_s", "the chain's deadline"),
    Variable(
        "ORCH_MAX_PARALLEL",
        "max_parallel",
        "nodes of the chain running at once (a DAG's `options.max_parallel` has the same default)",
    ),
    Variable(
        "ORCH_HTTP_TRANSPORT",
        "http_transport",
        "agent transport: `aiohttp` (one `aiohttp.ClientSession`) or `httpx` (one "
        "`httpx.AsyncClient`, httpx's own pool)",
    ),
    Variable(
        "ORCH_EVENT_LOOP",
        "event_loop",
        "`auto` (uvloop when installed: `pip install -e '.[fast]'`), `asyncio`, or `uvloop` "
        "(refuses to start without it)",
    ),
    Variable(
        "ORCH_STATE_WRITE_DELAY_S",
        "state_write_delay_s",
        "write-behind: a running workflow's transitions reach the store within this delay, "
        "coalesced into fewer writes (accept and the terminal write are never delayed; `0` = "
        "every transition at once)",
    ),
    Variable(
        "ORCH_LEASE_S",
        "lease_s",
        "owner lease: a silent replica's workflows are resumed after it",
    ),
    Variable(
        "ORCH_SHUTDOWN_GRACE_S",
        "shutdown_grace_s",
        "on shutdown, time running workflows get to finish before they are handed off",
    ),
    Variable(
        "ORCH_SYNC_WAIT_S",
        "sync_wait_s",
        "longest a sync query waits for its result before answering 202 (a request's `wait_s` "
        "overrides it)",
    ),
    Variable(
        "ORCH_SCHEDULE_POLL_S",
        "schedule_poll_s",
        "how often each replica looks for due schedule ticks",
    ),
    Variable(
        "ORCH_SCHEDULE_GRACE_S",
        "schedule_grace_s",
        "how late a `skip` schedule's tick may still fire",
    ),
    Variable(
        "ORCH_STEP_TIMEOUT_S",
        "step_timeout_s",
        "deadline of every step without its own `timeout_s`, retries included",
    ),
    Variable(
        "ORCH_LOG_LEVEL", "log_level", "structlog lines on stderr from this level up", lower=True
    ),
    Variable(
        "ORCH_LOG_FORMAT",
        "log_format",
        "`json` lines, or `console`: readable `event key=value` lines for a terminal",
        lower=True,
    ),
    Variable(
        "ORCH_METRICS_DEFINITIONS",
        "metrics_definitions",
        "comma-separated definition names kept as Prometheus labels (the built-in `chain` "
        "always is; any other name is `(other)`)",
        split=True,
    ),
    Variable(
        "ORCH_METRICS_MAX_STEPS",
        "metrics_max_steps",
        "distinct step-id labels per such definition; later ids count as `(other)`",
    ),
    Variable(
        "ORCH_SSE_KEEPALIVE_S",
        "sse_keepalive_s",
        "an idle event stream sends a `: keep-alive` comment this often",
    ),
    Variable(
        "ORCH_SSE_MAX_STREAMS",
        "sse_max_streams",
        "event streams one replica serves at once (each holds a subscription; with Redis, a "
        "connection); more get 503 `too_many_streams`",
    ),
    Variable(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "otel_endpoint",
        "turns tracing on, exporting OTLP/HTTP to this base URL (`/v1/traces` appended); the "
        "exporter reads the other `OTEL_EXPORTER_OTLP_*` variables itself",
        by_hand=True,
        unset="tracing off",
    ),
    Variable(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "otel_endpoint",
        "the same with the full traces URL (wins over the one above)",
        by_hand=True,
        unset="tracing off",
    ),
    Variable("OTEL_SERVICE_NAME", "otel_service_name", "the service name on every span"),
    Variable("OTEL_SDK_DISABLED", None, "`true` keeps tracing off whatever the endpoint"),
    Variable(
        "ORCH_BREAKER_SYNC_S",
        "breaker_sync_s",
        "how often each replica publishes its breakers and re-reads the deployment's ops modes "
        "(a transition is published, and an ops action applied, at once anyway); a replica's "
        "report lives 8x that (at least 2 s)",
    ),
    Variable(
        "ORCH_EVAL_NODE_OPS",
        "limits.node_ops",
        "evaluation budget of one node (expressions, templates, transforms): operations",
        tp=_MIN_OPS,
    ),
    Variable(
        "ORCH_EVAL_NODE_BYTES",
        "limits.node_bytes",
        "evaluation budget of one node: bytes (also the cap of a step's output)",
        tp=_MIN_BYTES,
    ),
    Variable(
        "ORCH_EVAL_WORKFLOW_OPS",
        "limits.workflow_ops",
        "evaluation budget of one workflow, all nodes together: operations",
        tp=_MIN_OPS,
    ),
    Variable(
        "ORCH_EVAL_WORKFLOW_BYTES",
        "limits.workflow_bytes",
        "evaluation budget of one workflow: bytes",
        tp=_MIN_BYTES,
    ),
    Variable(
        "ORCH_EVAL_TIMEOUT_S",
        "limits.offload_timeout_s",
        "wall-clock bound of one node's off-loop evaluation",
        tp=PositiveFloat,
    ),
    Variable(
        "ORCH_COMPILE_TIMEOUT_S", "compile_timeout_s", "wall-clock bound of checking one definition"
    ),
    Variable(
        "ORCH_MAX_JSON_DEPTH",
        "max_json_depth",
        "nesting depth of any JSON accepted or kept (at least 4)",
    ),
    Variable(
        "ORCH_HEADER_TIMEOUT_S",
        "header_timeout_s",
        "time a client has to send a request's line and headers",
    ),
    Variable("ORCH_BODY_TIMEOUT_S", "body_timeout_s", "time a client has to send a request's body"),
    Variable(
        "ORCH_KEEPALIVE_TIMEOUT_S",
        "keepalive_timeout_s",
        "idle keep-alive connections are closed after this",
    ),
    Variable(
        "ORCH_MAX_METRIC_SERIES",
        "max_metric_series",
        "distinct step labels in the metrics, all definitions together",
    ),
    Variable(
        "ORCH_MEMORY_MAX_WORKFLOWS",
        "memory_max_workflows",
        "workflows the embedded store keeps (oldest finished dropped first)",
    ),
    Variable(
        "ORCH_MEMORY_MAX_BYTES",
        "memory_max_bytes",
        "bytes the embedded store keeps (oldest finished dropped first)",
    ),
    Variable(
        "ORCH_INSECURE",
        "access.insecure",
        "`1`: with no API keys, listen on a non-loopback address anyway (same as `--insecure`)",
    ),
    Variable(
        "ORCH_CORS_ORIGINS",
        "access.cors_origins",
        "comma-separated exact origins allowed by CORS (added to `[access] cors_origins`)",
        by_hand=True,
    ),
)

# The model's defaults, for parameters in orchestrator/ that stand for a setting
# (`lease_s: float = DEFAULTS.lease_s`): they read the default instead of restating it.
DEFAULTS = Settings()
