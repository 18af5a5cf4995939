"""Drive Debian's Chromium headless over the Chrome DevTools Protocol (no Playwright, no download).

`launch()` starts /usr/bin/chromium with a fresh profile and an OS-assigned
debugging port, and yields a `Page` connected to its first tab over a WebSocket
(aiohttp's client). The page records console errors, uncaught exceptions and
failed loads as they happen (`errors`), evaluates JavaScript (`evaluate`), waits
for a condition inside the page (`wait_for`: a promise that resolves on the next
animation frame where the condition holds, so Python never sleeps), and takes
screenshots.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import os
import shutil
import struct
import tempfile
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--window-size=1400,900",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)
START_TIMEOUT_S = 30.0
CALL_TIMEOUT_S = 20.0


def chromium_path() -> str | None:
    if os.path.exists(CHROMIUM):
        return CHROMIUM
    return shutil.which("chromium")


class Page:
    """One tab: CDP commands, recorded errors, JS evaluation and waits."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.errors: list[str] = []
        self._reader = asyncio.create_task(self._read())

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        call_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[call_id] = future
        await self._ws.send_json({"id": call_id, "method": method, "params": params})
        async with asyncio.timeout(CALL_TIMEOUT_S):
            return await future

    async def evaluate(self, expression: str, *, timeout_s: float = CALL_TIMEOUT_S) -> Any:
        async with asyncio.timeout(timeout_s + 1):
            reply = await self._send_unbounded(
                "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
            )
        if "exceptionDetails" in reply:
            details = reply["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise AssertionError(f"page script failed: {text}")
        return reply["result"].get("value")

    async def wait_for(self, condition: str, *, timeout_s: float = 15.0) -> Any:
        """Resolve when the JS expression `condition` is truthy (checked every frame)."""
        script = f"""
        new Promise((resolve, reject) => {{
          const until = performance.now() + {timeout_s * 1000};
          const check = () => {{
            let value;
            try {{ value = ({condition}); }} catch (e) {{ value = undefined; }}
            if (value) return resolve(value);
            if (performance.now() > until) return reject(new Error("timed out: " + {condition!r}));
            requestAnimationFrame(check);
          }};
          check();
        }})"""
        return await self.evaluate(script, timeout_s=timeout_s)

    async def navigate(self, url: str) -> None:
        await self.send("Page.navigate", url=url)
        await self.wait_for("document.readyState === 'complete'")

    async def screenshot(self, path: Path) -> bytes:
        reply = await self.send("Page.captureScreenshot", format="png")
        data = base64.b64decode(reply["data"])
        await asyncio.to_thread(path.write_bytes, data)
        return data

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        await self._ws.close()

    async def _send_unbounded(self, method: str, **params: Any) -> dict[str, Any]:
        call_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[call_id] = future
        await self._ws.send_json({"id": call_id, "method": method, "params": params})
        return await future

    async def _read(self) -> None:
        async for message in self._ws:
            if message.type is not aiohttp.WSMsgType.TEXT:
                continue
            data = message.json()
            if "id" in data:
                future = self._pending.pop(data["id"], None)
                if future is not None and not future.done():
                    if "error" in data:
                        future.set_exception(AssertionError(f"CDP error: {data['error']}"))
                    else:
                        future.set_result(data.get("result", {}))
                continue
            self._record(data.get("method", ""), data.get("params", {}))

    def _record(self, method: str, params: dict[str, Any]) -> None:
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            args = [str(a.get("value", a.get("description", ""))) for a in params.get("args", [])]
            self.errors.append("console: " + " ".join(args))
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            text = details.get("exception", {}).get("description") or details.get("text", "")
            self.errors.append("exception: " + text)
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            where = f"{entry.get('text')} {entry.get('url', '')}"
            self.errors.append(f"log ({entry.get('source')}): {where}")


@contextlib.asynccontextmanager
async def launch(executable: str) -> AsyncIterator[Page]:
    """Chromium headless with a fresh profile; yields its first tab, ready to navigate."""
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        proc = await asyncio.create_subprocess_exec(
            executable,
            *FLAGS,
            f"--user-data-dir={profile}",
            "about:blank",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        drain: asyncio.Task[None] | None = None
        try:
            assert proc.stderr is not None
            endpoint = await _devtools_endpoint(proc.stderr)
            # Keep reading its stderr so a chatty browser never blocks on a full pipe.
            drain = asyncio.create_task(_drain(proc.stderr))
            async with aiohttp.ClientSession() as session:
                port = endpoint.split(":")[2].split("/")[0]
                async with session.get(f"http://127.0.0.1:{port}/json/list") as response:
                    targets = await response.json()
                page_ws = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
                ws = await session.ws_connect(page_ws, max_msg_size=0)
                page = Page(ws)
                try:
                    for domain in ("Page", "Runtime", "Log"):
                        await page.send(f"{domain}.enable")
                    yield page
                finally:
                    await page.close()
        finally:
            if proc.returncode is None:
                proc.terminate()
                try:
                    async with asyncio.timeout(10):
                        await proc.wait()
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
            if drain is not None:
                drain.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await drain


async def _devtools_endpoint(stderr: asyncio.StreamReader) -> str:
    seen: list[str] = []
    async with asyncio.timeout(START_TIMEOUT_S):
        while True:
            raw = await stderr.readline()
            if not raw:
                raise AssertionError("chromium exited before listening:\n" + "".join(seen[-20:]))
            line = raw.decode(errors="replace")
            seen.append(line)
            if line.startswith("DevTools listening on "):
                return line.removeprefix("DevTools listening on ").strip()


async def _drain(stderr: asyncio.StreamReader) -> None:
    while await stderr.read(65536):
        pass


def png_distinct_colours(data: bytes, *, limit: int = 64) -> int:
    """How many distinct pixel values (up to `limit`) a PNG's decoded image holds.

    A blank (single-colour) screenshot gives 1. Enough of PNG to read Chromium's
    output: 8-bit RGB/RGBA, non-interlaced, scanline filters undone.
    """
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat = 8, b""
    width = height = channels = 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and colour in (2, 6), (depth, colour)
            channels = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * channels
    previous = bytearray(stride)
    colours: set[bytes] = set()
    for row in range(height):
        start = row * (stride + 1)
        scanline = bytearray(raw[start + 1 : start + 1 + stride])
        line = _unfilter(raw[start], scanline, previous, channels)
        if row % 8 == 0:  # a sample of rows is plenty to tell blank from not
            for x in range(0, stride, channels * 4):
                colours.add(bytes(line[x : x + 3]))
                if len(colours) >= limit:
                    return len(colours)
        previous = line
    return len(colours)


def _unfilter(kind: int, line: bytearray, previous: bytearray, channels: int) -> bytearray:
    """Undo one scanline's PNG filter (None, Sub, Up, Average, Paeth)."""
    if kind == 0:
        return line
    for i in range(len(line)):
        left = line[i - channels] if i >= channels else 0
        up = previous[i]
        if kind == 1:
            line[i] = (line[i] + left) & 0xFF
        elif kind == 2:
            line[i] = (line[i] + up) & 0xFF
        elif kind == 3:
            line[i] = (line[i] + (left + up) // 2) & 0xFF
        else:
            corner = previous[i - channels] if i >= channels else 0
            p = left + up - corner
            pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
            pred = left if pa <= pb and pa <= pc else (up if pb <= pc else corner)
            line[i] = (line[i] + pred) & 0xFF
    return line
