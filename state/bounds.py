"""Redis faults: nothing waits on Redis longer than these (DESIGN.md "Redis faults").

The settings model's defaults of ORCH_REDIS_CONNECT_TIMEOUT_S, ORCH_REDIS_TIMEOUT_S,
ORCH_REDIS_MAX_CONNECTIONS and ORCH_REDIS_POOL_TIMEOUT_S, used by state/connect.py. A
module of their own, apart from connect.py: the settings read them in every process,
and connect.py loads redis-py, which a service on the memory store never needs.
"""

DEFAULT_CONNECT_TIMEOUT_S = 1.0
DEFAULT_COMMAND_TIMEOUT_S = 1.0
DEFAULT_MAX_CONNECTIONS = 64
DEFAULT_POOL_TIMEOUT_S = 2.0
