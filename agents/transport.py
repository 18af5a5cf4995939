"""The one shared `httpx.AsyncClient` every agent call goes through, and its transport.

httpx's default transport checks every pooled connection with a `poll()` on each
request, so its cost grows with the number in flight; httpx over aiohttp's connection
pool keeps httpx's API at close to aiohttp's speed. `python -m bench.transport`
measures both against aiohttp's own client.

The aiohttp transport is `AgentTransport`, a leaner `httpx_aiohttp.AiohttpTransport`:
same pool, same error mapping, but it hands aiohttp the request's headers without
re-decoding them one by one, and reuses one `aiohttp.ClientTimeout` per distinct set of
timeouts. Its body stream yields what aiohttp has buffered, chunk by chunk, so the
size cap below sees a big answer grow rather than after it was read whole.

**The response size cap lives here**: `read_body(response, limit=...)` is how every
answer is read (streamed, decoded, counted as it arrives); past the limit it stops
reading and raises `BodyTooLarge`, which `AgentClient` turns into
`agent_response_too_large`. A later transport keeps the same function.

The client itself (`AgentHTTPClient`) keeps no cookies: agents are stateless, and a
cookie one workflow's call received must not ride along on every other workflow's
calls. That also spares httpx's per-response cookie extraction, which builds urllib
request/response adapters for every answer.

Over aiohttp, httpx's connect/read/pool timeouts map to aiohttp's sock_connect /
sock_read / connect; aiohttp has no write timeout, so `write` is not enforced there
(`AgentClient`'s per-attempt cap still bounds a whole attempt when one is set).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Literal

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport
from httpx_aiohttp.transport import map_aiohttp_exceptions

__all__ = [
    "BodyTooLarge",
    "DEFAULT_KEEPALIVE_EXPIRY_S",
    "DEFAULT_MAX_CONNECTIONS",
    "AgentHTTPClient",
    "AgentTransport",
    "TransportName",
    "create_http_client",
    "read_body",
]

TransportName = Literal["aiohttp", "httpx"]

# Sized for every agent's bulkhead at once (3 agents x 32 in flight by default), so the
# pool is never the bottleneck and keep-alive connections are reused, not churned.
DEFAULT_MAX_CONNECTIONS = 128
# Below aiohttp's server keep-alive (75 s) so we drop an idle connection before the
# agent does, and never write a request into a socket the agent is closing.
DEFAULT_KEEPALIVE_EXPIRY_S = 15.0

# Distinct timeout sets are few (one per agent, plus per-call overrides); past this
# many the cache starts over rather than grow without bound.
_MAX_CACHED_TIMEOUTS = 256


class _InertCookies(httpx.Cookies):
    """A cookie store that stays empty: answers' `Set-Cookie` headers are ignored."""

    def extract_cookies(self, response: httpx.Response) -> None:
        return None

    def set(self, name: str, value: str, domain: str = "", path: str = "/") -> None:
        raise TypeError("the agent HTTP client keeps no cookies; pass them per request")


class AgentHTTPClient(httpx.AsyncClient):
    """An `httpx.AsyncClient` that keeps no cookies (see the module docstring).

    Takes `httpx.AsyncClient`'s keyword arguments except `cookies`; everything else is
    plain httpx, and cookies given for one request are still sent with it.
    """

    def __init__(self, **kwargs: Any) -> None:
        if kwargs.get("cookies"):
            raise TypeError("the agent HTTP client keeps no cookies; pass them per request")
        self._inert_cookies = _InertCookies()
        super().__init__(**kwargs)

    @property
    def cookies(self) -> httpx.Cookies:
        return self._inert_cookies

    @cookies.setter
    def cookies(self, cookies: Any) -> None:
        if cookies:
            raise TypeError("the agent HTTP client keeps no cookies; pass them per request")


