"""The state documents are typed models (msgspec): what is stored is each model's JSON,
and documents stored before the models existed still load."""

from __future__ import annotations

import zlib

import msgspec
import pytest
import redis.asyncio as aioredis

from state import keys
from state.layout import FieldCache, assemble, compacted, summary
from state.models import (
    HistoryEntry,
    NodeFailure,
    NodeRun,
    NodeStatus,
    WorkflowError,
    WorkflowState,
    WorkflowStatus,
    decode,
    encode,
)
from state.schedules import Misfire, Run, Schedule
from tests.state.conftest import RedisBackend, make_state

# Fields exactly as the hand-written to_dict() stored them (before the typed models):
# each step with its derived duration_ms, the final document with its fallbacks.
TODAY_HEAD = (
    b'{"workflow_id":"w-old","definition_name":"chain","status":"running",'
    b'"error":null,"created_at":1700000000,"updated_at":1700000001.5,"finished_at":null,'
    b'"owner":"replica-a","tenant":"acme","submit_key":"k-1"}'
)
TODAY_SPEC = b'{"inputs":{"query":"sales by region"},"definition":{"name":"mine","nodes":[]}}'
TODAY_ORDER = b'["nlp","data"]'
TODAY_NLP = (
    b'{"step_id":"nlp","kind":"agent","agent":"nlp","status":"completed","attempts":2,'
    b'"started_at":1700000000.125,"finished_at":1700000000.5,"duration_ms":375.0,'
    b'"output":{"intent":"aggregate"},"error":null,'
    b'"fallback":"nlp: 503; used keyword_intent","skip_reason":null}'
)
TODAY_DATA = (
    b'{"step_id":"data","kind":"agent","agent":"data","status":"failed","attempts":3,'
    b'"started_at":1700000000.5,"finished_at":1700000001.5,"duration_ms":1000.0,'
    b'"output":null,"error":{"type":"AgentUnavailable","message":"refused","agent":"data",'
    b'"attempts":3,"input":{"intent":"aggregate"}},"fallback":null,"skip_reason":null}'
)
TODAY_FIELDS = {
    keys.DOC_HEADER_FIELD: TODAY_HEAD,
    keys.DOC_SPEC_FIELD: TODAY_SPEC,
    keys.DOC_ORDER_FIELD: TODAY_ORDER,
    keys.DOC_NODE_PREFIX + "nlp": TODAY_NLP,
    keys.DOC_NODE_PREFIX + "data": TODAY_DATA,
    keys.DOC_RESULT_FIELD: b'{"rows":[]}',
}

EXPECTED = WorkflowState(
    workflow_id="w-old",
    definition_name="chain",
    status=WorkflowStatus.RUNNING,
    inputs={"query": "sales by region"},
    steps={
        "nlp": NodeRun(
            "nlp", "agent", agent="nlp", status=NodeStatus.COMPLETED, attempts=2,
            started_at=1700000000.125, finished_at=1700000000.5,
            output={"intent": "aggregate"}, fallback="nlp: 503; used keyword_intent",
        ),
        "data": NodeRun(
            "data", "agent", agent="data", status=NodeStatus.FAILED, attempts=3,
            started_at=1700000000.5, finished_at=1700000001.5,
            error=NodeFailure("AgentUnavailable", "refused", "data", 3, {"intent": "aggregate"}),
        ),
    },
    result={"rows": []},
    created_at=1700000000.0,
    updated_at=1700000001.5,
    owner="replica-a",
    definition={"name": "mine", "nodes": []},
    tenant="acme",
    submit_key="k-1",
)


def today_compacted() -> bytes:
    """A finished workflow's `docz` as the hand-written code stored it."""
    done = msgspec.structs.replace(
        EXPECTED,
        status=WorkflowStatus.DEGRADED,
        finished_at=1700000002.0,
        definition=None,
        error=WorkflowError("step_failed", "data failed", step_id="data", agent="data"),
    )
    return zlib.compress(msgspec.json.encode(done.to_dict()))


def test_a_running_workflow_stored_in_todays_format_loads() -> None:
    """Unknown (derived) keys are ignored; every field comes back typed."""
    loaded = assemble(TODAY_FIELDS)
    assert loaded == EXPECTED
    assert loaded is not None
    assert isinstance(loaded.steps["data"].error, NodeFailure)
    assert loaded.steps["nlp"].duration_ms == 375.0


def test_a_finished_workflow_stored_in_todays_format_loads() -> None:
    fields = {keys.DOC_COMPACT_FIELD: today_compacted(), keys.DOC_HEADER_FIELD: TODAY_HEAD}
    loaded = assemble(fields)
    assert loaded is not None
    assert loaded.status is WorkflowStatus.DEGRADED
    assert loaded.error == WorkflowError("step_failed", "data failed", "data", "data")
    assert loaded.steps == EXPECTED.steps
    assert loaded.fallbacks == [{"step_id": "nlp", "reason": "nlp: 503; used keyword_intent"}]


