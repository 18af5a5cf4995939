"""A live service in a background thread: reference agents and the API on 127.0.0.1 ports
the OS picks, for clients that are not asyncio (schemathesis, Chromium)."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from aiohttp import web

from agents.reference import start_agent
from agents.registry import AgentRegistry
from orchestrator.app import create_app
from orchestrator.settings import Settings, default_registry
from tests.integration.conftest import FAST_RETRY


@contextmanager
def live_service(**settings: Any) -> Iterator[str]:
    """Run until the block ends; yields the API's base URL."""
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def serve() -> None:
        stop = asyncio.Event()
        box["stop"] = stop
        box["loop"] = asyncio.get_running_loop()
        runners: list[web.AppRunner] = []
        try:
            specs = []
            for spec in default_registry().values():
                runner, port = await start_agent(spec.name, host="127.0.0.1", port=0)  # type: ignore[arg-type]
                runners.append(runner)
                specs.append(
                    dataclasses.replace(spec, url=f"http://127.0.0.1:{port}", retry=FAST_RETRY)
                )
            app = create_app(Settings(agents=AgentRegistry(specs), **settings))
            runner = web.AppRunner(app, handler_cancellation=True)
            await runner.setup()
            runners.append(runner)
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            box["url"] = f"http://127.0.0.1:{runner.addresses[0][1]}"
        except BaseException as exc:
            box["error"] = exc
            raise
        finally:
            ready.set()
        try:
            await stop.wait()
        finally:
            for r in reversed(runners):
                await r.cleanup()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    if not ready.wait(timeout=30) or "error" in box:
        raise RuntimeError(f"the live service did not start: {box.get('error')!r}")
    try:
        yield str(box["url"])
    finally:
        box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(timeout=30)
