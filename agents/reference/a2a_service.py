"""A reference agent served over A2A (Agent2Agent), JSON-RPC 2.0, v1.0 or v0.3.

Any reference agent (the Viz agent by default) answers A2A messages: the data
part of the message is the agent's `input`, the task's artifact holds its
`data`. Routes:

    GET  /.well-known/agent-card.json   the agent card (its JSON-RPC URL is "/")
    POST /                              JSON-RPC: v1.0 SendMessage, GetTask, CancelTask
                                        (header A2A-Version: 1.0 required); or v0.3
                                        message/send, tasks/get, tasks/cancel
    GET  /health, GET /stats            liveness; counters (below)
    POST /control                       {"delay_ms", "fail", "input_required"}

A message whose `messageId` was seen before gets the same task back (counted in
`duplicates`): a retried call never runs twice. A task runs in the background;
`returnImmediately` (v1.0) / `blocking: false` (v0.3) answers at once with the
task as it is (working while `delay_ms` lasts), otherwise the answer waits for
its end. `CancelTask` of a running task stops it (`canceled`, counted in
`cancels`). `fail` ends tasks `failed`, `input_required` ends them
`input-required`; input the agent cannot use ends them `rejected`.

Built with a2a-sdk's types: the card and the tasks are its protobuf (v1.0) or
pydantic (v0.3) models, serialised; data parts are inserted as JSON so that
integers stay integers.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Final

import orjson
import structlog
from a2a.compat.v0_3 import types as v03
from a2a.types import a2a_pb2 as v10
from a2a.utils.constants import AGENT_CARD_WELL_KNOWN_PATH, VERSION_HEADER
from aiohttp import web
from google.protobuf import json_format

from agents.reference.a2a_versions import VERSIONS, Version
from agents.reference.contract import Agent, AgentInputError
from agents.reference.service import MAX_BODY_BYTES, AgentKind, make_agent

log = structlog.get_logger(__name__)

# JSON-RPC error codes (JSON-RPC 2.0 and the A2A specification).
_PARSE_ERROR, _INVALID_REQUEST, _METHOD_NOT_FOUND, _INVALID_PARAMS = -32700, -32600, -32601, -32602
_TASK_NOT_FOUND, _TASK_NOT_CANCELABLE, _VERSION_NOT_SUPPORTED = -32001, -32002, -32009

_TERMINAL = frozenset({"completed", "failed", "canceled", "rejected", "input-required"})


@dataclass
class A2AStats:
    requests: int = 0
    sends: int = 0
    gets: int = 0
    cancels: int = 0
    duplicates: int = 0
    tasks: int = 0
    # The W3C traceparent of the last requests that carried one (newest last, at most 32).
    traceparents: list[str] = field(default_factory=list)


@dataclass
class A2AFaults:
    delay_ms: float = 0.0
    fail: bool = False
    input_required: bool = False


@dataclass
class _Task:
    """One task, in v0.3 spelling (`input-required`); converted per version on the way out."""

    id: str
    context_id: str
    state: str = "working"
    data: dict[str, Any] | None = None
    text: str = ""
    done: asyncio.Event = field(default_factory=asyncio.Event)
    runner: asyncio.Task[None] | None = None


class _RpcError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class A2AService:
    def __init__(self, agent: Agent, *, version: Version, faults: A2AFaults) -> None:
        self.agent = agent
        self.version = version
        self.faults = faults
        self.stats = A2AStats()
        self.tasks: dict[str, _Task] = {}
        self.by_message: dict[str, str] = {}
        # Set by the first GetTask: a client is polling a task (tests await it).
        self.polled = asyncio.Event()

    # -- the card ---------------------------------------------------------------------

    def card(self, base_url: str) -> dict[str, Any]:
        name = f"reference {self.agent.name} agent"
        description = f"The {self.agent.name} reference agent over A2A: send a data part."
        if self.version == "1.0":
            card = v10.AgentCard(
                name=name,
                description=description,
                version="1.0.0",
                supported_interfaces=[
                    v10.AgentInterface(
                        url=base_url, protocol_binding="JSONRPC", protocol_version="1.0"
                    )
                ],
                capabilities=v10.AgentCapabilities(streaming=False),
                default_input_modes=["application/json"],
                default_output_modes=["application/json"],
                skills=[
                    v10.AgentSkill(
                        id=self.agent.name,
                        name=self.agent.name,
                        description=description,
                        tags=["reference"],
                    )
                ],
            )
            return json_format.MessageToDict(card)
        old = v03.AgentCard(
            name=name,
            description=description,
            url=base_url,
            version="1.0.0",
            protocol_version="0.3.0",
            capabilities=v03.AgentCapabilities(streaming=False),
            default_input_modes=["application/json"],
            default_output_modes=["application/json"],
            skills=[
                v03.AgentSkill(
                    id=self.agent.name,
                    name=self.agent.name,
                    description=description,
                    tags=["reference"],
                )
            ],
        )
        return old.model_dump(mode="json", by_alias=True, exclude_none=True)

    # -- JSON-RPC ---------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.Response:
        self.stats.requests += 1
        traceparent = request.headers.get("traceparent")
        if traceparent is not None:
            self.stats.traceparents = [*self.stats.traceparents[-31:], traceparent]
        request_id: Any = None
        try:
            try:
                document = orjson.loads(await request.read())
            except orjson.JSONDecodeError as exc:
                raise _RpcError(_PARSE_ERROR, f"not JSON: {exc}") from None
            if not isinstance(document, dict) or document.get("jsonrpc") != "2.0":
                raise _RpcError(_INVALID_REQUEST, "not a JSON-RPC 2.0 request")
            request_id = document.get("id")
            params = document.get("params")
            if not isinstance(params, dict):
                raise _RpcError(_INVALID_PARAMS, "params must be an object")
            if self.version == "1.0" and request.headers.get(VERSION_HEADER) != "1.0":
                raise _RpcError(_VERSION_NOT_SUPPORTED, f"send {VERSION_HEADER}: 1.0")
            result = await self._dispatch(str(document.get("method")), params)
        except _RpcError as exc:
            body = {
                "jsonrpc": "2.0",
                "id": request_id,
                "error": {"code": exc.code, "message": str(exc)},
            }
            return _json(body)
        return _json({"jsonrpc": "2.0", "id": request_id, "result": result})

    async def _dispatch(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        names = {
            "1.0": {"SendMessage": "send", "GetTask": "get", "CancelTask": "cancel"},
            "0.3": {"message/send": "send", "tasks/get": "get", "tasks/cancel": "cancel"},
        }[self.version]
        action = names.get(method)
        if action == "send":
            return await self._send(params)
        if action == "get":
            self.stats.gets += 1
            self.polled.set()
            return self._task_json(self._task(params), wrap=False)
        if action == "cancel":
            return await self._cancel(params)
        raise _RpcError(_METHOD_NOT_FOUND, f"unknown method {method!r}")

    async def _send(self, params: dict[str, Any]) -> dict[str, Any]:
        self.stats.sends += 1
        message = params.get("message")
        message_id, data, immediate = self._read_send(params, message)
        known = self.by_message.get(message_id)
        if known is not None:
            self.stats.duplicates += 1
            task = self.tasks[known]
        else:
            task = _Task(id=uuid.uuid4().hex, context_id=uuid.uuid4().hex)
            self.tasks[task.id] = task
            self.by_message[message_id] = task.id
            self.stats.tasks += 1
            task.runner = asyncio.create_task(self._run(task, data))
        if not immediate:
            await task.done.wait()
        return self._task_json(task, wrap=True)

    def _read_send(self, params: dict[str, Any], message: Any) -> tuple[str, Any, bool]:
        try:
            if self.version == "1.0":
                parsed = json_format.ParseDict(params, v10.SendMessageRequest())
                message_id = parsed.message.message_id
                immediate = parsed.configuration.return_immediately
            else:
                old = v03.MessageSendParams.model_validate(params)
                message_id = old.message.message_id
                immediate = old.configuration is not None and old.configuration.blocking is False
        except Exception as exc:  # protobuf ParseError or pydantic ValidationError
            raise _RpcError(_INVALID_PARAMS, f"not a {self.version} SendMessage: {exc}") from None
        parts = message.get("parts") if isinstance(message, dict) else None
        data = next((p["data"] for p in parts or [] if isinstance(p, dict) and "data" in p), None)
        if not message_id:
            raise _RpcError(_INVALID_PARAMS, "message.messageId is required")
        return message_id, data, immediate

    def _task(self, params: dict[str, Any]) -> _Task:
        task = self.tasks.get(str(params.get("id")))
        if task is None:
            raise _RpcError(_TASK_NOT_FOUND, f"no task {params.get('id')!r}")
        return task

    async def _cancel(self, params: dict[str, Any]) -> dict[str, Any]:
        task = self._task(params)
        if task.state in _TERMINAL:
            raise _RpcError(_TASK_NOT_CANCELABLE, f"task {task.id} is {task.state}")
        self.stats.cancels += 1
        if task.runner is not None:
            task.runner.cancel()
        self._end(task, "canceled", text="canceled by the client")
        log.info("a2a_task_canceled", task_id=task.id)
        return self._task_json(task, wrap=False)

    async def _run(self, task: _Task, data: Any) -> None:
        try:
            if self.faults.delay_ms > 0:
                await asyncio.sleep(self.faults.delay_ms / 1000)
            if self.faults.fail:
                self._end(task, "failed", text="injected failure")
            elif self.faults.input_required:
                self._end(task, "input-required", text="which chart type do you want?")
            elif not isinstance(data, dict):
                self._end(task, "rejected", text="send the input as one data part (an object)")
            else:
                try:
                    output = await self.agent.process(data)
                except AgentInputError as exc:
                    self._end(task, "rejected", text=exc.message)
                else:
                    self._end(task, "completed", data=output)
        except asyncio.CancelledError:
            pass  # CancelTask ended it

    def _end(self, task: _Task, state: str, *, data: Any = None, text: str = "") -> None:
        if task.state in _TERMINAL:
            return
        task.state, task.data, task.text = state, data, text
        task.done.set()

    # -- a task on the wire -------------------------------------------------------------

    def _task_json(self, task: _Task, *, wrap: bool) -> dict[str, Any]:
        if self.version == "1.0":
            state = "TASK_STATE_" + task.state.upper().replace("-", "_")
            body = json_format.MessageToDict(
                v10.Task(id=task.id, context_id=task.context_id, status=v10.TaskStatus(state=state))
            )
            body["status"] = {**body.get("status", {}), **self._status_message(task, "1.0")}
            if task.data is not None:
                body["artifacts"] = [{"artifactId": "result", "parts": [{"data": task.data}]}]
            return {"task": body} if wrap else body
        body = v03.Task(
            id=task.id,
            context_id=task.context_id,
            status=v03.TaskStatus(state=v03.TaskState(task.state)),
        ).model_dump(mode="json", by_alias=True, exclude_none=True)
        body["status"].update(self._status_message(task, "0.3"))
        if task.data is not None:
            body["artifacts"] = [
                {"artifactId": "result", "parts": [{"kind": "data", "data": task.data}]}
            ]
        return body

    def _status_message(self, task: _Task, version: Version) -> dict[str, Any]:
        if not task.text:
            return {}
        if version == "1.0":
            role, part = "ROLE_AGENT", {"text": task.text}
        else:
            role, part = "agent", {"kind": "text", "text": task.text}
        message = {"messageId": uuid.uuid4().hex, "role": role, "parts": [part]}
        if version == "0.3":
            message["kind"] = "message"
        return {"message": message}


def _json(body: dict[str, Any]) -> web.Response:
    return web.Response(body=orjson.dumps(body), content_type="application/json")


A2A_SERVICE: Final = web.AppKey("a2a_service", A2AService)


def create_a2a_app(
    kind: AgentKind = "viz", *, version: Version = "1.0", delay_ms: float = 0
) -> web.Application:
    """The aiohttp application of a reference agent spoken to over A2A."""
    if version not in VERSIONS:
        raise ValueError(f"unknown A2A version {version!r}; known: {', '.join(VERSIONS)}")
    service = A2AService(make_agent(kind, None), version=version, faults=A2AFaults(delay_ms))
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[A2A_SERVICE] = service

    async def card(request: web.Request) -> web.Response:
        return _json(service.card(f"{request.scheme}://{request.host}/"))

    async def health(request: web.Request) -> web.Response:
        return _json({"status": "ok", "agent": service.agent.name})

    async def stats(request: web.Request) -> web.Response:
        return _json(asdict(service.stats))

    async def control(request: web.Request) -> web.Response:
        changes = orjson.loads(await request.read())
        for key in ("delay_ms", "fail", "input_required"):
            if key in changes:
                setattr(service.faults, key, type(getattr(service.faults, key))(changes[key]))
        return _json({"status": "ok", **asdict(service.faults)})

    app.router.add_get(AGENT_CARD_WELL_KNOWN_PATH, card)
    app.router.add_post("/", service.handle)
    app.router.add_get("/health", health)
    app.router.add_get("/stats", stats)
    app.router.add_post("/control", control)

    async def stop_tasks(app: web.Application) -> None:
        for task in service.tasks.values():
            if task.runner is not None:
                task.runner.cancel()

    app.on_shutdown.append(stop_tasks)
    return app


async def start_a2a_agent(
    kind: AgentKind = "viz",
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    version: Version = "1.0",
    delay_ms: float = 0,
) -> tuple[web.AppRunner, int]:
    """Serve one A2A agent in the running loop; returns the runner and the bound port."""
    runner = web.AppRunner(
        create_a2a_app(kind, version=version, delay_ms=delay_ms), access_log=None
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner, int(runner.addresses[0][1])
