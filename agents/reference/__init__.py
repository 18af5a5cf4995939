"""The reference agents (NLP, Data, Viz): real HTTP services speaking the agent contract.

    create_agent_app(kind, *, delay_ms=0, fail_rate=0.0, fail_status=503, seed=None)
    await start_agent(kind, *, host="127.0.0.1", port=0, **opts) -> (runner, port)
    run_agent(kind, *, host="127.0.0.1", port=None, **opts)      # blocking, for the CLI
    python -m agents.reference nlp|data|viz --help

`parse_intent(query)` is the NLP agent's rule-based parser, reusable on its own.
"""

from agents.reference.intent import Intent
from agents.reference.parser import UnrecognisedQuery, parse_intent
from agents.reference.service import (
    AGENT_KINDS,
    AgentKind,
    AgentOptions,
    create_agent_app,
    run_agent,
    start_agent,
)

__all__ = [
    "AGENT_KINDS",
    "AgentKind",
    "AgentOptions",
    "Intent",
    "UnrecognisedQuery",
    "create_agent_app",
    "parse_intent",
    "run_agent",
    "start_agent",
]
