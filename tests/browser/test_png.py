"""The screenshot check tells a blank picture from a drawn one."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable

from tests.browser.cdp import png_distinct_colours


def png(width: int, height: int, pixel: Callable[[int, int], tuple[int, int, int]]) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    rows = b"".join(
        b"\x00" + b"".join(bytes(pixel(x, y)) for x in range(width)) for y in range(height)
    )
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def test_a_blank_picture_has_one_colour_and_a_drawn_one_many() -> None:
    assert png_distinct_colours(png(64, 64, lambda x, y: (255, 255, 255))) == 1
    gradient = png(64, 64, lambda x, y: (x * 4, y * 4, (x + y) % 256))
    assert png_distinct_colours(gradient) >= 16
