"""The Agent2Agent (A2A) protocol as our client speaks it: JSON-RPC 2.0 over HTTP.

Two wire versions, chosen by the agent's card (`/.well-known/agent-card.json`):

- **v1.0** (the card lists `supportedInterfaces` with `protocolVersion` "1.0" and
  binding "JSONRPC"): methods `SendMessage`, `GetTask`, `CancelTask`, header
  `A2A-Version: 1.0`, task states `TASK_STATE_COMPLETED`…, parts `{"data": ...}`.
- **v0.3** (the card's `protocolVersion` is "0.3.x"): methods `message/send`,
  `tasks/get`, `tasks/cancel`, lowercase states (`input-required`), parts
  `{"kind": "data", "data": ...}`.

The node's input travels as one data part of a user message whose `messageId`
is the caller's idempotency key, the same on every retry, so the agent can
de-duplicate. We ask for the task back at once (v1.0 `returnImmediately`, v0.3
`blocking: false`) so a task still working can be polled (`GetTask`) and
cancelled (`CancelTask`) by id.

a2a-sdk's types check the shape of what we send and what comes back (its
protobuf messages for v1.0, its pydantic models for v0.3); the data itself is
read from the JSON as sent, because protobuf's `Struct` would turn every integer
into a float. Nothing here does I/O: `AgentClient` sends, this module builds and
reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

import orjson
from a2a.compat.v0_3 import types as v03
from a2a.types import a2a_pb2 as v10
from a2a.utils.constants import AGENT_CARD_WELL_KNOWN_PATH, VERSION_HEADER
from google.protobuf import json_format
from pydantic import ValidationError

__all__ = [
    "AGENT_CARD_WELL_KNOWN_PATH",
    "A2AProtocolError",
    "A2AVersion",
    "Peer",
    "RpcError",
    "TaskResult",
    "TaskState",
    "peer_from_card",
]


class A2AVersion(StrEnum):
    V1_0 = "1.0"
    V0_3 = "0.3"


class TaskState(StrEnum):
    """Task states of both versions, one spelling."""

    SUBMITTED = "submitted"
    WORKING = "working"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"
    REJECTED = "rejected"
    INPUT_REQUIRED = "input_required"
    AUTH_REQUIRED = "auth_required"
    UNKNOWN = "unknown"

    @property
    def in_progress(self) -> bool:
        return self in (TaskState.SUBMITTED, TaskState.WORKING)


class A2AProtocolError(ValueError):
    """A card or an answer that is not A2A as we speak it (the agent broke the contract)."""


@dataclass(frozen=True, slots=True)
class RpcError:
    """A JSON-RPC error object the agent answered with."""

    code: int
    message: str

    @property
    def internal(self) -> bool:
        # -32603 internal error; -32000..-32099 is reserved for implementation-defined
        # server errors, which A2A uses for its own (task not found, unsupported…).
        return self.code == -32603


@dataclass(frozen=True, slots=True)
class TaskResult:
    """What a SendMessage/GetTask/CancelTask answered: a task (with an id) or a message."""

    state: TaskState
    task_id: str | None
    data: dict[str, Any] | None
    text: str


@dataclass(frozen=True, slots=True)
class Peer:
    """An A2A agent as its card describes it."""

    rpc_url: str
    version: A2AVersion
    name: str
    description: str
    agent_version: str
    skills: tuple[str, ...]

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "version": self.agent_version,
            "protocol_version": self.version.value,
            "rpc_url": self.rpc_url,
            "skills": list(self.skills),
        }

    # -- requests -----------------------------------------------------------------------

    def headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json"}
        if self.version is A2AVersion.V1_0:
            headers[VERSION_HEADER] = A2AVersion.V1_0.value
        return headers

    def send_message(self, message_id: str, data: dict[str, Any]) -> bytes:
        """JSON-RPC request: the node's input as one data part; `message_id` de-duplicates."""
        if self.version is A2AVersion.V1_0:
            params = json_format.MessageToDict(
                v10.SendMessageRequest(
                    message=v10.Message(message_id=message_id, role=v10.ROLE_USER),
                    configuration=v10.SendMessageConfiguration(return_immediately=True),
                )
            )
            params["message"]["parts"] = [{"data": data}]
            return _rpc(message_id, "SendMessage", params)
        params = v03.MessageSendParams(
            message=v03.Message(
                message_id=message_id,
                role=v03.Role.user,
                parts=[v03.Part(root=v03.DataPart(data={}))],
            ),
            configuration=v03.MessageSendConfiguration(blocking=False, accepted_output_modes=[]),
        ).model_dump(mode="json", by_alias=True, exclude_none=True)
        params["message"]["parts"][0]["data"] = data
        return _rpc(message_id, "message/send", params)

    def get_task(self, task_id: str) -> bytes:
        if self.version is A2AVersion.V1_0:
            return _rpc(
                task_id, "GetTask", json_format.MessageToDict(v10.GetTaskRequest(id=task_id))
            )
        return _rpc(task_id, "tasks/get", v03.TaskQueryParams(id=task_id).model_dump(mode="json"))

    def cancel_task(self, task_id: str) -> bytes:
        if self.version is A2AVersion.V1_0:
            params = json_format.MessageToDict(v10.CancelTaskRequest(id=task_id))
            return _rpc(task_id, "CancelTask", params)
        return _rpc(task_id, "tasks/cancel", v03.TaskIdParams(id=task_id).model_dump(mode="json"))

    # -- answers ------------------------------------------------------------------------

    def read(self, body: bytes) -> TaskResult | RpcError:
        """A JSON-RPC answer: its task or message, or the error object it carries."""
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise A2AProtocolError("the answer is not JSON") from exc
        if not isinstance(document, dict) or document.get("jsonrpc") != "2.0":
            raise A2AProtocolError("the answer is not a JSON-RPC 2.0 response")
        error = document.get("error")
        if isinstance(error, dict):
            return RpcError(code=int(error.get("code", 0)), message=str(error.get("message", "")))
        result = document.get("result")
        if not isinstance(result, dict):
            raise A2AProtocolError("the answer has neither `result` nor `error`")
        if self.version is A2AVersion.V1_0:
            return _read_v10(result)
        return _read_v03(result)


