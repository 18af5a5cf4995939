"""The Batcher keeps the loop it queues on only while that loop runs."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from state.redis_batch import Batcher


def test_a_batcher_queues_on_the_loop_that_runs_now() -> None:
    """A batcher used under one loop, then under another (a loop per `asyncio.run`):
    its commands' futures belong to the loop running when they are queued."""
    batcher = Batcher(aioredis.Redis(port=1))

    async def queued_on_this_loop() -> bool:
        future = batcher.call(("PING",))
        on_this_loop = future.get_loop() is asyncio.get_running_loop()
        future.cancel()
        return on_this_loop

    assert asyncio.run(queued_on_this_loop())
    assert asyncio.run(queued_on_this_loop())
