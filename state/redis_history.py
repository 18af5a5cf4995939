"""History on Redis: per-shard indexes, listed newest first across shards.

Each shard is two sorted sets under one hash tag (state/keys.py): members
"<created ms>:<id>" at score 0, read in reverse lexical order (newest first), and
the same members scored by when the workflow expires. A workflow is indexed at
its first write (expiring with the running TTL) and again when it ends (expiring
with the retention), by commands of their own: never in a script with the
workflow's keys, which live in another slot.

No entry outlives its document: a page drops (and deletes) an entry whose
document is gone, and before reading a shard removes the entries whose expiry
passed — after checking, since a workflow that runs longer than the TTL keeps its
document alive by writing (its entry's expiry is then pushed on).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson

from state import keys
from state.history import HistoryPage, HistoryQuery, encode_cursor, member_of
from state.models import WorkflowState
from state.redis_batch import Batcher

# Expired entries one page prunes per shard (the rest wait for the next page).
_PRUNE_BATCH = 200


class RedisHistory:
    def __init__(self, batcher: Batcher, *, prefix: str, shards: int, ttl_s: int) -> None:
        self._batcher = batcher
        self._prefix = prefix
        self._shards = shards
        self._ttl_s = ttl_s

    async def index(self, state: WorkflowState, *, terminal: bool, retention_s: int) -> None:
        shard = keys.history_shard(state.workflow_id, self._shards)
        member = member_of({"created_at": state.created_at, "workflow_id": state.workflow_id})
        expires_ms = _now_ms() + 1000 * (retention_s if terminal else self._ttl_s)
        index_key = keys.history_key(self._prefix, shard)
        expiry_key = keys.history_expiry_key(self._prefix, shard)
        horizon_s = max(retention_s, self._ttl_s) * 2
        await asyncio.gather(
            self._batcher.call(("ZADD", index_key, 0, member)),
            self._batcher.call(("ZADD", expiry_key, expires_ms, member)),
            # An idle deployment's index goes away whole; busy ones are pruned as they finish.
            self._batcher.call(("EXPIRE", index_key, horizon_s)),
            self._batcher.call(("EXPIRE", expiry_key, horizon_s)),
        )
        if terminal:
            await self._prune(shard)

    async def page(self, query: HistoryQuery) -> HistoryPage:
        await asyncio.gather(*(self._prune(shard) for shard in range(self._shards)))
        upper = query.upper_member()
        lower = query.lower_member()
        entries: list[dict[str, Any]] = []
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
                decoded = orjson.loads(head)
                if query.accepts(decoded):
                    decoded.pop("submit_key", None)
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
        merged = sorted((_text(m) for reply in replies for m in reply), reverse=True)
        return merged[:count]

    async def _prune(self, shard: int) -> None:
        expiry_key = keys.history_expiry_key(self._prefix, shard)
        now = _now_ms()
        expired = [
            _text(m)
            for m in await self._batcher.call(
                ("ZRANGEBYSCORE", expiry_key, "-inf", now, "LIMIT", 0, _PRUNE_BATCH)
            )
        ]
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


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
