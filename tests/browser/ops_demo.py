"""The ops page scenario the browser test checks and the README screenshot shows.

`serve_demo()` runs the three reference agents and the orchestrator on
127.0.0.1 (OS-assigned ports, memory store). `drive_ops_page()` opens /ops in
headless Chromium and checks, in order: it loads with no console error; it
shows the three breakers; clicking "force open" then "reset" on one changes its
state as the API reports it; a running workflow's nodes change colour as its
steps finish. It saves a screenshot and returns it.

    python -m tests.browser.ops_demo docs/ops-page.png    # the README's picture
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from agents.reference import start_agent
from agents.registry import AgentRegistry
from orchestrator.access.config import AccessConfig
from orchestrator.app import create_app
from orchestrator.settings import Settings, default_registry
from tests.browser.cdp import Page, chromium_path, launch, png_distinct_colours

QUESTION = "average revenue by region in 2024"
# Slow enough that the page sees the chain's steps run one after another.
STEP_DELAY_MS = 700


@dataclass
class Demo:
    base_url: str
    agent_urls: dict[str, str]
    http: aiohttp.ClientSession
    # With API keys configured: the key the test types into the page and uses itself.
    key: str | None = None

    async def api(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        async with self.http.request(
            method, self.base_url + path, headers=headers, **kwargs
        ) as response:
            return await response.json()

    async def control(self, agent: str, **options: Any) -> None:
        async with self.http.post(self.agent_urls[agent] + "/control", json=options) as response:
            response.raise_for_status()


@contextlib.asynccontextmanager
async def serve_demo(
    access: AccessConfig | None = None, key: str | None = None
) -> AsyncIterator[Demo]:
    runners: list[web.AppRunner] = []
    try:
        urls: dict[str, str] = {}
        for name in ("nlp", "data", "viz"):
            runner, port = await start_agent(name, host="127.0.0.1", port=0)
            runners.append(runner)
            urls[name] = f"http://127.0.0.1:{port}"
        specs = [dataclasses.replace(s, url=urls[s.name]) for s in default_registry().values()]
        settings = Settings(agents=AgentRegistry(specs))
        if access is not None:
            settings = dataclasses.replace(settings, access=access)
        app = create_app(settings)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        async with aiohttp.ClientSession() as http:
            yield Demo(f"http://127.0.0.1:{port}", urls, http, key)
    finally:
        for runner in reversed(runners):
            await runner.cleanup()


async def breaker_state(demo: Demo, agent: str) -> str:
    body = await demo.api("GET", "/api/circuit-breakers/status")
    return str(body["breakers"][agent]["state"])


async def drive_ops_page(demo: Demo, page: Page, screenshot: Path) -> bytes:
    await page.navigate(demo.base_url + "/ops")
    if demo.key is not None:
        # Keys are configured: without one the page says so (its requests get 401)...
        await page.wait_for(
            "document.getElementById('error').textContent.includes('unauthorized')"
        )
        # ...and once the key is typed in (kept for the tab), it works.
        await page.evaluate(f"sessionStorage.setItem('orch-api-key', {demo.key!r}), true")
        await page.navigate(demo.base_url + "/ops")
        page.errors.clear()  # the 401s above were expected
    rows = await page.wait_for(
        "document.querySelectorAll('#breakers tbody tr').length === 3 && "
        "[...document.querySelectorAll('#breakers tbody tr')].map(r => r.dataset.agent)"
    )
    assert sorted(rows) == ["data", "nlp", "viz"], rows

    # Force open then reset the viz breaker with the page's buttons; the API agrees each time.
    viz_row = "document.querySelector('#breakers tr[data-agent=viz]')"
    for action, state in (("open", "open"), ("reset", "closed")):
        button = f"button[data-action={action}][data-agent=viz]"
        await page.evaluate(f"document.querySelector({button!r}).click()")
        await page.wait_for(f"{viz_row}.dataset.state === {state!r}")
        assert await breaker_state(demo, "viz") == state

    # A running workflow: its nodes change colour as its steps finish.
    for agent in ("nlp", "data", "viz"):
        await demo.control(agent, delay_ms=STEP_DELAY_MS)
    accepted = await demo.api("POST", "/api/query", json={"query": QUESTION, "mode": "async"})
    workflow_id = accepted["workflow_id"]
    await page.evaluate(
        """(() => {
          window.__colours = [];
          new MutationObserver(records => {
            for (const r of records) {
              const node = r.target.closest && r.target.closest('g.node');
              if (node) window.__colours.push([node.dataset.node, node.getAttribute('class')]);
            }
          }).observe(document.getElementById('dag'), {
            subtree: true, childList: true, attributes: true, attributeFilter: ['class']
          });
          return true;
        })()"""
    )
    await page.evaluate(f"select({workflow_id!r}), true")
    await page.wait_for("document.querySelectorAll('#dag g.node').length === 3")
    # Still running when the page drew it: what follows is live.
    status = await demo.api("GET", f"/api/workflow/{workflow_id}/status")
    assert status["status"] == "running", status["status"]
    await page.wait_for(
        "document.querySelector('#dag g.node[data-node=viz]').getAttribute('class') === "
        "'node st-completed'",
        timeout_s=20.0,
    )
    changes = await page.evaluate("window.__colours")
    for step in ("nlp", "data", "viz"):
        seen = [cls for node, cls in changes if node == step]
        assert "node st-running" in seen and seen[-1] == "node st-completed", (step, seen)
        assert seen.index("node st-running") < len(seen) - 1
    final = await demo.api("GET", f"/api/workflow/{workflow_id}/status")
    assert final["status"] == "completed"
    await page.wait_for(
        f"document.querySelector('#workflows tr[data-workflow=\"{workflow_id}\"]') !== null"
    )
    # Let the last repaint land: wait for the terminal event in the page's event log.
    await page.wait_for(
        "document.getElementById('events').textContent.includes('workflow.completed')"
    )
    data = await page.screenshot(screenshot)
    assert page.errors == [], page.errors
    return data


async def main(out: Path) -> None:
    executable = chromium_path()
    if executable is None:
        raise SystemExit("no chromium: apt-get install chromium")
    async with serve_demo() as demo, launch(executable) as page:
        data = await drive_ops_page(demo, page, out)
    print(f"{out}: {len(data)} bytes, {png_distinct_colours(data)} colours sampled")


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1] if len(sys.argv) > 1 else "ops-page.png")))
