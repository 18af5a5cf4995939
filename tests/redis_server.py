"""A private redis-server a test starts, stops, restarts and freezes itself.

Outage and crash tests need a Redis they may break without touching the shared
one in REDIS_URL: this starts `redis-server` on 127.0.0.1 on a port of its own
(tests/ports.py: one no other suite on the machine uses), with its files in a
temporary folder, optionally with AOF (`appendfsync always`) so a restart keeps
everything. Locally a missing `redis-server` skips; with CI=true it fails.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from tests.ports import free_port


def require_redis_server() -> str:
    path = shutil.which("redis-server")
    if path is not None:
        return path
    if os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}:
        pytest.fail("redis-server is not installed and CI=true", pytrace=False)
    pytest.skip("needs redis-server on PATH (scripts/redis.sh installs it)")


class RedisServer:
    """One redis-server process: `start`, `kill` (SIGKILL), `stop` (SIGTERM), `freeze`
    (SIGSTOP), `thaw` (SIGCONT). Restarting reuses its port and folder (its AOF)."""

    def __init__(self, binary: str, folder: Path, *, aof: bool) -> None:
        self.binary = binary
        self.folder = folder
        self.aof = aof
        self.port = free_port()
        self.process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        for _ in range(5):  # something else may have taken the port meanwhile: pick again
            args = [
                self.binary,
                "--bind", "127.0.0.1",
                "--port", str(self.port),
                "--dir", str(self.folder),
                "--save", "",
                "--maxmemory-policy", "noeviction",
                "--appendonly", "yes" if self.aof else "no",
                "--appendfsync", "always",
                "--logfile", str(self.folder / "redis.log"),
            ]  # fmt: skip
            self.process = await asyncio.create_subprocess_exec(
                *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
            )
            if await self._answering():
                return
            await self.kill()
            if self.aof:
                raise AssertionError(f"redis-server could not take port {self.port} again")
            self.port = free_port()
        raise AssertionError("redis-server did not start")

    async def _answering(self) -> bool:
        """True once *this* process answers on the port (checked by its pid: a server of
        another suite on the same port does not count); False if it exited."""
        assert self.process is not None
        # Bounded, generously: loading an AOF on a loaded machine is slow, and a count of
        # polls (5 s in all) was not always enough.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.returncode is not None:
                return False
            if await self.pid() == self.process.pid:
                return True
            await asyncio.sleep(0.025)
        return False

    async def kill(self) -> None:
        await self._end(signal.SIGKILL)

    async def stop(self) -> None:
        await self._end(signal.SIGTERM)

    def freeze(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    async def _end(self, sig: signal.Signals) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        process.send_signal(signal.SIGCONT)  # a frozen server cannot act on SIGTERM
        process.send_signal(sig)
        async with asyncio.timeout(10):
            await process.wait()

    async def pid(self) -> int | None:
        """The process id of the redis-server answering on our port, if any."""
        client = aioredis.Redis.from_url(self.url, socket_timeout=0.5, socket_connect_timeout=0.5)
        try:
            info = await client.info("server")
            return int(info["process_id"])
        except (OSError, RedisError):
            return None
        finally:
            await client.aclose()


async def redis_server(tmp_path: Path, *, aof: bool) -> AsyncIterator[RedisServer]:
    """Body of a fixture: a started server, killed at the end whatever the test did."""
    server = RedisServer(require_redis_server(), tmp_path, aof=aof)
    await server.start()
    try:
        yield server
    finally:
        await server.kill()
