"""A workflow's progress events as the stores keep them, and `EventStream` for live ones.

Each workflow has an append-only event log in the store: `append_event` gives an
event the next sequence number (1, 2, 3, ... per workflow, assigned by the store, so
every replica agrees) and publishes it to the workflow's subscribers on every
replica. `events_since(id, after)` reads what already happened; `subscribe_events`
returns an `EventStream` of what happens next. A reader that subscribes first and
then reads the log misses nothing; it may see an event twice, and skips any whose
sequence number it already has.

An event is a JSON object; the store neither reads nor changes it.
"""

from __future__ import annotations

from typing import Any

from state.streams import QueueStream

# (sequence number, event)
StoredEvent = tuple[int, dict[str, Any]]


class EventStream(QueueStream[StoredEvent]):
    """Live events of one workflow, in sequence order, from the moment it was opened.

    Iteration ends when the store closes or loses the subscription (the reader then
    resumes from the log with `events_since`), or after `aclose()`.
    """
