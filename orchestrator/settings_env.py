"""Every environment variable the service reads: its name, the model field it sets, what it does.

Only `Settings.from_env` (orchestrator/settings.py) reads them; the README's table is
generated from this one (orchestrator/settings_doc.py), with the defaults taken from
the model, so a variable is documented exactly when it is read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from msgspec import Meta

from circuit.config import PositiveFloat
from state.keys import CLUSTER_HISTORY_SHARDS, DEFAULT_HISTORY_SHARDS


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
        unset=f"{DEFAULT_HISTORY_SHARDS}, or {CLUSTER_HISTORY_SHARDS} on a Cluster",
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
        "bound on each Redis round trip: the write of a batch of commands, then its replies"
        " (503 at the API past it)",
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
        "`auto` (uvloop when installed: `scripts/venv.sh fast`), `asyncio`, or `uvloop` "
        "(refuses to start without it)",
    ),
    Variable(
        "ORCH_GC_THRESHOLD",
        "gc_threshold",
        "first threshold of CPython's cyclic garbage collector (allocations between gen-0 "
        "passes; `0` keeps CPython's 700); the service's objects die by reference count",
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
        "ORCH_LOG_LEVEL",
        "log_level",
        "structlog lines on stderr from this level up: debug, info, warning, error or critical",
        lower=True,
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
