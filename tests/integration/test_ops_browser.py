"""The ops page in a real browser: Debian's Chromium, headless, over the DevTools protocol."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.browser.cdp import chromium_path, launch, png_distinct_colours
from tests.browser.ops_demo import drive_ops_page, serve_demo
from tests.integration.principals import KEYS, access_config


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


@pytest.mark.timeout(120)
async def test_the_ops_page_works_with_api_keys(chromium: str, tmp_path: Path) -> None:
    """Keys configured: 401 shown until a key is typed; then the same scenario passes."""
    async with (
        serve_demo(access=access_config(), key=KEYS["admin"]) as demo,
        launch(chromium) as page,
    ):
        data = await drive_ops_page(demo, page, tmp_path / "ops.png")
    assert png_distinct_colours(data) >= 16
