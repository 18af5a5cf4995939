"""A small Server-Sent Events reader for the tests (the browser's EventSource rules)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import ClientResponse

EVENT_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class SseEvent:
    id: int | None
    event: str
    data: dict[str, Any]


async def read_events(
    response: ClientResponse, *, limit: int | None = None, timeout_s: float = EVENT_TIMEOUT_S
) -> list[SseEvent]:
    """Events until the stream ends (or `limit` of them); comments and `retry:` skipped."""
    events: list[SseEvent] = []
    fields: dict[str, str] = {}
    async with asyncio.timeout(timeout_s):
        while limit is None or len(events) < limit:
            raw = await response.content.readline()
            if not raw:
                break
            line = raw.decode().rstrip("\n")
            if line == "":
                if "data" in fields:
                    seq = fields.get("id")
                    events.append(
                        SseEvent(
                            id=int(seq) if seq else None,
                            event=fields.get("event", "message"),
                            data=orjson.loads(fields["data"]),
                        )
                    )
                fields = {}
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
    return events
