"""GET /api/workflow/{id}/events: progress as Server-Sent Events, replay, resume, any replica."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from orchestrator.events import TERMINAL_EVENTS
from state.memory import MemoryStateStore
from state.models import WorkflowState
from state.redis import RedisStateStore
from state.store import StateStoreError
from tests.integration.conftest import Agents
from tests.integration.gate import GatedAgent
from tests.integration.sse import SseEvent, read_events

QUESTION = "average revenue by region in 2024"


async def submit(client: Any, **body: Any) -> dict[str, Any]:
    response = await client.post("/api/query", json={"query": QUESTION, "mode": "async", **body})
    assert response.status == 202
    accepted: dict[str, Any] = await response.json()
    return accepted


def kinds(events: list[SseEvent]) -> list[str]:
    return [e.event for e in events]


def assert_numbered_from(events: list[SseEvent], first: int) -> None:
    assert [e.id for e in events] == list(range(first, first + len(events)))


async def test_the_stream_follows_a_chain_to_its_terminal_event(api: Any, agents: Agents) -> None:
    """Workflow running, each step started and completed with timing, then workflow.completed."""
    await agents["data"].control(delay_ms=50)
    client = await api()
    accepted = await submit(client)
    assert accepted["links"]["events"] == f"/api/workflow/{accepted['workflow_id']}/events"

    response = await client.get(accepted["links"]["events"])
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    events = await read_events(response)

    assert_numbered_from(events, 1)
    assert events[0].event == "workflow.running"
    assert events[-1].event == "workflow.completed"
    assert events[-1].data["duration_ms"] > 0
    for step in ("nlp", "data", "viz"):
        mine = [e for e in events if e.data.get("step") == step]
        assert [e.event for e in mine] == ["step.started", "step.completed"], step
        assert mine[1].data["attempts"] == 1
        assert mine[1].data["duration_ms"] >= 0
        assert mine[1].data["agent"] == step
    data_done = next(e for e in events if e.event == "step.completed" and e.data["step"] == "data")
    assert data_done.data["duration_ms"] >= 50


async def test_retries_failures_and_fallbacks_are_events(api: Any, agents: Agents) -> None:
    """NLP down: retrying then fell_back; Viz down: retrying then failed; the end is degraded."""
    await agents["nlp"].control(fail_rate=1.0)
    await agents["viz"].control(fail_rate=1.0)
    client = await api()
    body = await (await client.post("/api/query", json={"query": QUESTION})).json()
    assert body["status"] == "degraded"

    events = await read_events(await client.get(f"/api/workflow/{body['workflow_id']}/events"))

    nlp = [e for e in events if e.data.get("step") == "nlp"]
    assert kinds(nlp) == ["step.started", "step.retrying", "step.fell_back"]
    assert nlp[1].data["attempt"] == 2
    assert nlp[1].data["error"]["type"] == "agent_http_error"
    assert "fallback" in nlp[2].data
    viz = [e for e in events if e.data.get("step") == "viz"]
    assert kinds(viz) == ["step.started", "step.retrying", "step.failed"]
    assert viz[2].data["error"]["type"] == "agent_http_error"
    assert viz[2].data["attempts"] == 2
    assert events[-1].event == "workflow.degraded"
    assert events[-1].data["fallbacks"][0]["step_id"] == "nlp"


async def test_a_late_subscriber_gets_everything_then_the_stream_ends(api: Any) -> None:
    """After the workflow finished, the stream replays the whole log and closes."""
    client = await api()
    body = await (await client.post("/api/query", json={"query": QUESTION})).json()
    first = await read_events(await client.get(f"/api/workflow/{body['workflow_id']}/events"))
    again = await read_events(await client.get(f"/api/workflow/{body['workflow_id']}/events"))
    assert first == again
    assert first[-1].event == "workflow.completed"


async def test_last_event_id_resumes_without_loss_or_duplicates(api: Any, agents: Agents) -> None:
    """Read three events, reconnect with Last-Event-ID: 3, get 4..end exactly once."""
    await agents["viz"].control(delay_ms=100)
    client = await api()
    accepted = await submit(client)
    url = accepted["links"]["events"]

    first = await client.get(url)
    head = await read_events(first, limit=3)
    first.close()  # the client drops the connection mid-workflow
    assert_numbered_from(head, 1)

    rest = await read_events(await client.get(url, headers={"Last-Event-ID": "3"}))
    assert_numbered_from(rest, 4)
    assert rest[-1].event == "workflow.completed"
    full = await read_events(await client.get(url))
    assert [*head, *rest] == full

    by_query = await read_events(await client.get(url + "?after=5"))
    assert by_query == full[5:]


async def test_bad_resume_points_and_unknown_workflows_are_json_errors(api: Any) -> None:
    """A non-numeric or negative Last-Event-ID is a 400; an unknown workflow a 404."""
    client = await api()
    body = await (await client.post("/api/query", json={"query": QUESTION})).json()
    url = f"/api/workflow/{body['workflow_id']}/events"
    for bad in ("abc", "-1", "1e3", "9" * 30):
        response = await client.get(url, headers={"Last-Event-ID": bad})
        assert response.status == 400, bad
        assert (await response.json())["error"]["code"] == "invalid_event_id"
    response = await client.get(f"/api/workflow/{uuid.uuid4().hex}/events")
    assert response.status == 404
    assert (await response.json())["error"]["code"] == "workflow_not_found"


async def test_a_stream_with_nothing_new_sends_keep_alives(
    api: Any, agents: Agents, data_gate: GatedAgent
) -> None:
    """An idle stream sends comments (proxies keep it open) and still ends at the terminal event."""
    client = await api(sse_keepalive_s=0.05, agents={**agents, "data": data_gate})
    accepted = await submit(client)
    await data_gate.arrived.wait()  # held at data: nothing new happens until it opens
    response = await client.get(accepted["links"]["events"])
    async with asyncio.timeout(30):  # a hang guard, not a timing claim
        while (line := await response.content.readline()) != b": keep-alive\n":
            assert line, "the stream ended without a keep-alive"
    data_gate.opened.set()
    raw = (await response.content.read()).decode()
    assert raw.rstrip().splitlines()[-3].startswith("id: ")
    assert "event: workflow.completed" in raw


@pytest.mark.redis
async def test_a_second_replica_streams_the_workflow_and_resumes(
    api: Any, agents: Agents, data_gate: GatedAgent, redis_url: str
) -> None:
    """Replica A runs it; B's stream (pub/sub on one Redis) follows it live and resumes by id."""
    prefix = f"test:{uuid.uuid4().hex[:8]}:"
    routed = {**agents, "data": data_gate}
    a = await api(
        store=RedisStateStore.from_url(redis_url, prefix=prefix), replica_id="a", agents=routed
    )
    b = await api(
        store=RedisStateStore.from_url(redis_url, prefix=prefix), replica_id="b", agents=routed
    )
    accepted = await submit(a)
    workflow_id = accepted["workflow_id"]
    # B joins while A is mid-workflow (held at data): the past is replayed, the rest
    # arrives live (the gate opens only once B's resumed stream is open).
    await data_gate.arrived.wait()
    on_b = await b.get(f"/api/workflow/{workflow_id}/events")
    head = await read_events(on_b, limit=2)
    on_b.close()
    resumed = await b.get(f"/api/workflow/{workflow_id}/events", headers={"Last-Event-ID": "2"})
    data_gate.opened.set()
    rest = await read_events(resumed)
    events = [*head, *rest]
    assert_numbered_from(events, 1)
    assert events[-1].event == "workflow.completed"
    assert [e.data.get("step") for e in events if e.event == "step.completed"] == [
        "nlp",
        "data",
        "viz",
    ]
    on_a = await read_events(await a.get(f"/api/workflow/{workflow_id}/events"))
    assert on_a == events


