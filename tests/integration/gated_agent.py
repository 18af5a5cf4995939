"""A real agent on 127.0.0.1 whose answers wait for the test: one gate per node id.

POST /process answers `{"status": "success", "data": {"step": node_id, "input": ...}}`
(node_id: the request's `step_id`) once `gate(node_id)` is set; `requests[node_id]` counts
the calls, `in_flight` the ones waiting.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web


class GatedAgent:
    def __init__(self) -> None:
        self.gates: dict[str, asyncio.Event] = {}
        self.requests: Counter[str] = Counter()
        self.in_flight: Counter[str] = Counter()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def gate(self, node_id: str) -> asyncio.Event:
        return self.gates.setdefault(node_id, asyncio.Event())

    async def process(self, request: web.Request) -> web.Response:
        body = await request.json()
        node = str(body["step_id"])
        self.requests[node] += 1
        self.in_flight[node] += 1
        try:
            await self.gate(node).wait()
        finally:
            self.in_flight[node] -= 1
        return web.json_response(
            {"status": "success", "data": {"step": node, "input": body["input"]}}
        )

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})


@asynccontextmanager
async def gated_agent() -> AsyncIterator[GatedAgent]:
    agent = GatedAgent()
    app = web.Application()
    app.router.add_post("/process", agent.process)
    app.router.add_get("/health", agent.health)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    agent.port = runner.addresses[0][1]
    try:
        yield agent
    finally:
        for gate in agent.gates.values():
            gate.set()
        await runner.cleanup()
