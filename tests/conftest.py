"""Shared fixtures: a real Redis for every test marked `redis`.

Start one with `eval "$(scripts/redis.sh)"` (a private server on 127.0.0.1:6390,
URL on db 15). Without REDIS_URL the redis tests skip locally and fail in CI
(CI=true): a CI run that silently skipped them would prove nothing.

Nothing is ever flushed: every test that touches Redis works under its own key
prefix (`redis_prefix`: this run's id plus a counter), and only the keys under
it are deleted afterwards. Two suites (CI and a developer, two worktrees) can
share one Redis without breaking each other.
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis
import redis.asyncio as aioredis
import structlog

from orchestrator.logs import merge_node_context


def _configure_test_logging() -> None:
    """structlog's own default console lines, but tracebacks printed plainly.

    The default renders an exception with rich, every frame's locals included: a
    single `log.exception` cost seconds of CPU on a loaded machine, all of it on the
    event loop, so agent calls of the test timed out meanwhile (the data agent was
    called twice in test_redis_outages.py). The service itself logs JSON with plain
    tracebacks (orchestrator/logs.py), and rich is only a test dependency.
    """
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            merge_node_context,
            structlog.processors.add_log_level,
            structlog.processors.StackInfoRenderer(),
            structlog.dev.set_exc_info,
            structlog.processors.TimeStamper(fmt="%Y-%m-%d %H:%M:%S", utc=False),
            structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback),
        ]
    )


_configure_test_logging()


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The test Redis from REDIS_URL; skip locally, fail in CI, when there is none."""
    url = os.environ.get("REDIS_URL", "").strip()
    if url:
        return url
    if _in_ci():
        pytest.fail(
            "REDIS_URL is not set and CI=true: the redis tests must run in CI. "
            'Start one with `eval "$(scripts/redis.sh)"` before pytest.',
            pytrace=False,
        )
    pytest.skip('needs Redis: run `eval "$(scripts/redis.sh)"` to start one and set REDIS_URL')


# One id per pytest run, and a counter per test: every prefix is unique to one test.
RUN_ID = uuid.uuid4().hex[:10]
_TEST_NUMBERS = itertools.count(1)


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix no other test or run uses; every key containing it is deleted after.

    Synchronous (a blocking client for the clean-up), so async fixtures can pull it
    in with `request.getfixturevalue`.
    """
    token = f"{RUN_ID}-{next(_TEST_NUMBERS)}"
    yield f"t:{token}:"
    with redis.Redis.from_url(redis_url) as client:
        # Derived prefixes ("t:<token>:other-") are covered too: match the token anywhere.
        doomed = list(client.scan_iter(match=f"*{token}:*", count=1000))
        if doomed:
            client.delete(*doomed)


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A plain client on the test Redis; write only under `redis_prefix` with it."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture(scope="session")
def redis_cluster_url() -> str:
    """The test Redis Cluster (scripts/redis-cluster.sh); skip locally, fail in CI, when none."""
    url = os.environ.get("REDIS_CLUSTER_URL", "").strip()
    if url:
        return url
    if _in_ci():
        pytest.fail(
            "REDIS_CLUSTER_URL is not set and CI=true: the cluster tests must run in CI. "
            'Start one with `eval "$(scripts/redis-cluster.sh)"` before pytest.',
            pytrace=False,
        )
    pytest.skip('needs a Redis Cluster: run `eval "$(scripts/redis-cluster.sh)"`')


@pytest.fixture
def redis_cluster_prefix(redis_cluster_url: str) -> Iterator[str]:
    """Like `redis_prefix`, on the cluster: its keys are deleted from every node after."""
    token = f"{RUN_ID}-{next(_TEST_NUMBERS)}"
    yield f"t:{token}:"
    from state.connect import is_cluster_url

    url = redis_cluster_url
    if is_cluster_url(url):
        url = "redis://" + url.split("://", 1)[1]
    with redis.RedisCluster.from_url(url) as client:
        for key in list(client.scan_iter(match=f"*{token}:*", count=1000)):
            client.delete(key)
