"""One attempt of a call to an A2A agent, inside `AgentClient`'s breaker and bulkhead.

`AgentClient` wraps every attempt, whatever the protocol, in the same
deadline, retry, breaker, bulkhead and timeouts; for an agent whose
`protocol` is "a2a" the attempt itself is this module's `A2ACalls.send`:

1. the agent's card (read once, at start-up or on the first call) gives the
   JSON-RPC URL and the wire version (agents/a2a.py);
2. `SendMessage` with the node's input, `messageId` = the call's idempotency key
   (the same on every retry);
3. while the task is submitted/working, `GetTask` with a growing pause (2 ms
   to 0.5 s), bounded by the attempt's cap (the step's deadline) — or, with no
   deadline at all, by ten read timeouts, after which the attempt times out and
   a retry asks again with the same messageId;
4. the final state becomes the data or one of our errors (agents/errors.py).

If the attempt is cancelled (the workflow was cancelled) or times out while its
task is still in progress, `CancelTask` is sent for it, off the caller's path
and bounded by the agent's timeouts.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import orjson
import structlog

from agents.a2a import A2AProtocolError, Peer, RpcError, TaskResult, TaskState, peer_from_card
from agents.errors import AgentBadResponse, AgentError, AgentNeedsInput, AgentTaskFailed
from agents.registry import AgentSpec
from agents.transport import AgentTransport, TransportError, TransportResponse

if TYPE_CHECKING:
    from agents.client import _Call

log = structlog.get_logger(__name__)

_POLL_FIRST_S = 0.002
_POLL_MAX_S = 0.5
# With no deadline and no per-call cap, one attempt polls at most this many read timeouts.
_UNBOUNDED_POLL_READS = 10
# A forwarded CancelTask waits at most this long (and at most the agent's timeouts).
_CANCEL_CAP_S = 5.0

Translate = Callable[..., AgentError]
CheckStatus = Callable[[TransportResponse, "_Call"], None]
# Everything sending may raise that is not ours yet (the transport's errors).
_FOREIGN = (TransportError,)


class A2ACalls:
    """The A2A side of `AgentClient`: agent cards, and attempts over JSON-RPC."""

    def __init__(
        self,
        transport: AgentTransport,
        *,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
        translate: Translate,
        check_status: CheckStatus,
    ) -> None:
        self._transport = transport
        self._clock = clock
        self._sleep = sleep
        self._translate = translate
        self._check_status = check_status
        self._peers: dict[str, Peer] = {}
        self._cancelling: set[asyncio.Task[None]] = set()
        self.cancels_sent: Counter[str] = Counter()
        """CancelTask requests sent per agent (after a cancelled or timed-out attempt)."""

    @property
    def peers(self) -> Mapping[str, Peer]:
        return MappingProxyType(self._peers)

    async def discover(self, spec: AgentSpec, call: _Call | None = None) -> Peer:
        """Read the agent's card (GET {url}/.well-known/agent-card.json) and remember it."""
        ctx: dict[str, Any] = {
            "agent": spec.name,
            "workflow_id": None if call is None else call.workflow_id,
            "node_id": None if call is None else call.node_id,
        }
        try:
            # Bounded like every answer: a card is read whole, at most max_response_bytes.
            response = await self._transport.request(
                "GET",
                spec.card_url,
                timeouts=spec.timeouts,
                max_body_bytes=spec.max_response_bytes,
            )
        except (*_FOREIGN, TimeoutError) as exc:
            raise self._translate(exc, **ctx) from exc
        body = response.body
        if response.status != 200:
            raise AgentBadResponse(
                reason=f"agent card answered HTTP {response.status}",
                status=response.status,
                body=body,
                **ctx,
            )
        try:
            peer = peer_from_card(spec.url, orjson.loads(body))
        except (A2AProtocolError, orjson.JSONDecodeError) as exc:
            raise AgentBadResponse(reason=f"agent card: {exc}", body=body, **ctx) from exc
        self._peers[spec.name] = peer
        return peer

    async def send(self, call: _Call, cap_s: float | None, cap_phase: Any) -> dict[str, Any]:
        """One attempt (see the module docstring); returns the task's data."""
        assert call.payload is not None
        peer = self._peers.get(call.spec.name) or await self.discover(call.spec, call)
        call.attempts += 1
        message_id = f"{call.workflow_id}:{call.node_id}"
        limit = cap_s if cap_s is not None else _UNBOUNDED_POLL_READS * call.spec.timeouts.read
        phase = cap_phase if cap_s is not None else "attempt"
        result: TaskResult | None = None
        try:
            async with asyncio.timeout(limit):
                result = await self._rpc(
                    call, peer, peer.send_message(message_id, dict(call.payload))
                )
                pause = _POLL_FIRST_S
                while result.state.in_progress:
                    if result.task_id is None:
                        raise AgentBadResponse(
                            reason=f"a task {result.state.value} without an id", **_ctx(call)
                        )
                    await self._sleep(pause)
                    pause = min(pause * 2, _POLL_MAX_S)
                    result = await self._rpc(call, peer, peer.get_task(result.task_id))
        except TimeoutError as exc:
            self._cancel_in_flight(call, peer, result)
            raise self._translate(exc, **_ctx(call), cap_s=limit, cap_phase=phase) from exc
        except asyncio.CancelledError:
            self._cancel_in_flight(call, peer, result)
            raise
        return _outcome(call, result)

    async def _rpc(self, call: _Call, peer: Peer, body: bytes) -> TaskResult:
        headers = peer.headers()
        if "traceparent" in call.headers:  # tracing on: the agent joins the workflow's trace
            headers["traceparent"] = call.headers["traceparent"]
        try:
            response = await self._transport.request(
                "POST",
                peer.rpc_url,
                body=body,
                headers=headers,
                timeouts=call.timeouts,
                max_body_bytes=call.spec.max_response_bytes,
            )
        except _FOREIGN as exc:
            raise self._translate(exc, **_ctx(call)) from exc
        self._check_status(response, call)
        answer_body = response.body
        try:
            answer = peer.read(answer_body)
        except A2AProtocolError as exc:
            raise AgentBadResponse(
                reason=str(exc), status=response.status, body=answer_body, **_ctx(call)
            ) from exc
        if isinstance(answer, RpcError):
            raise AgentTaskFailed(
                state="error",
                reason=f"JSON-RPC error {answer.code}: {answer.message}",
                agent_fault=answer.internal,
                **_ctx(call),
            )
        return answer

    def _cancel_in_flight(self, call: _Call, peer: Peer, result: TaskResult | None) -> None:
        if result is None or result.task_id is None or not result.state.in_progress:
            return
        task = asyncio.create_task(self._forward_cancel(call, peer, result.task_id))
        self._cancelling.add(task)
        task.add_done_callback(self._cancelling.discard)

    async def _forward_cancel(self, call: _Call, peer: Peer, task_id: str) -> None:
        name = call.spec.name
        self.cancels_sent[name] += 1
        try:
            async with asyncio.timeout(min(_CANCEL_CAP_S, call.spec.timeouts.read)):
                response = await self._transport.request(
                    "POST",
                    peer.rpc_url,
                    body=peer.cancel_task(task_id),
                    headers=peer.headers(),
                    timeouts=call.spec.timeouts,
                    max_body_bytes=call.spec.max_response_bytes,
                )
            log.info(
                "a2a_cancel_forwarded", agent=name, task_id=task_id, status=response.status
            )
        # Best effort: the task may be gone already.
        except (*_FOREIGN, TimeoutError) as exc:
            log.warning("a2a_cancel_failed", agent=name, task_id=task_id, reason=str(exc))

    async def aclose(self) -> None:
        """Wait for CancelTask requests still in flight."""
        if self._cancelling:
            await asyncio.gather(*self._cancelling, return_exceptions=True)


def _ctx(call: _Call) -> dict[str, Any]:
    return {"agent": call.spec.name, "workflow_id": call.workflow_id, "node_id": call.node_id}


def _outcome(call: _Call, result: TaskResult | None) -> dict[str, Any]:
    assert result is not None
    state = result.state
    if state is TaskState.COMPLETED:
        if result.data is not None:
            return result.data
        return {"text": result.text}
    ctx = _ctx(call)
    if state in (TaskState.INPUT_REQUIRED, TaskState.AUTH_REQUIRED):
        raise AgentNeedsInput(
            state=state.value, reason=result.text, task_id=result.task_id, agent_fault=False, **ctx
        )
    if state in (TaskState.FAILED, TaskState.CANCELED, TaskState.REJECTED):
        raise AgentTaskFailed(
            state=state.value,
            reason=result.text,
            task_id=result.task_id,
            agent_fault=state is not TaskState.REJECTED,
            **ctx,
        )
    raise AgentBadResponse(reason=f"task state {state.value!r}", **ctx)
