"""Workflow state: value types, the `StateStore` contract, and its backends.

Backends are imported from their modules (`state.memory.MemoryStateStore`,
`state.redis.RedisStateStore`), so `import state` never pulls in redis.
"""

from state.cancellations import CancellationStream, WorkflowIdStream
from state.errors import StateError
from state.models import WorkflowState, WorkflowStatus
from state.store import LeaseLost, StateStore, StateStoreError

__all__ = [
    "CancellationStream",
    "LeaseLost",
    "StateError",
    "StateStore",
    "StateStoreError",
    "WorkflowState",
    "WorkflowIdStream",
    "WorkflowStatus",
]
