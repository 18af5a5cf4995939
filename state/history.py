"""History listing: the query, the page, and the opaque cursor both stores use.

Entries are ordered newest first by creation time (ties by id), which is also
the order of the index members ("<created ms, 15 digits>:<id>", state/keys.py):
the cursor is the last member a page examined, so the next page starts strictly
below it, whatever was submitted since. A page examines at most `scan_budget`
entries; when filters drop most of them it may hold fewer than `limit` entries
and still carry a cursor (keep following it until it is None).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field

from state import keys
from state.errors import StateError
from state.models import HistoryEntry

MAX_LIMIT = 200
DEFAULT_LIMIT = 50
# Index entries a single page may examine (filters may drop them).
SCAN_BUDGET = 2_000


class BadCursor(StateError, ValueError):
    """The cursor was not one this service handed out."""


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    limit: int = DEFAULT_LIMIT
    cursor: str | None = None
    status: frozenset[str] = frozenset()
    definition: str | None = None
    since: float | None = None  # created at or after (epoch seconds)
    until: float | None = None  # created before
    # None: every tenant (admins); otherwise only this tenant's workflows.
    tenant: str | None = None
    all_tenants: bool = True
    scan_budget: int = SCAN_BUDGET

    def upper_member(self) -> str | None:
        """Members must sort strictly below this one (from the cursor and `until`)."""
        bounds = []
        if self.cursor is not None:
            bounds.append(decode_cursor(self.cursor))
        if self.until is not None:
            bounds.append(f"{_ms(self.until):015d}")
        return min(bounds) if bounds else None

    def lower_member(self) -> str | None:
        return f"{_ms(self.since):015d}" if self.since is not None else None

    def accepts(self, entry: HistoryEntry) -> bool:
        if self.status and entry.status not in self.status:
            return False
        if self.definition is not None and entry.definition_name != self.definition:
            return False
        return self.all_tenants or entry.tenant == self.tenant


@dataclass(frozen=True, slots=True)
class HistoryPage:
    entries: list[HistoryEntry] = field(default_factory=list)
    cursor: str | None = None


def member_of(created_at: float, workflow_id: str) -> str:
    return keys.history_member(_ms(created_at), workflow_id)


def encode_cursor(member: str) -> str:
    return base64.urlsafe_b64encode(member.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        member = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise BadCursor("not a cursor this service handed out") from exc
    created, sep, workflow_id = member.partition(":")
    if not (sep and len(created) == 15 and created.isdigit() and workflow_id):
        raise BadCursor("not a cursor this service handed out")
    return member


def _ms(seconds: float) -> int:
    return max(0, round(seconds * 1000))
