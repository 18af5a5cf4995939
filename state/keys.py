"""Every Redis key, channel and TTL default of the state layer, in one place.

Layout under one prefix (default ``orch:``), for a workflow ``<id>``::

    orch:wf:{<id>}          hash  the workflow document (fields below)      TTL, refreshed on save
                                  + the lease generation (fencing token)
    orch:wf:{<id>}:cancel   str   cancel flag ("1")                         same expiry as the doc
    orch:wf:{<id>}:pause    str   pause flag ("1"): run no new node         same expiry as the doc
    orch:wf:{<id>}:idem     hash  idempotency keys, step -> key  (reserved) refreshed on save
    orch:wf:{<id>}:lease    str   owner replica id                          its own short TTL
    orch:wf:{<id>}:events   list  progress events, JSON, seq = position     same expiry as the doc
    orch:events:{<id>}      chan  pub/sub: "<seq> <event JSON>"
    orch:running            set   ids of workflows someone claimed and has not released;
                                  TTL refreshed by every claim and heartbeat
    orch:cancel             chan  pub/sub: message = workflow id to cancel
    orch:finished           chan  pub/sub: message = workflow id whose terminal document was written
    orch:schedules          hash  schedule id -> schedule document          no TTL (until deleted)
    orch:sched:{<sid>}:tick:<t> str  claim of one tick (SET NX)  until after the next tick
    orch:sched:{<sid>}:runs list  the schedule's newest runs (capped)       deleted with it

The ``{<id>}`` braces are a Redis Cluster hash tag: every key of one workflow
lands in the same slot, so the Lua scripts that touch them stay legal there.

The document is a hash rather than a plain string so that the "terminal is
final" check in the save script reads one short field (`DOC_STATUS_FIELD`)
instead of decoding the whole JSON document in Lua on every write.

Keys beyond the document and the cancel flag:

- the **lease** (`lease_key`, state/leases.py) holds the owner replica's id with a
  short TTL renewed by the owner's heartbeat; it is deliberately *not* in
  `refreshed_keys`, because its expiry is how a dead owner is detected. The
  running index (`running_index_key`) is what the other replicas scan for such
  orphans.
- the **lease generation** (`DOC_LEASE_GEN_FIELD`, a field of the document
  hash) grows by one with every claim and is the owner's fencing token: the
  save script refuses a write whose token is not the current generation, in
  the same script that writes. It lives in the document hash (not in the lease
  key) because it must outlive a lapsed lease, and so that the per-step writes
  planned for the document (one hash field per step, same ``{<id>}`` tag) check
  it in the same slot.
- the **idempotency** hash (`idempotency_key`) will map a step (attempt) to the
  ``Idempotency-Key`` sent to its agent, so a resumed workflow reuses the key;
  it lives exactly as long as the document.
"""

from __future__ import annotations

DEFAULT_TTL_S = 3600
DEFAULT_PREFIX = "orch:"

# Fields of the document hash.
DOC_JSON_FIELD = "doc"
DOC_STATUS_FIELD = "status"
# The fencing token: the generation of the workflow's latest lease claim.
DOC_LEASE_GEN_FIELD = "lease_gen"

CANCEL_FLAG_VALUE = "1"


def workflow_key(prefix: str, workflow_id: str) -> str:
    """The workflow document (a hash: `DOC_JSON_FIELD`, `DOC_STATUS_FIELD`)."""
    return f"{prefix}wf:{{{workflow_id}}}"


def cancel_flag_key(prefix: str, workflow_id: str) -> str:
    """Set when a cancel was requested; expires with the document."""
    return f"{workflow_key(prefix, workflow_id)}:cancel"


def pause_flag_key(prefix: str, workflow_id: str) -> str:
    """Set while a pause is requested (until resume); expires with the document."""
    return f"{workflow_key(prefix, workflow_id)}:pause"


def idempotency_key(prefix: str, workflow_id: str) -> str:
    """Reserved: hash of step -> Idempotency-Key; expires with the document."""
    return f"{workflow_key(prefix, workflow_id)}:idem"


