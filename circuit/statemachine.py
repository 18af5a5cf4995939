"""pybreaker, the breakers' state machine, imported without its optional Redis storage.

pybreaker's module runs `try: from redis import Redis` for `CircuitRedisStorage`,
which this project never uses (breakers are shared across replicas by our own board,
circuit/board_redis.py). With redis-py installed that line alone loads all of redis-py
and, through redis-py's metrics, the OpenTelemetry metrics SDK: ~9 MB of a service
that runs on the memory store and never talks to Redis (bench.targets' peak RSS row).
So pybreaker is imported with `redis` marked absent (`sys.modules[name] = None` makes
an import raise ImportError, which pybreaker's `try` expects), then the mark is
removed: a later `import redis` by the Redis state store works as ever. When redis-py
is already loaded (a service on Redis), nothing is marked and nothing changes.
"""

from __future__ import annotations

import sys

if "redis" in sys.modules:
    import pybreaker
else:
    sys.modules["redis"] = None  # type: ignore[assignment]
    try:
        import pybreaker
    finally:
        if sys.modules.get("redis", ...) is None:
            del sys.modules["redis"]

__all__ = ["pybreaker"]
