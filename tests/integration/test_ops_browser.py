"""The ops page in a real browser: Debian's Chromium, headless, over the DevTools protocol."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.browser.cdp import chromium_path, launch, png_distinct_colours
from tests.browser.ops_demo import drive_ops_page, serve_demo


@pytest.fixture
def chromium() -> str:
    """The system Chromium; skip locally, fail in CI (CI=true), when it is missing."""
    path = chromium_path()
    if path is not None:
        return path
    message = "chromium is not installed (scripts/test.sh installs it with apt-get)"
    if os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.mark.timeout(120)
async def test_the_ops_page_works_in_chromium(chromium: str, tmp_path: Path) -> None:
    """No console error; 3 breakers; open/reset clicks reach the API; nodes recolour live."""
    shot = tmp_path / "ops.png"
    async with serve_demo() as demo, launch(chromium) as page:
        data = await drive_ops_page(demo, page, shot)
    assert shot.read_bytes() == data
    assert png_distinct_colours(data) >= 16  # not a blank page