class BodyTooLarge(Exception):
    """An answer's body went past the reader's limit; reading stopped there."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"response body larger than {limit} bytes")
        self.limit = limit


async def read_body(response: httpx.Response, *, limit: int) -> bytes:
    """The body of a response sent with `stream=True`, at most `limit` bytes once decoded.

    A `Content-Length` over the limit is refused before reading; otherwise chunks are
    counted as they arrive (after any Content-Encoding is undone, so a compressed bomb
    stops at the limit too) and reading stops the moment the total passes it. The
    caller closes the response.
    """
    declared = response.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(limit)
    chunks: list[bytes] = []
    total = 0
    async for chunk in response.aiter_bytes():
        total += len(chunk)
        if total > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)


class _BodyStream(httpx.AsyncByteStream):
    """An aiohttp answer's body for httpx, as aiohttp receives it."""

    __slots__ = ("_response",)

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with map_aiohttp_exceptions():
            async for chunk in self._response.content.iter_any():
                yield chunk

    async def aclose(self) -> None:
        with map_aiohttp_exceptions():
            await self._response.__aexit__(None, None, None)


class AgentTransport(AiohttpTransport):
    """httpx over aiohttp's connection pool, with less work per request.

    Same constructor, pool, timeouts and error mapping as `AiohttpTransport`.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._timeouts: dict[
            tuple[float | None, float | None, float | None], aiohttp.ClientTimeout
        ] = {}

    def _client_timeout(self, timeout: dict[str, float | None]) -> aiohttp.ClientTimeout:
        key = (timeout.get("connect"), timeout.get("read"), timeout.get("pool"))
        cached = self._timeouts.get(key)
        if cached is None:
            if len(self._timeouts) >= _MAX_CACHED_TIMEOUTS:
                self._timeouts.clear()
            cached = self._timeouts[key] = aiohttp.ClientTimeout(
                sock_connect=key[0], sock_read=key[1], connect=key[2]
            )
        return cached

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        # The generic path (proxies, SNI overrides, unread request streams) stays the
        # parent's; the agent client's requests never use any of them.
        if (
            self.proxy is not None
            or "sni_hostname" in request.extensions
            or not isinstance(request.stream, httpx.ByteStream)
        ):
            return await super().handle_async_request(request)
        if not isinstance(self.client, aiohttp.ClientSession):
            self.client = self.get_client()
        data: bytes | None = request.content or None
        headers = [
            (name.decode("latin-1"), value.decode("latin-1")) for name, value in request.headers.raw
        ]
        with map_aiohttp_exceptions():
            response = await self.client.request(
                request.method,
                str(request.url),
                headers=headers,
                data=data,
                allow_redirects=False,
                auto_decompress=False,
                compress=False,
                timeout=self._client_timeout(request.extensions.get("timeout", {})),
            ).__aenter__()
        extensions: dict[str, Any] = {"http_version": b"HTTP/1.1"}
        if response.reason:
            extensions["reason_phrase"] = response.reason.encode()
        return httpx.Response(
            status_code=response.status,
            headers=response.raw_headers,
            stream=_BodyStream(response),
            request=request,
            extensions=extensions,
        )


def create_http_client(
    *,
    transport: TransportName = "aiohttp",
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    keepalive_expiry_s: float = DEFAULT_KEEPALIVE_EXPIRY_S,
) -> httpx.AsyncClient:
    """A keep-alive `AgentHTTPClient` for `AgentClient`; close it with `aclose()`.

    `transport="aiohttp"` (the default, the faster one in bench/transport.py) runs httpx
    over aiohttp's pool (`AgentTransport`); `"httpx"` uses httpx's own. Timeouts are set
    per request by `AgentClient`, redirects are not followed, cookies are not kept, and
    proxies from the environment are ignored: agents are called only at the URLs of the
    registry.
    """
    limits = httpx.Limits(
        max_connections=max_connections,
        max_keepalive_connections=max_connections,
        keepalive_expiry=keepalive_expiry_s,
    )
    if transport == "aiohttp":
        return AgentHTTPClient(
            transport=AgentTransport(limits=limits, trust_env=False),
            trust_env=False,
            follow_redirects=False,
        )
    if transport == "httpx":
        return AgentHTTPClient(limits=limits, trust_env=False, follow_redirects=False)
    raise ValueError(f"unknown transport {transport!r}: expected 'aiohttp' or 'httpx'")
