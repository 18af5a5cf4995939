"""GET /api/workflows (history) and Idempotency-Key on POST /api/query, end to end:
on the memory store, and across two replicas on Redis and on a Redis Cluster."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from state.memory import MemoryStateStore
from state.redis import RedisStateStore
from state.store import StateStore
from tests.integration.conftest import Agents

QUESTION = "number of orders by channel"


async def _two_replicas(api: Any, request: pytest.FixtureRequest, kind: str) -> tuple[Any, Any]:
    if kind == "memory":
        store: StateStore = MemoryStateStore()
        one = await api(store=store, replica_id="a")
        return one, one  # one process: "both replicas" are the same
    if kind == "redis":
        url, prefix = request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix")
    else:
        url = request.getfixturevalue("redis_cluster_url")
        prefix = request.getfixturevalue("redis_cluster_prefix")
    a = await api(store=RedisStateStore.from_url(url, prefix=prefix), replica_id="a")
    b = await api(store=RedisStateStore.from_url(url, prefix=prefix), replica_id="b")
    return a, b


BACKENDS = [
    "memory",
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("cluster", marks=pytest.mark.redis),
]


@pytest.mark.parametrize("kind", BACKENDS)
async def test_history_lists_what_any_replica_ran_newest_first(
    api: Any, agents: Agents, request: pytest.FixtureRequest, kind: str
) -> None:
    a, b = await _two_replicas(api, request, kind)
    ids = []
    for replica in (a, b, a):
        body = await (await replica.post("/api/query", json={"query": QUESTION})).json()
        ids.append(body["workflow_id"])

    first = await b.get("/api/workflows", params={"limit": "2"})
    assert first.status == 200
    page = await first.json()
    assert [w["workflow_id"] for w in page["workflows"]] == ids[::-1][:2]
    assert first.headers["Link"].startswith("</api/workflows?cursor=")
    rest = await (await a.get("/api/workflows", params={"cursor": page["next_cursor"]})).json()
    assert [w["workflow_id"] for w in rest["workflows"]] == [ids[0]]
    assert rest["next_cursor"] is None
    entry = rest["workflows"][0]
    assert entry["status"] == "completed" and entry["definition_name"] == "chain"

    filtered = await (
        await a.get("/api/workflows", params={"status": "failed,cancelled"})
    ).json()
    assert filtered["workflows"] == []
    later = await (await a.get("/api/workflows", params={"since": "2100-01-01T00:00:00"})).json()
    assert later["workflows"] == []


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"limit": "0"}, "invalid_parameter"),
        ({"limit": "x"}, "invalid_parameter"),
        ({"status": "done"}, "invalid_parameter"),
        ({"since": "yesterday"}, "invalid_parameter"),
        ({"since": "nan"}, "invalid_parameter"),
        ({"since": "1e400"}, "invalid_parameter"),
        ({"until": "-inf"}, "invalid_parameter"),
        ({"until": "-5"}, "invalid_parameter"),
        ({"cursor": "%%%"}, "invalid_cursor"),
        ({"cursor": "MTIzOmFi"}, "invalid_cursor"),
        ({"owner": "me"}, "unknown_parameter"),
    ],
)
async def test_bad_history_parameters_are_400s(
    api: Any, agents: Agents, params: dict[str, str], code: str
) -> None:
    client = await api()
    response = await client.get("/api/workflows", params=params)
    assert response.status == 400
    assert (await response.json())["error"]["code"] == code


@pytest.mark.parametrize("kind", BACKENDS)
async def test_the_same_key_and_body_return_the_same_workflow_from_any_replica(
    api: Any, agents: Agents, request: pytest.FixtureRequest, kind: str
) -> None:
    """A retried submit (e.g. after a lost response) runs nothing again: same id, one run."""
    a, b = await _two_replicas(api, request, kind)
    headers = {"Idempotency-Key": "order-42"}
    body = {"query": QUESTION, "mode": "async"}
    first = await a.post("/api/query", json=body, headers=headers)
    assert first.status == 202
    workflow_id = (await first.json())["workflow_id"]
    again = await b.post("/api/query", json={"mode": "async", "query": QUESTION}, headers=headers)
    assert again.status == 202
    assert again.headers["Idempotent-Replayed"] == "true"
    assert (await again.json())["workflow_id"] == workflow_id

    # A sync retry waits for the same workflow and answers with its result.
    sync = await a.post("/api/query", json={"query": QUESTION}, headers={"Idempotency-Key": "s"})
    replay = await b.post("/api/query", json={"query": QUESTION}, headers={"Idempotency-Key": "s"})
    assert sync.status == replay.status == 200
    assert (await replay.json())["workflow_id"] == (await sync.json())["workflow_id"]
    assert (await agents["nlp"].stats())["requests"] == 2  # two workflows, not four


@pytest.mark.parametrize("kind", BACKENDS)
async def test_racing_submits_with_one_key_run_once(
    api: Any, agents: Agents, request: pytest.FixtureRequest, kind: str
) -> None:
    a, b = await _two_replicas(api, request, kind)
    headers = {"Idempotency-Key": "race"}
    body = {"query": QUESTION, "mode": "async"}
    responses = await asyncio.gather(
        *(r.post("/api/query", json=body, headers=headers) for r in (a, b, a, b))
    )
    ids = set()
    for response in responses:
        if response.status == 409:  # the first submit was still being accepted
            assert (await response.json())["error"]["code"] == "idempotency_key_in_progress"
            continue
        assert response.status == 202
        ids.add((await response.json())["workflow_id"])
    assert len(ids) == 1


async def test_the_same_key_with_another_body_is_a_422(api: Any, agents: Agents) -> None:
    client = await api()
    headers = {"Idempotency-Key": "k1"}
    first = await client.post("/api/query", json={"query": QUESTION}, headers=headers)
    assert first.status == 200
    other = await client.post("/api/query", json={"query": "revenue by region"}, headers=headers)
    assert other.status == 422
    assert (await other.json())["error"]["code"] == "idempotency_key_reused"


async def test_a_malformed_key_is_a_400(api: Any, agents: Agents) -> None:
    client = await api()
    bad = await client.post(
        "/api/query", json={"query": QUESTION}, headers={"Idempotency-Key": "x" * 256}
    )
    assert bad.status == 400
    assert (await bad.json())["error"]["code"] == "invalid_idempotency_key"
