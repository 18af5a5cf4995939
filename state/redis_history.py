"""History on Redis: per-shard indexes, listed newest first across shards.

Each shard is two sorted sets under one hash tag (state/keys.py): members
"<created ms>:<id>" at score 0, read in reverse lexical order (newest first), and
the same members scored by when the workflow expires. A workflow is indexed at
its first write, by commands of their own: never in a script with the workflow's
keys, which live in another slot.

The expiry score is when to check an entry, not a verdict: no entry outlives its
document, because a page drops (and deletes) an entry whose document is gone, and
before reading a shard removes the entries whose expiry passed — after checking
(EXISTS), since a workflow that runs longer than the TTL keeps its document alive by
writing (its entry's expiry is then pushed on). So a score earlier than the
document's expiry costs a check more, one later keeps a dead entry a while longer.

The first write scores the entry the running TTL plus a slack (`_SLACK_S`, at most
the TTL). A workflow whose finished document then expires within that slack (with a
retention as long as the TTL, the usual one, answered within seconds of its accept)
needs no second index: its terminal write sends none, and its entry lingers at most
the slack after its document. Any other is indexed again when it ends, with the
retention as its expiry.

Each first write also lists its shard's entries whose expiry passed (at most
`_PRUNE_BATCH`) and prunes them: a shard is swept at the rate it is written, so the
index stays bounded when nobody lists history. The first writes of one turn to a shard
send their entries as one command, which sweeps once for all of them (up to
`_PRUNE_BATCH` each).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Any

from state import keys
from state.connect import reply_text
from state.history import HistoryPage, HistoryQuery, encode_cursor, member_of
from state.layout import summary
from state.models import HistoryEntry, WorkflowState
from state.redis_batch import Batcher, LuaScript

# Expired entries one page (or one first write) prunes per shard (the rest wait for the next).
_PRUNE_BATCH = 200

# How much later than the running TTL a first write's entry is due for its check (capped
# at the TTL, so the index's own TTL, twice the longer of TTL and retention, covers it).
_SLACK_S = 60

# KEYS[1] a shard's index, KEYS[2] its expiry set. ARGV[1] the sets' own TTL (s), ARGV[2]
# now (ms) to list expired entries ("" not to), ARGV[3] how many at most per entry written,
# then one or more pairs of a member and its expiry (ms): the entries of one turn's writes
# to the shard share one command (`Batcher.eval_joined`), and the sweep lists as many as
# their separate commands would have. Returns the expired entries (checked and pruned by
# the caller).
_INDEX = LuaScript("""
for i = 4, #ARGV, 2 do
  redis.call('ZADD', KEYS[1], 0, ARGV[i])
  redis.call('ZADD', KEYS[2], ARGV[i + 1], ARGV[i])
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[1])
if ARGV[2] == '' then return {} end
return redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[2], 'LIMIT', 0,
  ARGV[3] * (#ARGV - 3) / 2)
""")


class RedisHistory:
    def __init__(self, batcher: Batcher, *, prefix: str, shards: int, ttl_s: int) -> None:
        self._batcher = batcher
        self._prefix = prefix
        self._shards = shards
        self._ttl_s = ttl_s

    def index(
        self, state: WorkflowState, *, terminal: bool, retention_s: int
    ) -> Awaitable[None] | None:
        """List `state` (again, when it ends: with the retention as its expiry, unless the
        first write's entry is due for its check no earlier than the finished document
        expires: then None, nothing is sent).

        Queued at once, so it joins the round trip of the document write queued just
        before it (after it, in order, on one Redis); the result is awaited. A first
        write sweeps its shard too: only when entries expired does that take a round
        trip of its own.
        """
        now = _now_ms()
        slack_s = min(_SLACK_S, self._ttl_s)
        if terminal:
            expires_ms = now + 1000 * retention_s
            # The first write scored the entry at least `due` (its clock read after created_at):
            # a document expiring within the slack before that needs no new score.
            due = int(state.created_at * 1000) + 1000 * (self._ttl_s + slack_s)
            if due - 1000 * slack_s <= expires_ms <= due:
                return None
            swept: int | str = ""  # (a first write sweeps: nothing to prune after this one)
        else:
            expires_ms = now + 1000 * (self._ttl_s + slack_s)
            swept = now
        shard = keys.history_shard(state.workflow_id, self._shards)
        member = member_of(state.created_at, state.workflow_id)
        # An idle deployment's index goes away whole; busy ones are pruned as they are written.
        horizon_s = max(retention_s, self._ttl_s) * 2
        # The shard's entries of this turn's writes go as one command, after the last of
        # their documents (at_end: an entry is never indexed before its document is
        # written, which a page would take for a dead entry). Who joins a first write
        # sweeps with it: the first one prunes what that sweep found, a joiner nothing.
        index_keys = (
            keys.history_key(self._prefix, shard),
            keys.history_expiry_key(self._prefix, shard),
        )
        expired = self._batcher.eval_joined(
            _INDEX,
            index_keys,
            (horizon_s, swept, _PRUNE_BATCH),
            (member, expires_ms),
            join=(_INDEX.sha, index_keys[0], terminal),
            joined_reply=[],
            at_end=True,
        )
        if terminal:
            return expired  # lists nothing expired (ARGV[2] ""): nothing to prune after it
        return self._indexed(shard, expired)

    async def _indexed(self, shard: int, expired: Awaitable[Any]) -> None:
        await self._prune_members(shard, await expired)

    async def page(self, query: HistoryQuery) -> HistoryPage:
        await asyncio.gather(*(self._prune(shard) for shard in range(self._shards)))
        upper = query.upper_member()
        lower = query.lower_member()
        entries: list[HistoryEntry] = []
        examined = 0
        batch = max(query.limit, 16)
        while True:
            candidates = await self._newest(upper, lower, batch)
            if not candidates:
                return HistoryPage(entries, None)
            heads = await asyncio.gather(
                *(
                    self._batcher.call(
                        ("HGET", keys.workflow_key(self._prefix, _id_of(m)), keys.DOC_HEADER_FIELD)
                    )
                    for m in candidates
                )
            )
            for member, head in zip(candidates, heads, strict=True):
                upper = member
                examined += 1
                if head is None:
                    await self._drop(member)  # its document expired: so does the entry
                    continue
                decoded = summary(head)
                if query.accepts(decoded):
                    entries.append(decoded)
                if len(entries) == query.limit or examined >= query.scan_budget:
                    return HistoryPage(entries, encode_cursor(member))

    async def _newest(self, upper: str | None, lower: str | None, count: int) -> list[str]:
        high = "(" + upper if upper is not None else "+"
        low = "[" + lower if lower is not None else "-"
        replies = await asyncio.gather(
            *(
                self._batcher.call(
                    ("ZRANGE", keys.history_key(self._prefix, shard), high, low,
                     "BYLEX", "REV", "LIMIT", 0, count)
                )
                for shard in range(self._shards)
            )
        )
        merged = sorted((reply_text(m) for reply in replies for m in reply), reverse=True)
        return merged[:count]

    async def _prune(self, shard: int) -> None:
        await self._prune_members(shard, await self._expired(shard))

    def _expired(self, shard: int) -> asyncio.Future[Any]:
        expiry_key = keys.history_expiry_key(self._prefix, shard)
        return self._batcher.call(
            ("ZRANGEBYSCORE", expiry_key, "-inf", _now_ms(), "LIMIT", 0, _PRUNE_BATCH)
        )

    async def _prune_members(self, shard: int, members: list[Any]) -> None:
        if not members:
            return
        expiry_key = keys.history_expiry_key(self._prefix, shard)
        expired = [reply_text(m) for m in members]
        now = _now_ms()
        alive = await asyncio.gather(
            *(
                self._batcher.call(("EXISTS", keys.workflow_key(self._prefix, _id_of(m))))
                for m in expired
            )
        )
        for member, live in zip(expired, alive, strict=True):
            if live:  # still running past the TTL: its document lives on, so does its entry
                await self._batcher.call(("ZADD", expiry_key, now + 1000 * self._ttl_s, member))
            else:
                await self._drop(member)

    async def _drop(self, member: str) -> None:
        shard = keys.history_shard(_id_of(member), self._shards)
        await asyncio.gather(
            self._batcher.call(("ZREM", keys.history_key(self._prefix, shard), member)),
            self._batcher.call(("ZREM", keys.history_expiry_key(self._prefix, shard), member)),
        )


def _id_of(member: str) -> str:
    return member.partition(":")[2]


def _now_ms() -> int:
    return int(time.time() * 1000)