def peer_from_card(base_url: str, card: Any) -> Peer:
    """The peer a card describes: its JSON-RPC URL and wire version (v1.0 preferred)."""
    if not isinstance(card, dict):
        raise A2AProtocolError("the agent card is not a JSON object")
    interfaces = card.get("supportedInterfaces")
    if isinstance(interfaces, list):
        try:
            parsed = json_format.ParseDict(card, v10.AgentCard(), ignore_unknown_fields=True)
        except json_format.ParseError as exc:
            raise A2AProtocolError(f"the agent card is not a v1.0 card: {exc}") from exc
        for interface in parsed.supported_interfaces:
            if interface.protocol_binding.upper() == "JSONRPC" and (
                interface.protocol_version.startswith("1.")
            ):
                return _peer(
                    base_url,
                    interface.url or base_url,
                    A2AVersion.V1_0,
                    parsed.name,
                    parsed.description,
                    parsed.version,
                    tuple(s.id or s.name for s in parsed.skills),
                )
        for interface in parsed.supported_interfaces:
            if interface.protocol_binding.upper() == "JSONRPC" and (
                interface.protocol_version.startswith("0.3")
            ):
                return _peer(
                    base_url,
                    interface.url or base_url,
                    A2AVersion.V0_3,
                    parsed.name,
                    parsed.description,
                    parsed.version,
                    tuple(s.id or s.name for s in parsed.skills),
                )
        raise A2AProtocolError("the agent card offers no JSON-RPC interface of version 1.0 or 0.3")
    version = str(card.get("protocolVersion", ""))
    if not version.startswith("0.3"):
        raise A2AProtocolError(f"unsupported A2A protocol version {version!r}")
    try:
        old = v03.AgentCard.model_validate(card)
    except ValidationError as exc:
        raise A2AProtocolError(f"the agent card is not a v0.3 card: {exc}") from exc
    transport = (old.preferred_transport or "JSONRPC").upper()
    if transport != "JSONRPC":
        raise A2AProtocolError(f"the agent prefers transport {transport!r}; we speak JSONRPC")
    return _peer(
        base_url,
        old.url or base_url,
        A2AVersion.V0_3,
        old.name,
        old.description,
        old.version,
        tuple(s.id for s in old.skills),
    )


