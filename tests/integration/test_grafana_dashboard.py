"""The shipped Grafana dashboard queries only series the service really exposes."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "orchestrator.json"
_SUFFIXES = ("_total", "_bucket", "_count", "_sum")


async def test_every_dashboard_query_names_an_exposed_metric(api: Any) -> None:
    """Each orch_* name in a panel's PromQL is a family in GET /metrics (suffixes aside)."""
    client = await api()
    await client.post("/api/query", json={"query": "revenue by region"})
    text = await (await client.get("/metrics")).text()
    families = {f.name for f in text_string_to_metric_families(text)}
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert len(exprs) >= 16
    used = set()
    for expr in exprs:
        for name in re.findall(r"\b(orch_[a-z_]+)", expr):
            base = next((name[: -len(s)] for s in _SUFFIXES if name.endswith(s)), name)
            assert base in families, (name, expr)
            used.add(base)
    # Every family the service exposes is on the dashboard.
    # (`*_created` are prometheus_client's creation timestamps, not series to chart.)
    exposed = {f for f in families if f.startswith("orch_") and not f.endswith("_created")}
    assert used == exposed
