"""`GET /api/workflow/{id}/events`: a workflow's progress as Server-Sent Events.

Each event is sent as `id: <seq>`, `event: <type>` (`workflow.running`,
`step.started`, `step.retrying`, ... `workflow.<terminal status>`), `data: <JSON>`.
The stream first replays what already happened (everything after `Last-Event-ID`,
or after `?after=N`; from the start otherwise), then follows the workflow live
from whichever replica runs it (the store's pub/sub), and ends after the terminal
event. Sequence numbers come from the store, so a client that reconnects with
`Last-Event-ID` gets every later event exactly once; one whose last event was the
terminal one gets 204, which tells a browser's EventSource to stop reconnecting.

An idle stream sends a comment every `ORCH_SSE_KEEPALIVE_S`; at that moment it
also checks the document, so a workflow that finished without its terminal event
(the event write failed) still ends the stream, with an event built from the
document (no `id`). The terminal document is written before the last events, so
a document seen finished first gets a grace second for its terminal event before
the stream ends from the document; for a workflow already finished when the
stream opens, that check comes after the grace second, not a whole keep-alive
period. A stream whose subscription is lost ends; the client's reconnect resumes it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiohttp import web

from orchestrator.api.errors import ApiError, BadRequest
from orchestrator.api.middleware import REQUEST_ID_HEADER, request_id
from orchestrator.api.routes import visible_state
from orchestrator.api.services import SERVICES
from orchestrator.errors import RETRY_AFTER_S
from orchestrator.events import is_terminal, workflow_event
from state.events import EventStream, StoredEvent
from state.store import StateStore

routes = web.RouteTableDef()


class TooManyStreams(ApiError):
    """This replica already serves ORCH_SSE_MAX_STREAMS event streams."""

    status, code = 503, "too_many_streams"
    retry_after_s = RETRY_AFTER_S

# Reconnect delay the browser's EventSource should use (ms).
_RETRY_MS = 1000
# A finished workflow's stream waits this long for a terminal event still being written.
_TERMINAL_GRACE_S = 1.0
_MAX_EVENT_ID = 2**53


class _Stream:
    """One open SSE response and the last sequence number it sent."""

    def __init__(self, response: web.StreamResponse, last: int) -> None:
        self.response = response
        self.last = last
        self.finished = False

    async def send(self, seq: int | None, event: dict[str, Any]) -> None:
        head = f"id: {seq}\n" if seq is not None else ""
        kind = str(event.get("type", "message")).replace("\n", " ")
        payload = f"{head}event: {kind}\ndata: ".encode() + orjson.dumps(event) + b"\n\n"
        await self.response.write(payload)
        if seq is not None:
            self.last = seq
        if is_terminal(event):
            self.finished = True

    async def send_all(self, events: list[StoredEvent]) -> None:
        for seq, event in events:
            if seq > self.last and not self.finished:
                await self.send(seq, event)


@routes.get("/api/workflow/{workflow_id}/events")
async def workflow_events(request: web.Request) -> web.StreamResponse:
    services = request.app[SERVICES]
    store = services.orchestrator.store
    workflow_id = request.match_info["workflow_id"]
    after = _resume_point(request)
    state = await visible_state(request)  # 404 when unknown, expired or another tenant's
    if state.status.is_terminal and after > 0 and await _had_the_end(store, workflow_id, after):
        # The client already has the terminal event: 204 tells an EventSource to stop
        # reconnecting (the SSE specification), instead of replaying the end forever.
        return web.Response(status=204, headers={REQUEST_ID_HEADER: request_id(request)})
    streams = request.app[OPEN_STREAMS]
    limit = services.settings.sse_max_streams
    if len(streams) >= limit:
        # Each stream holds a subscription (for Redis, a connection): bounded per replica.
        raise TooManyStreams(
            f"this replica already serves {limit} event streams; retry shortly",
            details={"limit": limit},
        )
    # Subscribe before reading the log: nothing can fall between the two.
    subscription = await store.subscribe_events(workflow_id)
    streams.add(subscription)
    try:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",  # proxies must not buffer a live stream
                REQUEST_ID_HEADER: request_id(request),
            }
        )
        await response.prepare(request)
        stream = _Stream(response, after)
        try:
            await response.write(f"retry: {_RETRY_MS}\n\n".encode())
            await stream.send_all(await store.events_since(workflow_id, after))
            if not stream.finished:
                keepalive_s = services.settings.sse_keepalive_s
                # Already finished: its terminal event is being written or was lost.
                loop = asyncio.get_running_loop()
                grace_until = loop.time() + _TERMINAL_GRACE_S if state.status.is_terminal else None
                await _follow(stream, subscription, store, workflow_id, keepalive_s, grace_until)
        except ConnectionResetError:
            pass  # the client went away
        return response
    finally:
        streams.discard(subscription)
        await subscription.aclose()


async def _follow(
    stream: _Stream,
    subscription: EventStream,
    store: StateStore,
    workflow_id: str,
    keepalive_s: float,
    grace_until: float | None,
) -> None:
    """Send live events until the terminal one; keep-alives and a document check when idle.

    `grace_until` (loop time) is set once the document was seen finished: until then a
    missing terminal event is presumed still being written, after it the stream ends
    from the document.
    """
    loop = asyncio.get_running_loop()
    while not stream.finished:
        wait_s = keepalive_s
        if grace_until is not None:
            wait_s = max(0.0, min(keepalive_s, grace_until - loop.time()))
        try:
            async with asyncio.timeout(wait_s):
                seq, event = await anext(subscription)
        except TimeoutError:
            finished = await _idle(stream, store, workflow_id, grace_until)
            if finished and grace_until is None:
                grace_until = loop.time() + _TERMINAL_GRACE_S
            continue
        except StopAsyncIteration:
            return  # store closing or subscription lost: the client reconnects and resumes
        if seq <= stream.last:
            continue  # already sent from the log
        if seq > stream.last + 1:
            # Published while we were reading the log: fill the gap from the log, in order.
            await stream.send_all(await store.events_since(workflow_id, stream.last))
            if seq <= stream.last:
                continue
        await stream.send(seq, event)


async def _had_the_end(store: StateStore, workflow_id: str, after: int) -> bool:
    """Whether event `after` (the client's last) is the workflow's terminal event."""
    logged = await store.events_since(workflow_id, after - 1)
    return bool(logged) and logged[0][0] == after and is_terminal(logged[0][1])


async def _idle(
    stream: _Stream, store: StateStore, workflow_id: str, grace_until: float | None
) -> bool:
    """Catch up from the log, then end from the document or send a keep-alive.

    Returns whether the document says the workflow finished (its terminal event not
    yet logged); the stream ends from the document only once the grace has passed.
    """
    await stream.send_all(await store.events_since(workflow_id, stream.last))
    if stream.finished:
        return True
    state = await store.get(workflow_id)
    if state is None:
        stream.finished = True  # expired: nothing more will come
        return True
    if state.status.is_terminal:
        if grace_until is not None and asyncio.get_running_loop().time() >= grace_until:
            # Finished and no terminal event came: end with what we know.
            await stream.send(None, workflow_event(state, state.updated_at))
            stream.finished = True
            return True
        await stream.response.write(b": keep-alive\n\n")
        return True
    await stream.response.write(b": keep-alive\n\n")
    return False


def _resume_point(request: web.Request) -> int:
    raw = request.headers.get("Last-Event-ID")
    source = "Last-Event-ID"
    if raw is None:
        raw = request.query.get("after")
        source = "after"
    if raw is None or raw == "":
        return 0
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if not 0 <= value < _MAX_EVENT_ID:
        raise BadRequest(
            f"{source} must be a non-negative event number, got {raw[:40]!r}",
            code="invalid_event_id",
            details={"field": source},
        )
    return value


class OpenStreams(set[EventStream]):
    """The app's open event subscriptions, closed on shutdown."""


OPEN_STREAMS: web.AppKey[OpenStreams] = web.AppKey("open_event_streams", OpenStreams)


async def close_open_streams(app: web.Application) -> None:
    """on_shutdown: end every event stream so the server does not wait on them."""
    streams: OpenStreams = app[OPEN_STREAMS]
    for subscription in [*streams]:
        await subscription.aclose()
