"""Every Redis key, channel and TTL default of the state layer, in one place.

Layout under one prefix (default ``orch:``), for a workflow ``<id>`` run by the
replica ``<r>``::

    orch:wf:{<id>}            hash  the workflow, written field by field (below)  TTL, refreshed
    orch:wf:{<id>}:cancel     str   cancel flag ("1")                    same expiry as the doc
    orch:wf:{<id>}:pause      str   pause flag ("1"): run no new node    same expiry as the doc
    orch:wf:{<id>}:events     list  progress events, JSON, seq = position  same expiry as the doc
    orch:events:{<id>}        chan  pub/sub: "<seq> <event JSON>"
    orch:rep:{<r>}:wfs        set   ids of the workflows <r> owns        TTL, refreshed on claim
    orch:rep:{<r>}:cancel     chan  cancel/pause/resume of <r>'s workflows only (SPUBLISH on
                                    Cluster): the message is an id, the owner reads its flags
    orch:{replicas}           zset  replica -> heartbeat deadline (ms, Redis TIME)   TTL, beats
    orch:{replicas}:dead      zset  replica -> when it was declared dead (pruned after the TTL)
    orch:{replicas}:reaping   zset  dead replica -> until when a survivor resumes its list
    orch:hist:{<n>}           zset  history shard n: "<created ms>:<id>" (lexical, score 0)
    orch:hist:{<n>}:exp       zset  the same members, score = when the workflow expires (ms)
    orch:idem:{<tenant>:<key>} hash Idempotency-Key of a submit: workflow id + body digest
    orch:cancel               chan  cancels of workflows nobody claimed (no owner to address)
    orch:finished             chan  ids of *watched* workflows whose terminal document was written
    orch:schedules            hash  schedule id -> schedule document     no TTL (until deleted)
    orch:sched:{<sid>}:tick:<t> str claim of one tick (SET NX)           until after the next tick
    orch:sched:{<sid>}:runs   list  the schedule's newest runs (capped)  deleted with it

Fields of the workflow hash while it runs (a transition writes only the fields it
changed: `DOC_HEADER_FIELD` plus one `step:<id>` per changed step):

    head     JSON: status, timestamps, error, owner, tenant, definition name
    spec     JSON: inputs and the client's definition; written once, at the first save
    order    JSON list of step ids (written when the set of steps changes)
    step:<s> JSON of one step
    docz     zlib(JSON) of the final document (a finished workflow only, see below)
    doc      the final document as plain JSON (the memory store's small finished ones)
    result   JSON of the result (written when it changes)
    status   the status alone, so the write script checks "terminal is final" cheaply
    lease_gen  the fencing token; owner  the replica holding it; watched  "1": publish its finish

A terminal write **compacts** the hash to `DOC_COMPACT_FIELD` (the whole final
document without the client's definition, which only a resume needed, as
zlib-compressed JSON) and the header, plus
`status` and `lease_gen` (not `owner`: the ownership ends with the workflow, as the
release that follows would end it), and gives it the terminal *retention*
(`ORCH_RETENTION_S`) instead of the running TTL. Both stores keep a small final
document uncompressed instead, as `DOC_FINAL_FIELD` (state/memory.py and state/redis.py
say why and under what size).

Every ``{...}`` is a Redis Cluster hash tag: the keys one script touches share one
tag (one workflow, one replica, the replica table, one history shard), so every
script is legal on a Cluster. Nothing spans tags in one script; indexes that span
workflows (replica lists, history shards) are written by separate commands.
"""

from __future__ import annotations

import zlib

DEFAULT_TTL_S = 3600
DEFAULT_RETENTION_S = 3600
DEFAULT_PREFIX = "orch:"
# Owner lease: a replica silent this long is presumed dead and its workflows resumed.
DEFAULT_LEASE_S = 15.0
# Keys the history index is spread over unless configured: one on a single Redis; on a
# Cluster one per hash slot, so history writes spread over the masters.
DEFAULT_HISTORY_SHARDS = 1
CLUSTER_HISTORY_SHARDS = 8

# Fields of the workflow hash.
DOC_COMPACT_FIELD = "docz"
DOC_FINAL_FIELD = "doc"
DOC_HEADER_FIELD = "head"
DOC_SPEC_FIELD = "spec"
DOC_ORDER_FIELD = "order"
DOC_RESULT_FIELD = "result"
DOC_NODE_PREFIX = "step:"
DOC_STATUS_FIELD = "status"
DOC_OWNER_FIELD = "owner"
DOC_WATCHED_FIELD = "watched"
# The fencing token: the generation of the workflow's latest lease claim.
DOC_LEASE_GEN_FIELD = "lease_gen"