async def test_streams_per_replica_are_capped(api: Any, agents: Agents) -> None:
    """Past ORCH_SSE_MAX_STREAMS open streams, another gets 503 too_many_streams."""
    await agents["data"].control(delay_ms=60_000)  # runs until cancelled below
    client = await api(sse_max_streams=1)
    accepted = await submit(client)
    first = await client.get(accepted["links"]["events"])
    assert first.status == 200
    await read_events(first, limit=1)  # it is open and streaming
    second = await client.get(accepted["links"]["events"])
    assert second.status == 503
    assert (await second.json())["error"]["code"] == "too_many_streams"
    await client.post(accepted["links"]["cancel"])
    rest = await read_events(first)
    assert rest[-1].event == "workflow.cancelled"


async def test_a_client_that_has_the_end_gets_204(api: Any) -> None:
    """Reconnecting after the terminal event: 204, so an EventSource stops reconnecting."""
    client = await api()
    body = await (await client.post("/api/query", json={"query": QUESTION})).json()
    url = f"/api/workflow/{body['workflow_id']}/events"
    full = await read_events(await client.get(url))
    done = await client.get(url, headers={"Last-Event-ID": str(full[-1].id)})
    assert done.status == 204
    before_end = await read_events(await client.get(url, headers={"Last-Event-ID": "1"}))
    assert before_end == full[1:]


