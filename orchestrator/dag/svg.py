"""A workflow's plan drawn as SVG: one column per level, nodes coloured by step status.

The same picture serves `POST /api/workflows/plan.svg` (any submitted definition),
`GET /api/workflow/{id}/plan.svg` (a workflow, coloured by its steps' current
status) and the ops page, which recolours it live from the event stream: each node
is a `<g class="node st-<status>" data-node="<id>">`, so changing its class changes
its colour. The styles travel inside the SVG, so the file stands alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from xml.sax.saxutils import escape, quoteattr

from orchestrator.dag.plan import Plan

NODE_W, NODE_H = 168, 46
GAP_X, GAP_Y = 56, 18
PAD = 16
_MAX_LABEL = 22

STATUS_COLOURS = {
    "pending": ("#eef1f5", "#9aa5b1"),
    "running": ("#dbeafe", "#2563eb"),
    "completed": ("#dcfce7", "#16a34a"),
    "fell_back": ("#fef9c3", "#ca8a04"),
    "failed": ("#fee2e2", "#dc2626"),
    "skipped": ("#f3f4f6", "#6b7280"),
    "cancelled": ("#ede9fe", "#7c3aed"),
}

_STYLE = "".join(
    f".st-{status} rect{{fill:{fill};stroke:{stroke}}}"
    for status, (fill, stroke) in STATUS_COLOURS.items()
) + (
    ".node rect{stroke-width:2}"
    ".node text{font:12px ui-monospace,monospace;fill:#111827}"
    ".node text.sub{font-size:10px;fill:#4b5563}"
    ".edge{fill:none;stroke:#94a3b8;stroke-width:1.5}"
    ".critical{stroke:#f97316;stroke-width:2}"
)


def plan_svg(
    plan: Plan,
    *,
    kinds: Mapping[str, str] | None = None,
    agents: Mapping[str, str | None] | None = None,
    statuses: Mapping[str, str] | None = None,
    title: str | None = None,
) -> str:
    """The SVG document of `plan`. `kinds` / `agents` label the nodes; `statuses` colour
    them (a step status, or "fell_back"; default "pending")."""
    kinds = kinds or {}
    agents = agents or {}
    statuses = statuses or {}
    where: dict[str, tuple[int, int]] = {}
    for col, level in enumerate(plan.levels):
        for row, node_id in enumerate(level):
            where[node_id] = (PAD + col * (NODE_W + GAP_X), PAD + row * (NODE_H + GAP_Y))
    tallest = max((len(level) for level in plan.levels), default=0)
    width = PAD * 2 + max(len(plan.levels) * (NODE_W + GAP_X) - GAP_X, 0)
    height = PAD * 2 + max(tallest * (NODE_H + GAP_Y) - GAP_Y, 0)
    on_path = set(zip(plan.critical_path, plan.critical_path[1:], strict=False))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" class="plan">'
    ]
    if title:
        parts.append(f"<title>{escape(title)}</title>")
    parts.append(f"<style>{_STYLE}</style>")
    for node_id, deps in plan.dependencies.items():
        x2, y2 = where[node_id]
        for dep in deps:
            x1, y1 = where[dep]
            sx, sy, ex, ey = x1 + NODE_W, y1 + NODE_H // 2, x2, y2 + NODE_H // 2
            mid = (sx + ex) // 2
            cls = "edge critical" if (dep, node_id) in on_path else "edge"
            parts.append(
                f'<path class="{cls}" d="M{sx},{sy} C{mid},{sy} {mid},{ey} {ex},{ey}"/>'
            )
    for node_id, (x, y) in where.items():
        status = statuses.get(node_id, "pending")
        if status not in STATUS_COLOURS:
            status = "pending"
        sub = agents.get(node_id) or kinds.get(node_id) or ""
        parts.append(
            f'<g class="node st-{status}" data-node={quoteattr(node_id)} '
            f'transform="translate({x},{y})">'
            f"<title>{escape(node_id)}</title>"
            f'<rect width="{NODE_W}" height="{NODE_H}" rx="8"/>'
            f'<text x="10" y="19">{escape(_short(node_id))}</text>'
            f'<text class="sub" x="10" y="35">{escape(_short(sub))}</text>'
            "</g>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _short(text: str) -> str:
    return text if len(text) <= _MAX_LABEL else text[: _MAX_LABEL - 1] + "…"
