"""structlog set-up: JSON lines on stderr (or readable console lines), context via contextvars.

Configured once at start-up (`configure_logging`); modules call
`structlog.get_logger(__name__)`. Context is bound with `structlog.contextvars`
once where the work starts, so every line inside it carries it without passing
it around: the request middleware binds `request_id` (api/middleware.py), the
lifecycle binds `workflow_id` in the workflow's task. Per node, on the hot path, the
DAG engine sets `node` and `agent` and the agent client `attempt` around each attempt
(0 before the first) in two context variables of their own (agents/observe.py), which
`merge_node_context` adds to every line. Event names are snake_case
(`workflow_finished`, `agent_retry`).
"""

from __future__ import annotations

import logging
import sys
from typing import Literal

import orjson
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from agents.observe import attempt_of, log_node


def merge_node_context(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """A processor: `node`, `agent` and `attempt` of the node the line is logged in (keys
    the call passes itself win, as with structlog's `merge_contextvars`)."""
    node = log_node.get()
    if node is not None:
        event_dict.setdefault("node", node[0])
        event_dict.setdefault("agent", node[1])
    attempt = attempt_of(node)
    if attempt is not None:
        event_dict.setdefault("attempt", attempt)
    return event_dict


def configure_logging(level: str = "info", fmt: Literal["json", "console"] = "json") -> None:
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    processors: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        merge_node_context,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    factory: structlog.typing.WrappedLogger
    if fmt == "console":
        # The console renderer formats tracebacks itself (format_exc_info would flatten them).
        processors.append(structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()))
        factory = structlog.PrintLoggerFactory(sys.stderr)
    else:
        processors.append(structlog.processors.format_exc_info)
        processors.append(structlog.processors.JSONRenderer(serializer=orjson.dumps))
        factory = structlog.BytesLoggerFactory(sys.stderr.buffer)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
