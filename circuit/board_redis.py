"""`RedisBreakerBoard`: the breaker board on Redis, so every replica sees every other.

Keys, under the deployment's prefix (default ``orch:``)::

    orch:cb:forced          hash  agent -> {"mode", "at", "by"}    ops modes; TTL `forced_ttl_s`,
                                                                   refreshed by every publish
    orch:cb:resets          hash  agent -> count of resets         the same TTL
    orch:cb:changes         chan  pub/sub: an agent whose mode changed (wakes every replica)
    orch:cb:replicas        zset  replica -> epoch of last publish  TTL `report_ttl_s`, refreshed
    orch:cb:replica:<id>    str   that replica's report (JSON)      TTL `report_ttl_s`

A report's own TTL is what makes a dead replica drop out; the sorted set only
lists who to read (no SCAN) and is pruned of entries older than the TTL. The
forced modes must survive restarts "until undone", but every key here has a TTL
like the rest of the layout: a long one (30 days by default) that each live
replica's publish pushes back, so it only lapses when no replica has run for that
long. Every command runs under `timeout_s`, and a failure is a `BreakerBoardError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from circuit.board import ForcedMode, ReplicaReport, check_ops_mode
from circuit.breaker import Forced
from circuit.errors import BreakerBoardError

__all__ = ["RedisBreakerBoard"]

DEFAULT_FORCED_TTL_S = 30 * 24 * 3600


def forced_key(prefix: str) -> str:
    return f"{prefix}cb:forced"


def resets_key(prefix: str) -> str:
    return f"{prefix}cb:resets"


def changes_channel(prefix: str) -> str:
    return f"{prefix}cb:changes"


def replicas_key(prefix: str) -> str:
    return f"{prefix}cb:replicas"


def report_key(prefix: str, replica: str) -> str:
    return f"{prefix}cb:replica:{replica}"


class RedisBreakerBoard:
    """The board on `client` (left open by `close()` unless built by `from_url`)."""

    def __init__(
        self,
        client: aioredis.Redis | aioredis.RedisCluster,
        *,
        # No defaults: the service's (ORCH_KEY_PREFIX, ORCH_REDIS_TIMEOUT_S) are the settings
        # model's, which this lower package may not import.
        prefix: str,
        timeout_s: float,
        report_ttl_s: float = 5.0,
        forced_ttl_s: int = DEFAULT_FORCED_TTL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._report_ttl_ms = max(1, round(report_ttl_s * 1000))
        self._report_ttl_s = report_ttl_s
        self._forced_ttl_s = forced_ttl_s
        self._timeout_s = timeout_s
        self._clock = clock
        self._owns_client = False

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> RedisBreakerBoard:
        board = cls(aioredis.Redis.from_url(url), **kwargs)
        board._owns_client = True
        return board

    @property
    def backend(self) -> str:
        return "redis"

    async def publish(self, replica: str, breakers: Mapping[str, Mapping[str, Any]]) -> None:
        now = self._clock()
        blob = orjson.dumps({"replica": replica, "at": now, "breakers": breakers})
        replicas = replicas_key(self._prefix)
        async with self._translate("publish"):
            pipe = self._client.pipeline(transaction=False)
            pipe.set(report_key(self._prefix, replica), blob, px=self._report_ttl_ms)
            pipe.zadd(replicas, {replica: now})
            pipe.zremrangebyscore(replicas, "-inf", now - self._report_ttl_s)
            pipe.pexpire(replicas, self._report_ttl_ms)
            pipe.expire(forced_key(self._prefix), self._forced_ttl_s)
            pipe.expire(resets_key(self._prefix), self._forced_ttl_s)
            await pipe.execute()

    async def reports(self) -> list[ReplicaReport]:
        async with self._translate("reports"):
            names: list[Any] = await self._client.zrange(replicas_key(self._prefix), 0, -1)
            if not names:
                return []
            # GETs in a plain pipeline, not one MGET: on a Redis Cluster the reports live
            # in different slots, which one MGET may not span.
            pipe = self._client.pipeline(transaction=False)
            for name in names:
                pipe.get(report_key(self._prefix, _text(name)))
            blobs = await pipe.execute()
        out = []
        for blob in blobs:
            if blob is None:
                continue  # expired: that replica stopped publishing
            doc = orjson.loads(blob)
            out.append(ReplicaReport(doc["replica"], float(doc["at"]), doc["breakers"]))
        return sorted(out, key=lambda report: report.replica)

    async def withdraw(self, replica: str) -> None:
        async with self._translate("withdraw"):
            pipe = self._client.pipeline(transaction=False)
            pipe.delete(report_key(self._prefix, replica))
            pipe.zrem(replicas_key(self._prefix), replica)
            await pipe.execute()

    async def set_forced(self, agent: str, mode: Forced | None, *, by: str) -> None:
        check_ops_mode(mode)
        key = forced_key(self._prefix)
        async with self._translate("set_forced"):
            # MULTI on one Redis; on a Cluster the two hashes live in two slots, which one
            # MULTI may not span, and redis-py refuses PUBLISH in a cluster pipeline: the
            # change is written first, then announced (a listener reads it after the message).
            cluster = isinstance(self._client, aioredis.RedisCluster)
            pipe = self._client.pipeline(transaction=not cluster)
            if mode is None:
                pipe.hdel(key, agent)
                pipe.hincrby(resets_key(self._prefix), agent, 1)
                pipe.expire(resets_key(self._prefix), self._forced_ttl_s)
            else:
                entry = ForcedMode(mode, self._clock(), by)
                pipe.hset(key, agent, orjson.dumps(entry.to_dict()))
                pipe.expire(key, self._forced_ttl_s)
            await pipe.execute()
            await self._client.publish(changes_channel(self._prefix), agent)

    async def forced(self) -> dict[str, ForcedMode]:
        async with self._translate("forced"):
            raw = await self._client.hgetall(forced_key(self._prefix))
        out = {}
        for agent, blob in raw.items():
            doc = orjson.loads(blob)
            try:
                mode = Forced(doc["mode"])
            except ValueError:
                continue  # written by a newer version: ignore rather than fail every replica
            out[_text(agent)] = ForcedMode(mode, float(doc["at"]), str(doc["by"]))
        return out

    async def resets(self) -> dict[str, int]:
        async with self._translate("resets"):
            raw = await self._client.hgetall(resets_key(self._prefix))
        return {_text(agent): int(count) for agent, count in raw.items()}

    async def watch(
        self, on_change: Callable[[], None], ready: asyncio.Event | None = None
    ) -> None:
        if isinstance(self._client, aioredis.RedisCluster):
            # Its pub/sub finds a channel's node in the slot table: load it first.
            async with self._translate("watch"):
                await self._client.initialize()
        pubsub: Any = self._client.pubsub()
        try:
            async with self._translate("watch"):
                await pubsub.subscribe(changes_channel(self._prefix))
                while True:  # the confirmation: from here on, every PUBLISH reaches us
                    message = await pubsub.get_message(timeout=self._timeout_s / 2)
                    if message is not None and message.get("type") == "subscribe":
                        break
            if ready is not None:
                ready.set()
            while True:
                try:
                    # A bounded read that comes back empty rather than one that outlasts
                    # the client's command timeout and fails.
                    message = await pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=self._timeout_s / 2
                    )
                except (RedisError, OSError) as exc:
                    raise BreakerBoardError(
                        f"breaker board (watch) failed: {type(exc).__name__}: {exc}",
                        backend="redis",
                        operation="watch",
                    ) from exc
                if message is not None and message.get("type") == "message":
                    on_change()
        finally:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()

    async def close(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    @asynccontextmanager
    async def _translate(self, operation: str) -> AsyncIterator[None]:
        try:
            async with asyncio.timeout(self._timeout_s):
                yield
        except (RedisError, OSError) as exc:  # OSError covers TimeoutError
            raise BreakerBoardError(
                f"breaker board ({operation}) failed: {type(exc).__name__}: {exc}",
                backend="redis",
                operation=operation,
            ) from exc


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