CANCEL_FLAG_VALUE = "1"


def workflow_key(prefix: str, workflow_id: str) -> str:
    """The workflow hash (fields above)."""
    return f"{prefix}wf:{{{workflow_id}}}"


def cancel_flag_key(prefix: str, workflow_id: str) -> str:
    """Set when a cancel was requested; expires with the document."""
    return f"{workflow_key(prefix, workflow_id)}:cancel"


def pause_flag_key(prefix: str, workflow_id: str) -> str:
    """Set while a pause is requested (until resume); expires with the document."""
    return f"{workflow_key(prefix, workflow_id)}:pause"


def events_key(prefix: str, workflow_id: str) -> str:
    """The workflow's progress events, oldest first; an event's sequence number is its
    1-based position. Expires with the document (the retention, once it ended)."""
    return f"{workflow_key(prefix, workflow_id)}:events"


def events_watched_key(prefix: str, workflow_id: str) -> str:
    """Set once someone listens to the workflow's events (`subscribe_events`, on any
    replica): only then does an append PUBLISH them. Expires with the document."""
    return f"{workflow_key(prefix, workflow_id)}:events:watched"


def events_channel(prefix: str, workflow_id: str) -> str:
    """Pub/sub channel of one workflow's events; each message is "<seq> <event JSON>"."""
    return f"{prefix}events:{workflow_id}"


def refreshed_keys(prefix: str, workflow_id: str) -> tuple[str, ...]:
    """Every key of one workflow (one hash tag), the document first.

    `save` (re)sets the TTL of all of them in the same atomic write, so none of
    them outlives or predeceases the others.
    """
    # The others spelled from the document's key, made once (as the functions above do):
    # two of these per workflow, where each of them made the document's key anew.
    doc = workflow_key(prefix, workflow_id)
    return (
        doc,
        f"{doc}:cancel",
        f"{doc}:pause",
        # After the flags: a terminal write drops the flags but keeps the events (SSE
        # replays them) and whether anyone listens to them (the last events follow it).
        f"{doc}:events",
        f"{doc}:events:watched",
    )


def replica_workflows_key(prefix: str, replica: str) -> str:
    """The ids of the workflows `replica` owns: examined only once it is dead."""
    return f"{prefix}rep:{{{replica}}}:wfs"


def replica_cancel_channel(prefix: str, replica: str) -> str:
    """Cancels for the workflows `replica` owns (a sharded channel on Cluster)."""
    return f"{prefix}rep:{{{replica}}}:cancel"


def replicas_key(prefix: str) -> str:
    """Replica -> heartbeat deadline (ms): one entry per replica, not per workflow."""
    return f"{prefix}{{replicas}}"


def dead_replicas_key(prefix: str) -> str:
    return f"{prefix}{{replicas}}:dead"


def reaping_key(prefix: str) -> str:
    return f"{prefix}{{replicas}}:reaping"


def history_key(prefix: str, shard: int) -> str:
    """One shard of the history index (members "<created ms, 15 digits>:<id>")."""
    return f"{prefix}hist:{{{shard}}}"


def history_expiry_key(prefix: str, shard: int) -> str:
    return f"{history_key(prefix, shard)}:exp"


def history_shard(workflow_id: str, shards: int) -> int:
    """Which history shard lists `workflow_id` (stable across replicas and restarts)."""
    return zlib.crc32(workflow_id.encode()) % shards


def history_member(created_ms: int, workflow_id: str) -> str:
    return f"{created_ms:015d}:{workflow_id}"


def submit_key(prefix: str, tenant: str | None, idempotency_key: str) -> str:
    """An Idempotency-Key of POST /api/query, per tenant (two tenants may pick the same)."""
    return f"{prefix}idem:{{{tenant or ''}:{idempotency_key}}}"


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
    """Cancels of workflows with no owner to address (nobody ever claimed them)."""
    return f"{prefix}cancel"


def finished_channel(prefix: str) -> str:
    """Ids of watched workflows that just ended (see `DOC_WATCHED_FIELD`)."""
    return f"{prefix}finished"


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
