"""The registry of agents the service may call: the only URLs it ever calls."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Literal

from msgspec import Meta

from circuit.config import (
    BreakerConfig,
    PositiveFloat,
    PositiveInt,
    RetryBudgetConfig,
    RetryConfig,
)

DEFAULT_AGENT_CONCURRENCY = 64


@dataclass(frozen=True, slots=True)
class AgentTimeouts:
    """Per-attempt timeouts of each phase of a request, seconds (agents/transport.py).

    `read` is short enough that a hanging agent costs at most two or three attempts
    inside a step's deadline (ORCH_STEP_TIMEOUT_S), itself well inside a sync query's
    wait (ORCH_SYNC_WAIT_S); agents that think longer raise it. (The defaults keep
    this: tests/orchestrator/test_settings_defaults.py.)
    """

    connect: PositiveFloat = 5.0
    read: PositiveFloat = 6.0
    write: PositiveFloat = 10.0
    pool: PositiveFloat = 5.0


# The registry's URLs are the only ones the service calls: plain http(s), nothing else.
AgentUrl = Annotated[str, Meta(pattern=r"^https?://[^\s/]+", description="an http(s) URL")]
Protocol = Literal["native", "a2a"]
DEFAULT_MAX_RESPONSE_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class AgentSpec:
    name: str
    url: AgentUrl
    timeouts: AgentTimeouts = field(default_factory=AgentTimeouts)
    breaker: BreakerConfig = field(default_factory=BreakerConfig)
    retry: RetryConfig = field(default_factory=RetryConfig)
    retry_budget: RetryBudgetConfig = field(default_factory=RetryBudgetConfig)
    # Calls in flight to this agent at once, across all workflows of this process
    # (why 64: README "Defaults"). A slow agent still cannot take more than this many
    # connections and tasks; a fast one is not held far below what one replica can do.
    concurrency: PositiveInt = DEFAULT_AGENT_CONCURRENCY
    # "native": POST {url}/process (DESIGN.md "Agents"); "a2a": the Agent2Agent protocol,
    # its card at {url}/.well-known/agent-card.json (agents/a2a.py).
    protocol: Protocol = "native"
    # Largest answer body read from this agent (4 MiB); past it the call fails with
    # `agent_response_too_large` and the connection is dropped unread.
    max_response_bytes: PositiveInt = DEFAULT_MAX_RESPONSE_BYTES

    @property
    def process_url(self) -> str:
        return self.url.rstrip("/") + "/process"

    @property
    def health_url(self) -> str:
        return self.url.rstrip("/") + "/health"

    @property
    def card_url(self) -> str:
        """Where an A2A agent publishes its card."""
        return self.url.rstrip("/") + "/.well-known/agent-card.json"


class AgentRegistry(Mapping[str, AgentSpec]):
    """Immutable name -> AgentSpec mapping; unknown names are never called."""

    def __init__(self, specs: Mapping[str, AgentSpec] | list[AgentSpec]) -> None:
        items = list(specs.values()) if isinstance(specs, Mapping) else list(specs)
        self._specs = {spec.name: spec for spec in items}

    def __getitem__(self, name: str) -> AgentSpec:
        return self._specs[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)


# Defaults from the original plan (DESIGN.md "Every agent call").
DEFAULT_BREAKERS: dict[str, BreakerConfig] = {
    "nlp": BreakerConfig(fail_max=5, reset_timeout_s=60.0),
    "data": BreakerConfig(fail_max=3, reset_timeout_s=120.0),
    "viz": BreakerConfig(fail_max=5, reset_timeout_s=60.0),
}
DEFAULT_RETRIES: dict[str, RetryConfig] = {
    "nlp": RetryConfig(max_attempts=3, base_delay_s=1.0, max_delay_s=30.0),
    "data": RetryConfig(max_attempts=2, base_delay_s=2.0, max_delay_s=60.0),
    "viz": RetryConfig(max_attempts=3, base_delay_s=1.0, max_delay_s=30.0),
}
DEFAULT_PORTS: dict[str, int] = {"nlp": 8001, "data": 8002, "viz": 8003}
