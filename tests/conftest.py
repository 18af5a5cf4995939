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
