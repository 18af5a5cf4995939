"""Remote agents: the registry of those we may call, the client that calls them, its errors."""

from agents.client import AgentCallResult, AgentClient
from agents.errors import (
    AgentBadResponse,
    AgentConnectionError,
    AgentError,
    AgentHTTPError,
    AgentRejected,
    AgentResponseTooLarge,
    AgentTimeout,
    AgentUnavailable,
    UnknownAgent,
)
from agents.registry import AgentRegistry, AgentSpec, AgentTimeouts
from agents.transport import AgentTransport, create_transport

__all__ = [
    "AgentBadResponse",
    "AgentCallResult",
    "AgentClient",
    "AgentConnectionError",
    "AgentError",
    "AgentHTTPError",
    "AgentRegistry",
    "AgentRejected",
    "AgentResponseTooLarge",
    "AgentSpec",
    "AgentTimeout",
    "AgentTimeouts",
    "AgentTransport",
    "AgentUnavailable",
    "UnknownAgent",
    "create_transport",
]
