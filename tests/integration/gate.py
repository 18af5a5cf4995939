"""A real HTTP agent on 127.0.0.1 that holds each /process call until the test opens it.

It forwards to a reference agent once open, so the answers are real; the test
decides *when* a step finishes (e.g. only after Redis went down), with events
rather than delays.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
from aiohttp import web


class GatedAgent:
    def __init__(self, target_url: str) -> None:
        self.target_url = target_url
        self.opened = asyncio.Event()
        self.arrived = asyncio.Event()
        self.requests = 0
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _process(self, request: web.Request) -> web.Response:
        self.requests += 1
        body = await request.read()
        self.arrived.set()
        await self.opened.wait()
        async with httpx.AsyncClient() as client:
            answer = await client.post(
                f"{self.target_url}/process",
                content=body,
                headers={"Content-Type": "application/json"},
            )
        return web.Response(status=answer.status_code, body=answer.content,
                            content_type="application/json")

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/process", self._process)
        app.router.add_get("/health", self._health)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def close(self) -> None:
        self.opened.set()
        if self._runner is not None:
            await self._runner.cleanup()


async def gated(target_url: str) -> AsyncIterator[GatedAgent]:
    agent = GatedAgent(target_url)
    await agent.start()
    try:
        yield agent
    finally:
        await agent.close()
