"""Benchmark: one `Batcher` round trip at 1 in flight (the accept's and the end's shape).

    REDIS_URL=redis://127.0.0.1:6411/14 .venv/bin/python -m bench.batcher [--batches 3000]

Sends 3-command batches one after another (nothing else in flight, as a sync request
waits on its accept and its terminal write) and prints the process CPU time and the
median wall time per round trip. Run it against two trees (PYTHONPATH) in turns to
compare; it writes one key under `bench:batcher:` and deletes it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid


async def main(batches: int) -> None:
    from state.connect import connect
    from state.redis_batch import Batcher

    client = connect(os.environ["REDIS_URL"])
    batcher = Batcher(client)
    key = f"bench:batcher:{uuid.uuid4().hex[:8]}"

    async def one() -> None:
        await asyncio.gather(
            batcher.call(("SET", key, "1")),
            batcher.call(("EXPIRE", key, 60)),
            batcher.call(("GET", key)),
        )

    try:
        for _ in range(min(300, batches)):  # warm-up: the connection, the caches
            await one()
        latencies: list[float] = []
        cpu = time.process_time()
        for _ in range(batches):
            start = time.perf_counter()
            await one()
            latencies.append(time.perf_counter() - start)
        cpu = time.process_time() - cpu
        print(
            f"round trip at 1 in flight: CPU {cpu / batches * 1e6:.1f} us, "
            f"wall p50 {statistics.median(latencies) * 1e6:.1f} us ({batches} batches)"
        )
    finally:
        await client.delete(key)
        await client.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", type=int, default=3_000)
    asyncio.run(main(parser.parse_args().batches))
