"""A compiled workflow's plan as an SVG response (optionally coloured by a workflow's steps)."""

from __future__ import annotations

from aiohttp import web

from orchestrator.dag.compiler import CompiledWorkflow
from orchestrator.dag.plan import plan_workflow
from orchestrator.dag.svg import plan_svg
from state.models import NodeStatus, WorkflowState

SVG_TYPE = "image/svg+xml"


def svg_of(workflow: CompiledWorkflow, state: WorkflowState | None = None) -> web.Response:
    statuses: dict[str, str] = {}
    if state is not None:
        for node_id, run in state.steps.items():
            fell_back = run.status is NodeStatus.COMPLETED and run.fallback is not None
            statuses[node_id] = "fell_back" if fell_back else run.status.value
    nodes = workflow.nodes
    body = plan_svg(
        plan_workflow(workflow),
        kinds={node_id: cn.node.kind for node_id, cn in nodes.items()},
        agents={node_id: cn.agent for node_id, cn in nodes.items()},
        statuses=statuses,
        title=workflow.definition.name,
    )
    return web.Response(text=body, content_type=SVG_TYPE, charset="utf-8")
