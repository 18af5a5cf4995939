"""`HttpxTransport`: the `AgentTransport` over httpx (`ORCH_HTTP_TRANSPORT=httpx`).

Its own module so that httpx is imported only when this transport is chosen (or a test
drives it with respx / `httpx.MockTransport`); agents/transport.py has the contract.
"""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from agents.registry import AgentTimeouts
from agents.transport import (
    DEFAULT_KEEPALIVE_EXPIRY_S,
    DEFAULT_MAX_CONNECTIONS,
    IDENTITY,
    ResponseTooLarge,
    TimeoutPhaseName,
    TransportConnectionError,
    TransportError,
    TransportResponse,
    TransportTimeout,
    connection_reason,
    too_large,
)

__all__ = ["HttpxTransport"]


class HttpxTransport:
    """`AgentTransport` over one `httpx.AsyncClient` (given, or made with httpx's pool).

    A given client is used as it is (tests give one driven by respx or
    `httpx.MockTransport`); `aclose` closes it either way.
    """

    def __init__(
        self,
        client: httpx.AsyncClient | None = None,
        *,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        keepalive_expiry_s: float = DEFAULT_KEEPALIVE_EXPIRY_S,
    ) -> None:
        if client is None:
            client = httpx.AsyncClient(
                limits=httpx.Limits(
                    max_connections=max_connections,
                    max_keepalive_connections=max_connections,
                    keepalive_expiry=keepalive_expiry_s,
                ),
                trust_env=False,
                follow_redirects=False,
            )
        self.client = client
        # httpx turns a Timeout into its request extension on every request; one per agent.
        self._timeouts: dict[AgentTimeouts, httpx.Timeout] = {}

    def _timeout(self, t: AgentTimeouts) -> httpx.Timeout:
        cached = self._timeouts.get(t)
        if cached is None:
            if len(self._timeouts) >= 256:
                self._timeouts.clear()
            cached = self._timeouts[t] = httpx.Timeout(
                connect=t.connect, read=t.read, write=t.write, pool=t.pool
            )
        return cached

    async def request(
        self,
        method: str,
        url: str,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeouts: AgentTimeouts,
        max_body_bytes: int,
    ) -> TransportResponse:
        client = self.client
        request = client.build_request(
            method,
            url,
            content=body,
            headers={"accept-encoding": IDENTITY, **(headers or {})},
            timeout=self._timeout(timeouts),
        )
        # Nothing is kept between requests: agents are stateless, and a cookie one
        # workflow's call received must never ride along on another workflow's calls.
        request.headers.pop("cookie", None)
        try:
            response = await client.send(request, stream=True)
            try:
                content = await self._read(response, max_body_bytes)
            finally:
                await response.aclose()
        except httpx.HTTPError as exc:
            raise _from_httpx(exc, timeouts) from exc
        finally:
            client.cookies.clear()
        return TransportResponse(response.status_code, response.headers, content)

    @staticmethod
    async def _read(response: httpx.Response, limit: int) -> bytes:
        too_large(_content_length(response.headers), limit)
        if response.is_stream_consumed:
            # Read already, in memory: what httpx.MockTransport hands back.
            too_large(len(response.content), limit)
            return response.content
        parts: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():  # decoded, if the agent compressed anyway
            size += len(chunk)
            if size > limit:
                raise ResponseTooLarge(limit)
            parts.append(chunk)
        return b"".join(parts)

    async def aclose(self) -> None:
        await self.client.aclose()


def _content_length(headers: httpx.Headers) -> int | None:
    raw = headers.get("content-length")
    return int(raw) if raw is not None and raw.isdigit() else None


_HTTPX_PHASES: tuple[tuple[type[httpx.TimeoutException], TimeoutPhaseName], ...] = (
    (httpx.ConnectTimeout, "connect"),
    (httpx.ReadTimeout, "read"),
    (httpx.WriteTimeout, "write"),
    (httpx.PoolTimeout, "pool"),
)


def _from_httpx(exc: httpx.HTTPError, timeouts: AgentTimeouts) -> TransportError:
    """The one place httpx's errors become ours."""
    if isinstance(exc, httpx.TimeoutException):
        phase: TimeoutPhaseName = next((p for t, p in _HTTPX_PHASES if isinstance(exc, t)), "read")
        return TransportTimeout(phase, getattr(timeouts, phase))
    if isinstance(exc, httpx.DecodingError):
        return TransportConnectionError("the agent's answer could not be decoded", detail=repr(exc))
    if isinstance(exc, httpx.RemoteProtocolError) and "disconnect" not in str(exc).lower():
        return TransportConnectionError("the agent's answer is not valid HTTP", detail=repr(exc))
    return TransportConnectionError(connection_reason(exc), detail=repr(exc))
