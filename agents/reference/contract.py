"""The agent contract as the reference agents speak it (DESIGN.md "Agents").

    POST /process  {"workflow_id": str, "step_id": str, "input": {...}}
                   -> 200 {"status": "success", "data": {...}}
    GET  /health   -> 200 {"status": "ok", "agent": name}

Errors answer `{"status": "error", "error": {"code": str, "message": str}}` with
the HTTP status saying what went wrong. Bad input is always a 4xx, never a 500:

    AgentInputError          the request cannot be served as sent
    ├── MalformedInput  400  not JSON, or not the contract's shape / types
    └── UnusableInput   422  well-formed, but its content cannot be used
                             (unknown column, unsupported operator, a question
                             the parser does not understand)

An `Agent` is the part that differs between NLP, Data and Viz: it turns the
`input` object into the `data` object; agents.reference.service does the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import orjson
from aiohttp import web

JSONObject = dict[str, Any]


class AgentInputError(Exception):
    """The request cannot be served as sent; `status` is the HTTP status to answer."""

    status: ClassVar[int] = 400
    default_code: ClassVar[str] = "bad_input"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code


class MalformedInput(AgentInputError):
    """Not JSON, or not the shape and types the contract requires (400)."""

    status = 400
    default_code = "malformed_input"


class UnusableInput(AgentInputError):
    """Well-formed input whose content the agent cannot use (422)."""

    status = 422
    default_code = "unusable_input"


class Agent(Protocol):
    """What one reference agent does with the `input` of a /process request."""

    @property
    def name(self) -> str: ...

    async def process(self, payload: JSONObject) -> JSONObject:
        """The `data` answer for `payload`; raises AgentInputError for bad input."""
        ...

    async def healthy(self) -> bool:
        """Whether the agent can work right now (GET /health answers 503 if not)."""
        ...


@dataclass(frozen=True, slots=True)
class Envelope:
    workflow_id: str
    step_id: str
    input: JSONObject


def parse_json_object(body: bytes, *, what: str) -> JSONObject:
    """`body` decoded as a JSON object; MalformedInput otherwise."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedInput(f"{what} is not valid JSON: {exc}", code="invalid_json") from exc
    if not isinstance(value, dict):
        raise MalformedInput(f"{what} must be a JSON object, not {type(value).__name__}")
    return value


def parse_envelope(body: bytes) -> Envelope:
    """The /process request body, checked against the contract."""
    document = parse_json_object(body, what="the request body")
    for key in ("workflow_id", "step_id"):
        if not isinstance(document.get(key), str):
            raise MalformedInput(f"'{key}' must be a string")
    payload = document.get("input")
    if not isinstance(payload, dict):
        raise MalformedInput("'input' must be a JSON object")
    return Envelope(document["workflow_id"], document["step_id"], payload)


def json_response(body: JSONObject, *, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def success_response(data: JSONObject) -> web.Response:
    return json_response({"status": "success", "data": data})


def error_response(status: int, code: str, message: str) -> web.Response:
    body = {"status": "error", "error": {"code": code, "message": message}}
    return json_response(body, status=status)