def _peer(
    base_url: str,
    url: str,
    version: A2AVersion,
    name: str,
    description: str,
    agent_version: str,
    skills: tuple[str, ...],
) -> Peer:
    # The registry's URLs are the only ones the service calls: a card may name a path
    # on its agent's origin, never another host (that would send our calls anywhere).
    # The URLs themselves stay out of the messages: errors reach workflow documents.
    if not url.startswith(("http://", "https://")):
        raise A2AProtocolError("the agent card's URL is not http(s)")
    theirs, ours = urlsplit(url), urlsplit(base_url)
    if (theirs.scheme, theirs.netloc.lower()) != (ours.scheme, ours.netloc.lower()):
        raise A2AProtocolError(
            "the agent card's JSON-RPC URL is on another origin than the registered agent"
        )
    return Peer(url, version, name, description, agent_version, skills)


def _rpc(request_id: str, method: str, params: dict[str, Any]) -> bytes:
    return orjson.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})


_V10_STATES = {
    v10.TASK_STATE_SUBMITTED: TaskState.SUBMITTED,
    v10.TASK_STATE_WORKING: TaskState.WORKING,
    v10.TASK_STATE_COMPLETED: TaskState.COMPLETED,
    v10.TASK_STATE_FAILED: TaskState.FAILED,
    v10.TASK_STATE_CANCELED: TaskState.CANCELED,
    v10.TASK_STATE_REJECTED: TaskState.REJECTED,
    v10.TASK_STATE_INPUT_REQUIRED: TaskState.INPUT_REQUIRED,
    v10.TASK_STATE_AUTH_REQUIRED: TaskState.AUTH_REQUIRED,
}


def _read_v10(result: dict[str, Any]) -> TaskResult:
    # SendMessage answers {"task": …} or {"message": …}; GetTask/CancelTask a bare Task.
    raw_task = result.get("task") if ("task" in result or "message" in result) else result
    try:
        if raw_task is None:
            raw_message = result["message"]
            json_format.ParseDict(raw_message, v10.Message(), ignore_unknown_fields=True)
            return TaskResult(TaskState.COMPLETED, None, *_content([raw_message]))
        task = json_format.ParseDict(raw_task, v10.Task(), ignore_unknown_fields=True)
    except (json_format.ParseError, TypeError, KeyError) as exc:
        raise A2AProtocolError(f"the answer is not an A2A v1.0 task or message: {exc}") from exc
    state = _V10_STATES.get(task.status.state, TaskState.UNKNOWN)
    return TaskResult(state, task.id or None, *_task_content(raw_task))


def _read_v03(result: dict[str, Any]) -> TaskResult:
    try:
        if result.get("kind") == "message":
            v03.Message.model_validate(result)
            return TaskResult(TaskState.COMPLETED, None, *_content([result]))
        task = v03.Task.model_validate(result)
    except ValidationError as exc:
        raise A2AProtocolError(f"the answer is not an A2A v0.3 task or message: {exc}") from exc
    state = TaskState(task.status.state.value.replace("-", "_"))
    return TaskResult(state, task.id, *_task_content(result))


def _task_content(raw_task: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    # The answer's data: the artifacts' parts first, then the status message's.
    holders = list(raw_task.get("artifacts") or [])
    message = (raw_task.get("status") or {}).get("message")
    if isinstance(message, dict):
        holders.append(message)
    return _content(holders)


def _content(holders: list[Any]) -> tuple[dict[str, Any] | None, str]:
    data: dict[str, Any] | None = None
    texts: list[str] = []
    for holder in holders:
        for part in holder.get("parts") or [] if isinstance(holder, dict) else []:
            if not isinstance(part, dict):
                continue
            if data is None and isinstance(part.get("data"), dict):
                data = part["data"]
            if isinstance(part.get("text"), str):
                texts.append(part["text"])
    return data, "\n".join(texts)