def test_a_history_entry_from_todays_header_keeps_its_fields() -> None:
    assert summary(TODAY_HEAD) == HistoryEntry(
        workflow_id="w-old",
        definition_name="chain",
        status=WorkflowStatus.RUNNING,
        error=None,
        created_at=1700000000.0,
        updated_at=1700000001.5,
        finished_at=None,
        owner="replica-a",
        tenant="acme",
    )


def test_what_is_stored_is_each_models_json_and_reads_back_equal() -> None:
    """Written field by field, or compacted: the same document comes back."""
    state = make_state()
    fields = FieldCache().changes(state).fields
    assert decode(fields[keys.DOC_NODE_PREFIX + "nlp"], NodeRun) == state.steps["nlp"]
    assert assemble(fields) == msgspec.structs.replace(state, schedule_id=None)
    done = msgspec.structs.replace(state, status=WorkflowStatus.COMPLETED, schedule_id="s-1")
    assert assemble(compacted(done)) == msgspec.structs.replace(done, definition=None)


def test_a_finished_document_is_plain_json_under_the_threshold_and_zlib_from_it() -> None:
    """compacted() keeps a document shorter than `compress_from` as its JSON (`doc`) and
    compresses one at least that long (`docz`, always by default: Redis); assemble()
    reads both back to the same document."""
    done = msgspec.structs.replace(make_state(), status=WorkflowStatus.COMPLETED)
    expected = msgspec.structs.replace(done, definition=None)
    final = encode(expected)

    plain = compacted(done, compress_from=len(final) + 1)
    assert set(plain) == {keys.DOC_FINAL_FIELD, keys.DOC_HEADER_FIELD}
    assert plain[keys.DOC_FINAL_FIELD] == final
    packed = compacted(done, compress_from=len(final))
    assert set(packed) == {keys.DOC_COMPACT_FIELD, keys.DOC_HEADER_FIELD}
    assert zlib.decompress(packed[keys.DOC_COMPACT_FIELD]) == final
    assert compacted(done) == packed
    assert plain[keys.DOC_HEADER_FIELD] == packed[keys.DOC_HEADER_FIELD]
    assert assemble(plain) == assemble(packed) == expected


def test_a_stored_document_that_does_not_fit_its_model_fails_loudly() -> None:
    """Strict types: a status nobody writes, or a string for a number, is an error."""
    bad_status = TODAY_FIELDS | {keys.DOC_HEADER_FIELD: TODAY_HEAD.replace(b"running", b"zombie")}
    with pytest.raises(msgspec.ValidationError, match="status"):
        assemble(bad_status)
    bad_attempts = TODAY_NLP.replace(b'"attempts":2', b'"attempts":"2"')
    with pytest.raises(msgspec.ValidationError, match="attempts"):
        assemble(TODAY_FIELDS | {keys.DOC_NODE_PREFIX + "nlp": bad_attempts})


def test_encode_refuses_what_json_cannot_hold() -> None:
    with pytest.raises(TypeError):
        encode(NodeRun("x", "agent", output={"when": object()}))


@pytest.mark.redis
async def test_redis_serves_a_document_written_in_todays_format(
    redis_backend: RedisBackend, redis_client: aioredis.Redis
) -> None:
    """Fields written by an older replica (raw HSET here) are read by this one, which then
    writes the workflow on (a transition, then its compacted end)."""
    store = await redis_backend.new()
    key = keys.workflow_key(store.prefix, "w-old")
    for field, value in {**TODAY_FIELDS, keys.DOC_STATUS_FIELD: b"running"}.items():
        await redis_client.hset(key, field, value)
    await redis_client.expire(key, 60)
    loaded = await store.get("w-old")
    assert loaded == EXPECTED
    assert loaded is not None
    loaded.steps["data"].status = NodeStatus.CANCELLED
    assert await store.save(loaded)
    loaded.status = WorkflowStatus.CANCELLED
    assert await store.save(loaded)
    assert await store.get("w-old") == msgspec.structs.replace(loaded, definition=None)


def test_a_schedule_and_its_runs_stored_in_todays_format_load() -> None:
    old = (
        b'{"schedule_id":"s1","name":"morning","tenant":"acme","cron":"0 9 * * 1-5",'
        b'"timezone":"Europe/Paris","request":{"query":"revenue by region"},'
        b'"misfire":"catch_up","paused":false,"created_at":1700000000,"anchor":1700000000.5}'
    )
    assert decode(old, Schedule) == Schedule(
        "s1", "0 9 * * 1-5", "Europe/Paris", {"query": "revenue by region"},
        misfire=Misfire.CATCH_UP, name="morning", tenant="acme",
        created_at=1700000000.0, anchor=1700000000.5,
    )
    assert decode(b'{"tick":1700000100.0,"workflow_id":"w1"}', Run) == Run(1700000100.0, "w1")
    with pytest.raises(msgspec.ValidationError, match="misfire"):
        decode(old.replace(b"catch_up", b"sometimes"), Schedule)
