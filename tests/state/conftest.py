"""One `backend` fixture per store implementation, so the contract suite runs on both.

A backend builds stores (`new`), a second replica's view of the same data
(`peer`: for Redis a new client and connection; for memory, which has no other
process, the same instance), a store that must not share anything (`isolated`:
another prefix on the same Redis, another memory instance) and moves time for
one workflow (`elapse`: the fake clock for memory; for Redis every key of the
workflow has its remaining TTL shortened, which is what time passing does to
them).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
import redis.asyncio as aioredis

from state import keys
from state.connect import connect
from state.memory import MemoryStateStore
from state.models import (
    NodeFailure,
    NodeRun,
    NodeStatus,
    WorkflowError,
    WorkflowState,
    WorkflowStatus,
)
from state.redis import RedisStateStore
from state.store import StateStore
from tests.fakes import FakeClock


class MemoryBackend:
    name = "memory"

    def __init__(self) -> None:
        self.clock = FakeClock()
        self._stores: list[MemoryStateStore] = []

    async def new(
        self, *, ttl_s: int = keys.DEFAULT_TTL_S, retention_s: int | None = None
    ) -> MemoryStateStore:
        store = MemoryStateStore(ttl_s=ttl_s, retention_s=retention_s, clock=self.clock)
        self._stores.append(store)
        return store

    async def peer(self, store: StateStore) -> StateStore:
        return store

    async def isolated(self, store: StateStore) -> StateStore:
        return await self.new(ttl_s=store.ttl_s)

    async def elapse(self, store: StateStore, workflow_id: str, seconds: float) -> None:
        self.clock.advance(seconds)

    async def elapse_key(self, store: StateStore, key: str, seconds: float) -> None:
        self.clock.advance(seconds)

    async def aclose(self) -> None:
        for store in self._stores:
            await store.close()


class RedisBackend:
    name = "redis"

    def __init__(
        self, url: str, client: aioredis.Redis | aioredis.RedisCluster, prefix: str
    ) -> None:
        self.url = url
        self.client = client
        # This test's own prefix (tests/conftest.py): stores made here live under it.
        self.prefix = prefix
        self._stores: list[RedisStateStore] = []

    async def new(
        self,
        *,
        ttl_s: int = keys.DEFAULT_TTL_S,
        retention_s: int | None = None,
        prefix: str = "",
        **client_kwargs: Any,
    ) -> RedisStateStore:
        """A store under this test's prefix (`prefix` is appended to it)."""
        if not prefix.startswith(self.prefix):
            prefix = self.prefix + prefix
        # Generous bounds unless a test sets its own: the 1 s defaults are a production
        # choice, and a shared test Redis on a loaded machine can exceed them.
        client_kwargs.setdefault("connect_timeout_s", 10.0)
        client_kwargs.setdefault("command_timeout_s", 10.0)
        store = RedisStateStore.from_url(
            self.url, prefix=prefix, ttl_s=ttl_s, retention_s=retention_s, **client_kwargs
        )
        self._stores.append(store)
        return store

    async def peer(self, store: StateStore) -> StateStore:
        assert isinstance(store, RedisStateStore)
        return await self.new(
            ttl_s=store.ttl_s, retention_s=store.retention_s, prefix=store.prefix
        )

    async def isolated(self, store: StateStore) -> StateStore:
        assert isinstance(store, RedisStateStore)
        own = store.prefix[len(self.prefix) :]
        return await self.new(ttl_s=store.ttl_s, prefix="other-" + own)

    async def elapse(self, store: StateStore, workflow_id: str, seconds: float) -> None:
        assert isinstance(store, RedisStateStore)
        # Heartbeats age too: every replica's deadline moves closer by `seconds`.
        replicas = keys.replicas_key(store.prefix)
        entries = cast(
            list[tuple[bytes, float]], await self.client.zrange(replicas, 0, -1, withscores=True)
        )
        for member, score in entries:
            await self.client.zadd(replicas, {member: score - int(seconds * 1000)})
        for key in keys.refreshed_keys(store.prefix, workflow_id):
            await self.elapse_key(store, key, seconds)

    async def elapse_key(self, store: StateStore, key: str, seconds: float) -> None:
        remaining_ms = await self.client.pttl(key)
        if remaining_ms < 0:  # -2: no key, -1: no TTL (left alone so a test can see it)
            return
        left = remaining_ms - int(seconds * 1000)
        if left <= 0:
            await self.client.delete(key)
        else:
            await self.client.pexpire(key, left)

    async def aclose(self) -> None:
        for store in self._stores:
            await store.close()