def lease_key(prefix: str, workflow_id: str) -> str:
    """The owner lease (the replica id), with its own short TTL."""
    return f"{workflow_key(prefix, workflow_id)}:lease"


def events_key(prefix: str, workflow_id: str) -> str:
    """The workflow's progress events, oldest first; an event's sequence number is its
    1-based position. Expires with the document."""
    return f"{workflow_key(prefix, workflow_id)}:events"


def events_channel(prefix: str, workflow_id: str) -> str:
    """Pub/sub channel of one workflow's events; each message is "<seq> <event JSON>"."""
    return f"{prefix}events:{workflow_id}"


def running_index_key(prefix: str) -> str:
    """Set of workflow ids under a lease: scanned for orphans whose lease expired."""
    return f"{prefix}running"


def refreshed_keys(prefix: str, workflow_id: str) -> tuple[str, ...]:
    """Every key that shares the document's TTL, the document first.

    `save` (re)sets the TTL of all of them in the same atomic write, so none of
    them outlives or predeceases the others.
    """
    return (
        workflow_key(prefix, workflow_id),
        cancel_flag_key(prefix, workflow_id),
        idempotency_key(prefix, workflow_id),
        events_key(prefix, workflow_id),
        pause_flag_key(prefix, workflow_id),
    )


def schedules_key(prefix: str) -> str:
    """Hash of every schedule document, by schedule id."""
    return f"{prefix}schedules"


def schedule_tick_key(prefix: str, schedule_id: str, tick: float) -> str:
    """Claimed by the one replica that starts the run of `tick` (epoch seconds)."""
    return f"{prefix}sched:{{{schedule_id}}}:tick:{int(tick)}"


def schedule_runs_key(prefix: str, schedule_id: str) -> str:
    """List of the schedule's newest runs (tick, workflow id), newest first."""
    return f"{prefix}sched:{{{schedule_id}}}:runs"


def cancel_channel(prefix: str) -> str:
    """One pub/sub channel per prefix; each message is a workflow id."""
    return f"{prefix}cancel"


def finished_channel(prefix: str) -> str:
    """One pub/sub channel per prefix; each message is the id of a workflow that just ended."""
    return f"{prefix}finished"


def cancel_flag_pattern(prefix: str) -> str:
    """A SCAN MATCH pattern for every cancel flag under `prefix` (glob-escaped)."""
    head, tail = _cancel_flag_parts(prefix)
    return f"{_glob_escape(head)}*{_glob_escape(tail)}"


def workflow_id_of_cancel_flag(prefix: str, key: str) -> str:
    """The workflow id inside a key matched by `cancel_flag_pattern`."""
    head, tail = _cancel_flag_parts(prefix)
    return key[len(head) : len(key) - len(tail)]


def _cancel_flag_parts(prefix: str) -> tuple[str, str]:
    head, _, tail = cancel_flag_key(prefix, "\0").partition("\0")
    return head, tail


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "\\*?[]" else c for c in text)


# Access (orchestrator/access, state/ratelimit.py): keys shared by every replica.
#
#    orch:apikey:<sha256 hex>   hash  one API key's record (id, tenant, roles, limits)  no TTL
#    orch:apikeys               hash  key id -> sha256 hex, to list and revoke keys     no TTL
#    orch:rl:{<bucket>}         hash  a token bucket (tokens, ts)       expires once full again
#    orch:slots:{<pool>}        zset  members held (in-flight workflows), score = expiry ms


def api_key_key(prefix: str, digest_hex: str) -> str:
    """One API key's record, found by the SHA-256 of the key (the key is never stored)."""
    return f"{prefix}apikey:{digest_hex}"


def api_key_index_key(prefix: str) -> str:
    """Key id -> digest, so `orchestrator keys list/revoke` work by id."""
    return f"{prefix}apikeys"


def rate_bucket_key(prefix: str, bucket: str) -> str:
    return f"{prefix}rl:{{{bucket}}}"


def slots_key(prefix: str, pool: str) -> str:
    return f"{prefix}slots:{{{pool}}}"
