"""The one shared `httpx.AsyncClient` every agent call goes through, and its transport.

httpx's default transport checks every pooled connection with a `poll()` on each
request, so its cost grows with the number in flight; httpx over aiohttp's connection
pool (`httpx_aiohttp.AiohttpTransport`) keeps httpx's API at aiohttp's speed.
`python -m bench.transport` measures both against aiohttp's own client (at 50 in
flight: httpx's pool ~15x the floor's time per call, httpx over aiohttp ~3-4x).

Over aiohttp, httpx's connect/read/pool timeouts map to aiohttp's sock_connect /
sock_read / connect; aiohttp has no write timeout, so `write` is not enforced there
(`AgentClient`'s per-attempt cap still bounds a whole attempt when one is set).
"""

from __future__ import annotations

from typing import Literal

import httpx
from httpx_aiohttp import AiohttpTransport

TransportName = Literal["aiohttp", "httpx"]

# Sized for every agent's bulkhead at once (3 agents x 32 in flight by default), so the
# pool is never the bottleneck and keep-alive connections are reused, not churned.
DEFAULT_MAX_CONNECTIONS = 128
# Below aiohttp's server keep-alive (75 s) so we drop an idle connection before the
# agent does, and never write a request into a socket the agent is closing.
DEFAULT_KEEPALIVE_EXPIRY_S = 15.0


def create_http_client(
    *,
    transport: TransportName = "aiohttp",
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    keepalive_expiry_s: float = DEFAULT_KEEPALIVE_EXPIRY_S,
) -> httpx.AsyncClient:
    """A keep-alive `httpx.AsyncClient` for `AgentClient`; close it with `aclose()`.

    `transport="aiohttp"` (the default, the faster one in bench/transport.py) runs httpx
    over aiohttp's pool; `"httpx"` uses httpx's own. Timeouts are set per request by
    `AgentClient`, redirects are not followed, and proxies from the environment are
    ignored: agents are called only at the URLs of the registry.
    """
    limits = httpx.Limits(
        max_connections=max_connections,
        max_keepalive_connections=max_connections,
        keepalive_expiry=keepalive_expiry_s,
    )
    if transport == "aiohttp":
        return httpx.AsyncClient(
            transport=AiohttpTransport(limits=limits, trust_env=False),
            trust_env=False,
            follow_redirects=False,
        )
    if transport == "httpx":
        return httpx.AsyncClient(limits=limits, trust_env=False, follow_redirects=False)
    raise ValueError(f"unknown transport {transport!r}: expected 'aiohttp' or 'httpx'")
