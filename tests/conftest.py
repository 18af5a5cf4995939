"""Shared fixtures: a real Redis for every test marked `redis`.

Start one with `eval "$(scripts/redis.sh)"` (a private server on 127.0.0.1:6390,
URL on db 15). Without REDIS_URL the redis tests skip locally and fail in CI
(CI=true): a CI run that silently skipped them would prove nothing.

The tests FLUSHDB the database in REDIS_URL before and after each test: never
point it at a database holding data you want to keep.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
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


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A client on a database flushed before and after the test."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        await client.flushdb()
        yield client
        await client.flushdb()
    finally:
        await client.aclose()
