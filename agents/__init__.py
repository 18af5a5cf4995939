"""Remote agents: the registry of those we may call, the client that calls them, its errors."""

from agents.client import AgentCallResult, AgentClient
from agents.errors import (
    AgentBadResponse,
    AgentConnectionError,
    AgentError,
    AgentHTTPError,
    AgentRejected,
    AgentTimeout,
    AgentUnavailable,
    UnknownAgent,
)
from agents.registry import AgentRegistry, AgentSpec, AgentTimeouts
from agents.transport import create_http_client

__all__ = [
    "AgentBadResponse",
    "AgentCallResult",
    "AgentClient",
    "AgentConnectionError",
    "AgentError",
    "AgentHTTPError",
    "AgentRegistry",
    "AgentRejected",
    "AgentSpec",
    "AgentTimeout",
    "AgentTimeouts",
    "AgentUnavailable",
    "UnknownAgent",
    "create_http_client",
]
