"""The breaker endpoints on the memory store: one process, so the deployment is itself."""

from __future__ import annotations

from typing import Any

from tests.integration.conftest import Agents

QUESTION = "number of orders by channel"


async def test_status_is_the_one_replica_with_an_overall_view(api: Any) -> None:
    client = await api(replica_id="solo")
    body = await (await client.get("/api/circuit-breakers/status")).json()
    assert body["replica"] == "solo"
    assert body["shared"] == {"backend": "memory", "available": True, "replicas": ["solo"]}
    data = body["breakers"]["data"]
    assert set(data["replicas"]) == {"solo"}
    assert data["overall"]["state"] == "closed"
    assert data["overall"]["replicas"] == 1
    assert data["forced"] is None
    assert data["open_wait_s"] == data["reset_timeout_s"] == 60.0


async def test_disable_admits_every_call_until_enable(api: Any, agents: Agents) -> None:
    """disable: the breaker stays closed through failures; enable: the policy opens it."""
    client = await api()
    await agents["nlp"].control(fail_rate=1.0)
    disabled = await client.post("/api/circuit-breakers/nlp/disable")
    assert disabled.status == 200
    assert (await disabled.json())["forced"] == "disabled"
    for _ in range(3):
        body = await (await client.post("/api/query", json={"query": QUESTION})).json()
        assert body["status"] == "degraded"  # NLP fell back each time, after trying it
    assert (await agents["nlp"].stats())["requests"] == 6
    status = await (await client.get("/api/circuit-breakers/status")).json()
    nlp = status["breakers"]["nlp"]
    assert (nlp["state"], nlp["rejections"], nlp["overall"]["state"]) == ("closed", 0, "disabled")

    enabled = await (await client.post("/api/circuit-breakers/nlp/enable")).json()
    assert (enabled["forced"], enabled["state"]) == (None, "closed")
    for _ in range(2):
        await client.post("/api/query", json={"query": QUESTION})
    status = await (await client.get("/api/circuit-breakers/status")).json()
    assert status["breakers"]["nlp"]["state"] == "open"


async def test_a_held_open_breaker_does_not_half_open_until_reset(api: Any) -> None:
    client = await api()
    opened = await (await client.post("/api/circuit-breakers/viz/open")).json()
    assert (opened["state"], opened["forced"], opened["half_open_at"]) == ("open", "open", None)
    reset = await (await client.post("/api/circuit-breakers/viz/reset")).json()
    assert (reset["state"], reset["forced"]) == ("closed", None)


async def test_unknown_agent_or_action(api: Any) -> None:
    client = await api()
    missing = await client.post("/api/circuit-breakers/nope/disable")
    assert missing.status == 404
    assert (await missing.json())["error"]["code"] == "agent_not_found"
    unknown = await client.post("/api/circuit-breakers/data/explode")
    assert unknown.status == 404
    assert (await unknown.json())["error"]["code"] == "not_found"
