"""`WorkflowIdStream`: what `StateStore.subscribe_cancellations()` and
`subscribe_finishes()` return (`CancellationStream` is its older name).

A `QueueStream` (state/streams.py): `aclose()` always releases the subscription.
"""

from __future__ import annotations

from state.streams import QueueStream


class WorkflowIdStream(QueueStream[str]):
    """Workflow ids, in the order they were published (cancels requested, workflows finished)."""


# The name from before finishes were streamed too; the same class.
CancellationStream = WorkflowIdStream