class ClusterBackend(RedisBackend):
    name = "cluster"


Backend = MemoryBackend | RedisBackend


@pytest.fixture(
    params=[
        "memory",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("cluster", marks=pytest.mark.redis),
    ]
)
def _new_backend(request: pytest.FixtureRequest) -> Backend:
    # Synchronous, so it may pull the async redis fixtures in only for the redis runs.
    if request.param == "memory":
        return MemoryBackend()
    if request.param == "cluster":
        return ClusterBackend(
            request.getfixturevalue("redis_cluster_url"),
            request.getfixturevalue("redis_cluster_client"),
            request.getfixturevalue("redis_cluster_prefix"),
        )
    return RedisBackend(
        request.getfixturevalue("redis_url"),
        request.getfixturevalue("redis_client"),
        request.getfixturevalue("redis_prefix"),
    )


@pytest.fixture
async def backend(_new_backend: Backend) -> AsyncIterator[Backend]:
    """Each store implementation in turn; every store it made is closed afterwards."""
    try:
        yield _new_backend
    finally:
        await _new_backend.aclose()


@pytest.fixture
async def redis_backend(
    redis_url: str, redis_client: aioredis.Redis, redis_prefix: str
) -> AsyncIterator[RedisBackend]:
    made = RedisBackend(redis_url, redis_client, redis_prefix)
    try:
        yield made
    finally:
        await made.aclose()


@pytest.fixture
async def redis_cluster_client(redis_cluster_url: str) -> AsyncIterator[aioredis.RedisCluster]:
    client = connect(redis_cluster_url)
    assert isinstance(client, aioredis.RedisCluster)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def store(backend: Backend) -> StateStore:
    return await backend.new()


def new_id() -> str:
    return uuid.uuid4().hex


def make_state(
    workflow_id: str | None = None, status: WorkflowStatus = WorkflowStatus.RUNNING
) -> WorkflowState:
    """A realistic document: finished, failed, fallen-back and pending steps."""
    return WorkflowState(
        workflow_id=workflow_id or new_id(),
        definition_name="chain",
        status=status,
        inputs={"query": "sales by region", "limit": 10, "nested": {"ok": True, "xs": [1, 2.5]}},
        steps={
            "nlp": NodeRun(
                step_id="nlp",
                kind="agent",
                agent="nlp",
                status=NodeStatus.COMPLETED,
                attempts=2,
                started_at=1700000000.125,
                finished_at=1700000000.5,
                output={"intent": "aggregate", "entities": ["region"]},
                fallback="nlp: 503 Service Unavailable; used keyword_intent",
            ),
            "data": NodeRun(
                step_id="data",
                kind="agent",
                agent="data",
                status=NodeStatus.FAILED,
                attempts=3,
                started_at=1700000000.5,
                finished_at=1700000001.75,
                error=NodeFailure(
                    type="AgentUnavailable",
                    message="data: connection refused",
                    agent="data",
                    attempts=3,
                    input={"intent": "aggregate"},
                ),
            ),
            "viz": NodeRun(
                step_id="viz",
                kind="agent",
                agent="viz",
                status=NodeStatus.SKIPPED,
                skip_reason="dependency data failed",
            ),
        },
        result={"rows": [{"region": "EU", "total": 12.5}], "unicode": "Zürich ✓"},
        error=WorkflowError(
            code="step_failed", message="data failed", step_id="data", agent="data"
        ),
        created_at=1700000000.0,
        updated_at=1700000001.75,
        owner="replica-a",
    )
