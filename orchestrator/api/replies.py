"""The API's response bodies, one typed model each (msgspec Structs), built from our objects.

Routes answer with these (api/routes.py `json_response` encodes them) and the
OpenAPI document's response schemas are generated from them (api/schemas.py), so
what is served and what is documented are the same declaration. Fields without a
default are always present (null where the type allows it); `UNSET` fields are
left out of the JSON when they do not apply (the chain's `intent`/`data`/`chart`,
a breaker's deployment view on an ops action's answer).

The state documents themselves (state/models.py) are the store's; `Workflow.of`
is the one place the API turns one into its public shape.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

import msgspec
from msgspec import UNSET, Meta, UnsetType

from orchestrator.chain import CHAIN_NAME
from state.models import NodeRun, NodeStatus, WorkflowState, WorkflowStatus, milliseconds
from state.schedules import Misfire

__all__ = [
    "Accepted",
    "Breaker",
    "Breakers",
    "Cancelled",
    "Health",
    "History",
    "Metrics",
    "OpsWorkflows",
    "Paused",
    "Ready",
    "Schedule",
    "Schedules",
    "Validated",
    "Workflow",
]

Epoch = Annotated[float, Meta(description="epoch seconds")]
Count = Annotated[int, Meta(ge=0)]

# What encodes the values `Workflow.of` hands over encoded (msgspec.Raw): the routes'
# encoder's settings (msgspec's defaults), so their bytes are the ones the routes would
# have written for them.
_encode = msgspec.json.Encoder().encode


# -- workflows ---------------------------------------------------------------------------


class NodeFailure(msgspec.Struct, frozen=True, kw_only=True):
    """Why a node failed (`steps[].error`)."""

    type: str
    message: str
    agent: str | None
    attempts: Count
    input: Annotated[Any, Meta(description="what the step was given")]


class Step(msgspec.Struct, frozen=True):
    # Positional (not kw_only), as is Workflow: built per step of every answer, and
    # twelve keywords cost msgspec a match each.
    step_id: str
    kind: str
    agent: str | None
    status: NodeStatus
    attempts: Count
    started_at: Epoch | None
    finished_at: Epoch | None
    duration_ms: float | None
    output: Any
    error: NodeFailure | None
    fallback: Annotated[str | None, Meta(description="why the fallback's output was used")]
    skip_reason: str | None

    @classmethod
    def of(cls, run: NodeRun) -> Step:
        error = run.error
        return cls(
            run.step_id,
            run.kind,
            run.agent,
            run.status,
            run.attempts,
            run.started_at,
            run.finished_at,
            run.duration_ms,
            run.output,
            None
            if error is None
            else NodeFailure(
                type=error.type,
                message=error.message,
                agent=error.agent,
                attempts=error.attempts,
                input=error.input,
            ),
            run.fallback,
            run.skip_reason,
        )


class WorkflowError(msgspec.Struct, frozen=True, kw_only=True):
    """Why a workflow failed (or was cancelled)."""

    code: str
    message: str
    step_id: str | None
    agent: str | None


class Fallback(msgspec.Struct, frozen=True, kw_only=True):
    step_id: str
    reason: str


class Workflow(msgspec.Struct, frozen=True):
    """A workflow's state. For the chain (`definition_name` "chain"), the NLP agent's
    `intent`, the Data agent's `data` and the Viz agent's `chart` are also at the top
    level (the frontend's contract)."""

    # Positional, not kw_only: `of` builds one per answer (a sync query's, a status
    # read's), and passing its twenty fields by keyword, through a dict merged from the
    # chain's lifted fields and a subclass's own, was two thirds of its cost. A
    # subclass's own fields are keyword-only (Cancelled, Paused).

    workflow_id: str
    definition_name: str
    status: WorkflowStatus
    inputs: dict[str, Any]
    steps: dict[str, Step]
    fallbacks: Annotated[list[Fallback], Meta(description="steps that fell back, and why")]
    result: Any
    error: WorkflowError | None
    created_at: Epoch
    updated_at: Epoch
    finished_at: Epoch | None
    duration_ms: float | None
    owner: Annotated[str | None, Meta(description="the replica running it")]
    definition: Annotated[
        dict[str, Any] | None, Meta(description="the submitted definition (null: built-in)")
    ]
    schedule_id: Annotated[str | None, Meta(description="the schedule that started it")]
    tenant: str | None
    submit_key: Annotated[str | None, Meta(description="the Idempotency-Key it was sent with")]
    intent: Annotated[Any, Meta(description="the chain only: the NLP agent's intent")] | (
        UnsetType
    ) = UNSET
    data: Annotated[Any, Meta(description="the chain only: the Data agent's rows")] | (
        UnsetType
    ) = UNSET
    chart: Annotated[Any, Meta(description="the chain only: the Vega-Lite spec, or null")] | (
        UnsetType
    ) = UNSET

    @classmethod
    def of(cls, state: WorkflowState, **extra: Any) -> Self:
        """The public document of `state` (`extra`: a subclass's own fields)."""
        error = state.error
        result = state.result
        if state.definition_name == CHAIN_NAME and isinstance(result, dict):
            # The lifted fields are the result's own values: each is encoded once, and its
            # bytes (msgspec.Raw) are written in both places. A value's JSON does not
            # depend on where it is nested, so the answer is the same bytes, for a third
            # less of its encoding (the values are most of a chain's answer).
            encoded: dict[str, msgspec.Raw] = {}
            for key, value in result.items():
                encoded[key] = msgspec.Raw(_encode(value))
            result = encoded
            intent: Any = encoded.get("intent")
            data: Any = encoded.get("data")
            chart: Any = encoded.get("chart")
        else:
            intent = data = chart = UNSET
        finished_at = state.finished_at
        # The steps and the fallbacks in one loop (a comprehension is a frame of its own).
        steps: dict[str, Step] = {}
        fallbacks: list[Fallback] = []
        for sid, run in state.steps.items():
            steps[sid] = Step.of(run)
            if run.fallback is not None:
                fallbacks.append(Fallback(step_id=run.step_id, reason=run.fallback))
        return cls(
            state.workflow_id,
            state.definition_name,
            state.status,
            state.inputs,
            steps,
            fallbacks,
            result,
            None
            if error is None
            else WorkflowError(
                code=error.code, message=error.message, step_id=error.step_id, agent=error.agent
            ),
            state.created_at,
            state.updated_at,
            finished_at,
            milliseconds(finished_at - state.created_at) if finished_at else None,
            state.owner,
            state.definition,
            state.schedule_id,
            state.tenant,
            state.submit_key,
            intent,
            data,
            chart,
            **extra,
        )


class Cancelled(Workflow, frozen=True, kw_only=True):
    """The workflow after a cancel (200: stopped; 202: not yet confirmed stopped)."""

    cancel_requested: Literal[True]


class Paused(Workflow, frozen=True, kw_only=True):
    """The workflow after a pause (200: paused; 202: running nodes still finishing)."""

    pause_requested: Literal[True]


class AcceptedLinks(msgspec.Struct, frozen=True, kw_only=True):
    status: str
    cancel: str
    events: str
    plan: str
    pause: str
    resume: str


class Accepted(msgspec.Struct, frozen=True, kw_only=True):
    """A workflow accepted and running (or pending): follow `links.status`."""

    workflow_id: str
    status: WorkflowStatus
    links: AcceptedLinks

    @classmethod
    def of(cls, state: WorkflowState) -> Accepted:
        base = f"/api/workflow/{state.workflow_id}"
        return cls(
            workflow_id=state.workflow_id,
            status=state.status,
            links=AcceptedLinks(
                status=f"{base}/status",
                cancel=f"{base}/cancel",
                events=f"{base}/events",
                plan=f"{base}/plan.svg",
                pause=f"{base}/pause",
                resume=f"{base}/resume",
            ),
        )


class Plan(msgspec.Struct, frozen=True, kw_only=True):
    levels: Annotated[list[list[str]], Meta(description="node ids that can run together")]
    dependencies: dict[str, list[str]]
    critical_path: list[str]
    critical_path_length: float
    critical_path_unit: Literal["nodes", "ms"]
    max_parallelism: int
    triggers: Annotated[dict[str, str], Meta(description="each join's trigger rule")]


class Validated(msgspec.Struct, frozen=True, kw_only=True):
    """A definition that compiles, and its plan."""

    valid: Literal[True]
    plan: Plan


class HistoryEntry(msgspec.Struct, frozen=True, kw_only=True):
    workflow_id: str
    definition_name: str
    status: WorkflowStatus
    created_at: Epoch
    updated_at: Epoch
    finished_at: Epoch | None
    owner: str | None
    tenant: str | None
    error: WorkflowError | None


class History(msgspec.Struct, frozen=True, kw_only=True):
    """One page of workflows, newest first."""

    workflows: list[HistoryEntry]
    next_cursor: Annotated[str | None, Meta(description="the next page's cursor (null: last)")]


class WorkflowSummary(msgspec.Struct, frozen=True, kw_only=True):
    workflow_id: str
    definition_name: str
    status: WorkflowStatus
    created_at: Epoch
    finished_at: Epoch | None
    duration_ms: float | None


class OpsWorkflows(msgspec.Struct, frozen=True, kw_only=True):
    """Running and recently finished workflows, deployment-wide."""

    running: list[WorkflowSummary]
    recent: list[WorkflowSummary]
    source: Annotated[str, Meta(description="where the lists come from (history)")]


# -- schedules ---------------------------------------------------------------------------


class ScheduleRun(msgspec.Struct, frozen=True, kw_only=True):
    tick: Epoch
    workflow_id: str
    status_url: str


class ScheduleLinks(msgspec.Struct, frozen=True, kw_only=True):
    self: str
    pause: str
    resume: str


class Schedule(msgspec.Struct, frozen=True, kw_only=True):
    """A schedule: the request it submits on every tick of `cron` in `timezone`."""

    schedule_id: str
    name: str | None
    tenant: str | None
    cron: str
    timezone: str
    request: Annotated[dict[str, Any], Meta(description="what each tick submits")]
    misfire: Misfire
    paused: bool
    created_at: Epoch
    anchor: Annotated[float, Meta(description="ticks before it (epoch s) never fire")]
    next_run_at: Epoch | None
    links: ScheduleLinks
    runs: Annotated[list[ScheduleRun], Meta(description="newest first (one schedule only)")] | (
        UnsetType
    ) = UNSET


class Schedules(msgspec.Struct, frozen=True, kw_only=True):
    schedules: list[Schedule]


# -- operations --------------------------------------------------------------------------


class Window(msgspec.Struct, frozen=True, kw_only=True):
    """A breaker's sliding window now: its calls, and the failed and slow shares (%)."""

    calls: int
    failures: int
    slow: int
    failure_rate: float
    slow_rate: float


class ForcedMode(msgspec.Struct, frozen=True, kw_only=True):
    mode: Literal["open", "disabled"]
    at: Epoch
    by: Annotated[str, Meta(description="the replica it was set on")]


class ReplicaBreaker(msgspec.Struct, frozen=True, kw_only=True):
    """One replica's state of a breaker, as it last published it.

    Other replicas may run another version (a rolling upgrade): what one does not
    publish reads as its default rather than failing the whole status answer."""

    state: Literal["closed", "open", "half_open"]
    forced: Literal["open", "disabled", "follow"] | None = None
    window: Window | None = None
    open_wait_s: float = 0.0
    backoff_level: int = 0
    opened_at: Epoch | None = None
    half_open_at: Epoch | None = None
    calls: int = 0
    failures: int = 0
    rejections: int = 0
    trips: int = 0


class Overall(msgspec.Struct, frozen=True, kw_only=True):
    """The deployment's view of a breaker."""

    state: Literal["closed", "open", "partly_open", "disabled"]
    forced: ForcedMode | None
    replicas: int
    open: int
    half_open: int
    closed: int
    window: Window


class A2APeer(msgspec.Struct, frozen=True, kw_only=True):
    """What an A2A agent's card says."""

    name: str
    description: str
    version: str
    protocol_version: str
    rpc_url: str
    skills: list[str]


class Breaker(msgspec.Struct, frozen=True, kw_only=True):
    """An agent's breaker on this replica; the status view adds the agent and the
    deployment (`url`, `protocol`, `a2a`, `replicas`, `overall`)."""

    name: str
    state: Literal["closed", "open", "half_open"]
    policy: Literal["rate", "consecutive"]
    forced: Annotated[
        Literal["open", "disabled", "follow"] | None,
        Meta(description="a mode set by ops (open, disabled) or by following other replicas"),
    ]
    failure_count: int
    fail_max: int
    window: Annotated[
        Window | None, Meta(description="null under the consecutive policy")
    ]
    window_type: Literal["count", "time"]
    window_size: int
    failure_rate_threshold: float
    slow_call_duration_s: float
    slow_call_rate_threshold: float
    minimum_calls: int
    reset_timeout_s: float
    open_wait_s: Annotated[float, Meta(description="this (or the last) opening's wait")]
    backoff_level: Annotated[int, Meta(description="failed probes since the last close")]
    success_threshold: int
    half_open_max_calls: int
    opened_at: Epoch | None
    half_open_at: Epoch | None
    probes_in_flight: int
    calls: int
    successes: int
    failures: int
    rejections: int
    trips: int
    url: Annotated[str, Meta(description="the agent's URL")] | UnsetType = UNSET
    protocol: Literal["native", "a2a"] | UnsetType = UNSET
    a2a: Annotated[
        A2APeer | None, Meta(description="an A2A agent's card (null until it was read)")
    ] | UnsetType = UNSET
    replicas: Annotated[
        dict[str, ReplicaBreaker], Meta(description="every live replica's state, by replica id")
    ] | UnsetType = UNSET
    overall: Overall | UnsetType = UNSET


class Board(msgspec.Struct, frozen=True, kw_only=True):
    """Where breakers are shared: memory (this process) or redis (every replica)."""

    backend: Literal["memory", "redis"]
    available: bool
    replicas: list[str]


class Breakers(msgspec.Struct, frozen=True, kw_only=True):
    """Every agent's breaker, by agent name."""

    replica: Annotated[str, Meta(description="the replica that answered")]
    shared: Board
    breakers: dict[str, Breaker]


class Durations(msgspec.Struct, frozen=True, kw_only=True):
    count: int
    avg_ms: float | None
    p95_ms: float | None


class WorkflowTotals(msgspec.Struct, frozen=True, kw_only=True):
    started: int
    finished: int
    in_flight: int
    by_status: dict[str, int]
    success_rate: Annotated[
        float | None, Meta(description="completed and degraded over finished (null: none yet)")
    ]
    duration_ms: Durations


class NodeTotals(msgspec.Struct, frozen=True, kw_only=True):
    statuses: dict[str, int]
    count: int
    avg_ms: float | None
    p95_ms: float | None


class AgentTotals(msgspec.Struct, frozen=True, kw_only=True):
    retries: int
    breaker_trips: int
    breaker_state: Literal["closed", "open", "half_open"]
    calls: int
    failures: int
    rejections: int


class Metrics(msgspec.Struct, frozen=True, kw_only=True):
    """Totals since this replica started."""

    workflows: WorkflowTotals
    steps: Annotated[
        dict[str, NodeTotals], Meta(description="by `<definition>.<step>` (others: one key)")
    ]
    fallbacks: int
    agents: dict[str, AgentTotals]
    retries_total: int
    breaker_trips_total: int


class Health(msgspec.Struct, frozen=True, kw_only=True):
    status: Literal["ok"]


class Ready(msgspec.Struct, frozen=True, kw_only=True):
    status: Literal["ready"]
    state_store: Annotated[str, Meta(description="the store's backend (memory, redis)")]