class LosingStore(MemoryStateStore):
    """Keeps documents but loses every event (as a store outage during the run would),
    those a terminal write carries too."""

    async def save(
        self,
        state: WorkflowState,
        *,
        token: int | None = None,
        events: Sequence[Mapping[str, Any]] = (),
    ) -> bool:
        return await super().save(state, token=token)

    async def append_event(self, workflow_id: str, event: Mapping[str, Any]) -> int:
        raise StateStoreError("lost", backend="memory", operation="append_event")

    async def append_events(self, workflow_id: str, events: Sequence[Mapping[str, Any]]) -> int:
        raise StateStoreError("lost", backend="memory", operation="append_events")


async def test_a_finished_workflow_without_events_ends_from_its_document(api: Any) -> None:
    """Events lost: the stream still ends, promptly (not after the 15 s keep-alive), with a
    terminal event built from the document (no id: nothing to resume from)."""
    client = await api(store=LosingStore())
    body = await (await client.post("/api/query", json={"query": QUESTION})).json()
    events = await read_events(
        await client.get(f"/api/workflow/{body['workflow_id']}/events"), timeout_s=5.0
    )
    assert [(e.id, e.event) for e in events] == [(None, "workflow.completed")]
    assert events[0].data["status"] == "completed"


class LateEndStore(MemoryStateStore):
    """Holds the terminal event's write until `release` is set (a slow last write). The
    events a terminal write carries land after it, once released (as when the run's last
    events follow an append still in flight at its end)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.late: set[asyncio.Task[int]] = set()

    async def save(
        self,
        state: WorkflowState,
        *,
        token: int | None = None,
        events: Sequence[Mapping[str, Any]] = (),
    ) -> bool:
        written = await super().save(state, token=token)
        if written and events:
            late = asyncio.create_task(self.append_events(state.workflow_id, events))
            self.late.add(late)
            late.add_done_callback(self.late.discard)
        return written

    @property
    def completes_in_turn(self) -> bool:
        return False  # its terminal append waits

    async def append_events(self, workflow_id: str, events: Sequence[Mapping[str, Any]]) -> int:
        if any(event.get("type") in TERMINAL_EVENTS for event in events):
            await self.release.wait()
        return await super().append_events(workflow_id, events)

    async def append_event(self, workflow_id: str, event: Mapping[str, Any]) -> int:
        if event.get("type") in TERMINAL_EVENTS:
            await self.release.wait()
        return await super().append_event(workflow_id, event)


async def test_a_terminal_event_written_after_the_document_still_ends_the_stream(
    api: Any,
) -> None:
    """The terminal document is written before the last events: a stream that sees the
    document finished keeps waiting (with keep-alives) for the real, numbered terminal
    event instead of ending at once with one built from the document."""
    store = LateEndStore()
    client = await api(store=store, sse_keepalive_s=0.05)
    body = await (await client.post("/api/query", json={"query": QUESTION})).json()
    assert body["status"] == "completed"
    response = await client.get(f"/api/workflow/{body['workflow_id']}/events")
    async with asyncio.timeout(10):
        while (await response.content.readline()) != b": keep-alive\n":
            pass  # the stream has seen the finished document and is waiting
    store.release.set()
    events = await read_events(response)
    assert events[-1].event == "workflow.completed"
    assert events[-1].id is not None
