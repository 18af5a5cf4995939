"""structlog set-up: JSON lines on stderr, context bound through contextvars.

Configured once at start-up (`configure_logging`); modules call
`structlog.get_logger(__name__)`. The engine binds `workflow_id`, and each node
binds `step` and `agent`, with `structlog.contextvars`, so every line a call
produces (retries, breaker changes) carries them without passing them around.
"""

from __future__ import annotations

import logging
import sys

import orjson
import structlog


def configure_logging(level: str = "info") -> None:
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=orjson.dumps),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.BytesLoggerFactory(sys.stderr.buffer),
        cache_logger_on_first_use=True,
    )
