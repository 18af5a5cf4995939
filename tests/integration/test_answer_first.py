"""A sync answer goes out before its workflow's housekeeping (the last events), on a
store whose operations suspend: their commands would otherwise be sent first."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from aiohttp import web

from orchestrator.app import create_app
from state.memory import MemoryStateStore
from tests.integration.conftest import Agents, ClientFactory, settings_for


class NotingStore(MemoryStateStore):
    """The memory store taking the lifecycle's general path (as a network store does),
    noting at each workflow's last event append whether its answer was prepared."""

    def __init__(self, prepared: set[str]) -> None:
        super().__init__()
        self.prepared = prepared
        self.answered_first: dict[str, bool] = {}
        self.ended = asyncio.Event()

    @property
    def completes_in_turn(self) -> bool:
        return False

    async def append_events(self, workflow_id: str, events: Sequence[Mapping[str, Any]]) -> int:
        if any(event["type"] == "workflow.completed" for event in events):
            self.answered_first[workflow_id] = workflow_id in self.prepared
            self.ended.set()
        return await super().append_events(workflow_id, events)


async def test_a_sync_answer_is_prepared_before_its_workflows_last_events_are_appended(
    agents: Agents, aiohttp_client: ClientFactory
) -> None:
    prepared: set[str] = set()
    store = NotingStore(prepared)
    app = create_app(settings_for(agents), store=store)

    async def note(request: web.Request, response: web.StreamResponse) -> None:
        if isinstance(response, web.Response) and request.path == "/api/query":
            prepared.add(orjson.loads(response.body)["workflow_id"])  # type: ignore[arg-type]

    app.on_response_prepare.append(note)
    try:
        client = await aiohttp_client(app)
        response = await client.post("/api/query", json={"query": "revenue by region"})
        assert response.status == 200
        workflow_id = (await response.json())["workflow_id"]
        async with asyncio.timeout(30):  # a hang guard, not a timing claim
            await store.ended.wait()
        assert store.answered_first == {workflow_id: True}
    finally:
        await store.close()
