"""The runner: eager scheduling, limits, skips, failures, fallbacks, cancellation, state."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest

from agents.errors import AgentHTTPError, AgentTimeout, AgentUnavailable
from circuit.config import RetryConfig
from state.models import NodeRun, NodeStatus, WorkflowStatus

from .conftest import FakeAgents, Harness, agent, compile_def, new_state

EXAMPLE: dict[str, Any] = {
    "name": "regional-report",
    "inputs": {"query": "revenue by region"},
    "options": {"max_parallel": 10, "timeout_s": 120, "on_failure": "stop"},
    "nodes": [
        {"id": "nlp", "kind": "agent", "agent": "nlp", "input": {"query": "{{ inputs.query }}"}},
        {
            "id": "data",
            "kind": "agent",
            "agent": "data",
            "depends_on": ["nlp"],
            "input": {"intent": "{{ nlp.intent }}"},
            "retry": {"max_attempts": 5},
            "timeout_s": 30,
        },
        {"id": "big", "kind": "condition", "depends_on": ["data"], "expr": "len(data.rows) > 10"},
        {
            "id": "viz",
            "kind": "agent",
            "agent": "viz",
            "depends_on": ["data", "big"],
            "when": "big.value",
            "input": {"rows": "{{ data.rows }}"},
            "on_failure": "continue",
            "fallback": {"value": {"spec": None}},
        },
    ],
    "output": {"rows": "{{ data.rows }}", "chart": "{{ viz.spec }}"},
}

ROWS = [{"region": f"r{i}", "revenue": i} for i in range(12)]


def script_example(fake: FakeAgents, rows: list[dict[str, Any]]) -> None:
    fake.behaviours["nlp"] = {"intent": {"metric": "revenue", "by": "region"}}
    fake.behaviours["data"] = {"rows": rows}
    fake.behaviours["viz"] = lambda p: {"spec": {"mark": "bar", "n": len(p["rows"])}}


async def wait(event: asyncio.Event) -> None:
    # Guards against a hang only; the assertions never depend on time.
    await asyncio.wait_for(event.wait(), timeout=10)


async def test_example_workflow_runs_every_node_and_renders_the_output(
    harness: Harness, fake: FakeAgents
) -> None:
    """The issue's example: templates keep types, the condition gates viz, output renders."""
    script_example(fake, ROWS)
    run = await harness.run(EXAMPLE)
    assert run.state.status is WorkflowStatus.COMPLETED
    assert run.statuses() == dict.fromkeys(["nlp", "data", "big", "viz"], "completed")
    assert run.state.result == {"rows": ROWS, "chart": {"mark": "bar", "n": 12}}
    by_node = {c.node_id: c for c in fake.calls}
    assert by_node["nlp"].payload == {"query": "revenue by region"}
    assert by_node["data"].payload == {"intent": {"metric": "revenue", "by": "region"}}
    assert by_node["viz"].payload == {"rows": ROWS}
    assert run.node("big").output == {"value": True}
    assert run.state.finished_at is not None


async def test_false_condition_skips_the_gated_node_and_nulls_its_output(
    harness: Harness, fake: FakeAgents
) -> None:
    """`when` false: the node is skipped (not degraded) and the output reads it as null."""
    script_example(fake, ROWS[:3])
    run = await harness.run(EXAMPLE)
    assert run.state.status is WorkflowStatus.COMPLETED
    assert run.node("viz").status is NodeStatus.SKIPPED
    assert "when" in run.node("viz").skip_reason
    assert run.state.result == {"rows": ROWS[:3], "chart": None}
    assert "viz" not in {c.node_id for c in fake.calls}


async def test_fast_branch_is_not_held_back_by_a_slow_independent_branch(
    harness: Harness, fake: FakeAgents
) -> None:
    """Eager: fast -> fast2 -> fast3 all run while `slow` (same level as `fast`) is blocked."""
    gate = fake.gate("slow")
    definition = {
        "nodes": [
            agent("slow"),
            agent("slow2", "b", depends_on=["slow"]),
            agent("fast"),
            agent("fast2", "c", depends_on=["fast"]),
            agent("fast3", "c", depends_on=["fast2"]),
        ]
    }
    task, run = harness.start(definition)
    await wait(fake.started_event("fast3"))
    assert not gate.is_set()
    assert fake.order.index("fast3") < len(fake.order)
    assert "slow2" not in fake.order
    # fast3's transitions were recorded while slow was still running.
    fast3_done = next(s for s in run.snapshots if s["steps"]["fast2"]["status"] == "completed")
    assert fast3_done["steps"]["slow"]["status"] == "running"
    gate.set()
    await task
    assert run.state.status is WorkflowStatus.COMPLETED
    assert fake.order[-1] == "slow2"


async def test_max_parallel_bounds_running_nodes_at_every_moment(
    harness: Harness, fake: FakeAgents
) -> None:
    """Six ready nodes, max_parallel 2: never more than two running, in calls or in state."""
    ids = [f"n{i}" for i in range(6)]
    gates = {i: fake.gate(i) for i in ids}
    task, run = harness.start({"options": {"max_parallel": 2}, "nodes": [agent(i) for i in ids]})
    await wait(fake.started_event("n0"))
    await wait(fake.started_event("n1"))
    for _ in range(5):
        await asyncio.sleep(0)
    assert fake.in_flight == 2
    for i in ids:
        gates[i].set()
        await asyncio.sleep(0)
    await task
    assert fake.peak == 2
    for snap in run.snapshots:
        running = [s for s in snap["steps"].values() if s["status"] == "running"]
        assert len(running) <= 2
    assert run.state.status is WorkflowStatus.COMPLETED


async def test_all_dependencies_skipped_skips_the_node_transitively(harness: Harness) -> None:
    """A skipped node skips its dependents, and theirs, without calling them."""
    run = await harness.run(
        {
            "nodes": [
                agent("a", when="inputs.go"),
                agent("b", depends_on=["a"]),
                agent("c", depends_on=["b"]),
            ]
        },
        inputs={"go": False},
    )
    assert run.statuses() == {"a": "skipped", "b": "skipped", "c": "skipped"}
    assert run.node("b").skip_reason == (
        "trigger rule 'all_success' not met: dependency 'a' was skipped"
    )
    assert run.state.status is WorkflowStatus.COMPLETED
    assert run.state.result == {"c": None}


async def test_join_with_one_skipped_dependency_runs_by_default(harness: Harness) -> None:
    """A node with several dependencies defaults to none_failed_min_one_success."""
    run = await harness.run(
        {
            "nodes": [
                agent("a", when="False"),
                agent("b"),
                agent("c", depends_on=["a", "b"], input={"a": "{{ a }}", "b": "{{ b.agent }}"}),
            ]
        }
    )
    assert run.node("c").status is NodeStatus.COMPLETED
    assert run.node("c").output["echo"] == {"a": None, "b": "b"}


async def test_all_success_join_with_one_skipped_dependency_is_skipped(harness: Harness) -> None:
    """trigger all_success: one skipped dependency skips the join."""
    run = await harness.run(
        {
            "nodes": [
                agent("a", when="False"),
                agent("b"),
                agent("c", depends_on=["a", "b"], trigger="all_success"),
            ]
        }
    )
    assert run.node("c").status is NodeStatus.SKIPPED
    assert run.node("b").status is NodeStatus.COMPLETED


async def test_aggregate_runs_on_the_dependencies_that_were_not_skipped(
    harness: Harness, fake: FakeAgents
) -> None:
    """A merge over three branches, one skipped, merges the two that ran."""
    fake.behaviours.update({"x": {"x": 1}, "y": {"y": 2}, "z": {"z": 3}})
    run = await harness.run(
        {
            "nodes": [
                agent("x"),
                agent("y", when="1 > 2"),
                agent("z"),
                {"id": "joined", "kind": "aggregate", "depends_on": ["x", "y", "z"], "op": "merge"},
                {"id": "none", "kind": "aggregate", "depends_on": ["y"], "op": "merge"},
            ]
        }
    )
    assert run.node("joined").output == {"value": {"x": 1, "z": 3}}
    assert run.node("none").status is NodeStatus.SKIPPED


async def test_cases_choose_one_branch_and_a_merge_joins_it(
    harness: Harness, fake: FakeAgents
) -> None:
    """Branching: a cases condition picks "big", only that branch runs, the join merges it."""
    fake.behaviours["data"] = {"rows": ROWS}
    fake.behaviours["big_chart"] = {"chart": "big"}
    fake.behaviours["small_chart"] = {"chart": "small"}
    run = await harness.run(
        {
            "nodes": [
                agent("data"),
                {
                    "id": "size",
                    "kind": "condition",
                    "depends_on": ["data"],
                    "cases": [
                        {"when": "len(data.rows) > 100", "value": "huge"},
                        {"when": "len(data.rows) > 10", "value": "big"},
                    ],
                    "default": "small",
                },
                agent("big_chart", "viz", depends_on=["size"], when="size.value == 'big'"),
                agent("small_chart", "viz", depends_on=["size"], when="size.value == 'small'"),
                {
                    "id": "chart",
                    "kind": "aggregate",
                    "depends_on": ["big_chart", "small_chart"],
                    "op": "merge",
                },
            ],
            "output": "{{ chart.value.chart }}",
        }
    )
    assert run.node("size").output == {"value": "big"}
    assert run.node("small_chart").status is NodeStatus.SKIPPED
    assert run.state.result == "big"


async def test_stop_failure_cancels_running_siblings_and_fails_the_workflow(
    harness: Harness, fake: FakeAgents
) -> None:
    """on_failure stop: the running sibling is cancelled, pending nodes never start."""
    fake.gate("c")
    fake.behaviours["b"] = AgentHTTPError(agent="b", status=503, body="down", attempts=3)
    task, run = harness.start(
        {
            "nodes": [
                agent("a"),
                agent("b", depends_on=["a"], input={"q": "{{ a.agent }}"}),
                agent("c", depends_on=["a"]),
                agent("d", depends_on=["b", "c"]),
            ]
        }
    )
    await task
    state = run.state
    assert state.status is WorkflowStatus.FAILED
    assert state.error is not None
    assert state.error.code == "agent_http_error"
    assert state.error.step_id == "b" and state.error.agent == "b"
    assert "'b'" in state.error.message and "503" in state.error.message
    assert run.statuses() == {"a": "completed", "b": "failed", "c": "cancelled", "d": "cancelled"}
    assert fake.cancelled == ["c"]
    error = run.node("b").error
    assert (error.type, error.attempts, error.input) == ("agent_http_error", 3, {"q": "a"})
    assert "d" not in fake.order
    assert run.snapshots[-1]["status"] == "failed"


async def test_continue_failure_skips_dependents_and_degrades(
    harness: Harness, fake: FakeAgents
) -> None:
    """on_failure continue: the node fails, its dependents are skipped, the rest completes."""
    fake.behaviours["b"] = AgentTimeout(agent="b", phase="read", timeout_s=1.0, attempts=2)
    run = await harness.run(
        {
            "options": {"on_failure": "continue"},
            "nodes": [
                agent("a"),
                agent("b", depends_on=["a"]),
                agent("b2", depends_on=["b"]),
                agent("c", depends_on=["a"]),
            ],
        }
    )
    assert run.state.status is WorkflowStatus.DEGRADED
    assert run.statuses() == {"a": "completed", "b": "failed", "b2": "skipped", "c": "completed"}
    assert run.node("b2").skip_reason == "trigger rule 'all_success' not met: dependency 'b' failed"
    assert run.node("b").error.type == "agent_timeout"
    assert run.node("b").attempts == 2
    assert run.state.error is None
    assert run.state.result["b2"] is None and run.state.result["c"]["agent"] == "c"


async def test_node_on_failure_overrides_the_workflow_default(
    harness: Harness, fake: FakeAgents
) -> None:
    """A node's own on_failure: continue wins over options.on_failure: stop."""
    fake.behaviours["a"] = AgentHTTPError(agent="a", status=500)
    run = await harness.run({"nodes": [agent("a", on_failure="continue"), agent("b")]})
    assert run.state.status is WorkflowStatus.DEGRADED
    assert run.node("b").status is NodeStatus.COMPLETED


async def test_static_fallback_replaces_the_output_and_says_why(
    harness: Harness, fake: FakeAgents
) -> None:
    """The example's viz fails: its fallback value is the output, marked, workflow degraded."""
    script_example(fake, ROWS)
    fake.behaviours["viz"] = AgentHTTPError(agent="viz", status=502, body="bad gateway")
    run = await harness.run(EXAMPLE)
    assert run.state.status is WorkflowStatus.DEGRADED
    viz = run.node("viz")
    assert viz.status is NodeStatus.COMPLETED
    assert viz.output == {"spec": None}
    assert viz.fallback == "agent 'viz' answered HTTP 502: bad gateway"
    assert viz.error.type == "agent_http_error"
    assert run.state.fallbacks == [{"step_id": "viz", "reason": viz.fallback}]
    assert run.state.result == {"rows": ROWS, "chart": None}


async def test_agent_fallback_gets_the_node_input_when_the_breaker_is_open(
    harness: Harness, fake: FakeAgents
) -> None:
    """nlp's breaker is open: the fallback agent answers with the same rendered input."""
    fake.behaviours["nlp@nlp"] = AgentUnavailable(agent="nlp", retry_after_s=30.0)
    fake.behaviours["nlp@backup"] = lambda p: {"intent": f"parsed {p['query']}"}
    run = await harness.run(
        {
            "inputs": {"query": "q1"},
            "nodes": [
                agent("nlp", input={"query": "{{ inputs.query }}"}, fallback={"agent": "backup"}),
                agent("data", depends_on=["nlp"], input={"intent": "{{ nlp.intent }}"}),
            ],
        }
    )
    assert run.state.status is WorkflowStatus.DEGRADED
    nlp = run.node("nlp")
    assert nlp.output == {"intent": "parsed q1"}
    assert nlp.fallback.startswith("agent 'nlp' is unavailable: circuit breaker open")
    assert [(c.node_id, c.agent) for c in fake.calls][:2] == [("nlp", "nlp"), ("nlp", "backup")]
    assert fake.calls[-1].payload == {"intent": "parsed q1"}


async def test_agent_fallback_input_template_is_rendered(
    harness: Harness, fake: FakeAgents
) -> None:
    """A fallback agent with its own input template gets that, rendered."""
    fake.behaviours["a@a"] = AgentHTTPError(agent="a", status=500)
    run = await harness.run(
        {
            "inputs": {"q": "x"},
            "nodes": [
                agent("a", fallback={"agent": "backup", "input": {"text": "{{ inputs.q }}!"}})
            ],
        }
    )
    assert fake.calls[-1].payload == {"text": "x!"}
    assert run.node("a").output["agent"] == "backup"


async def test_builtin_fallback_receives_the_rendered_input(
    harness: Harness, fake: FakeAgents
) -> None:
    """A built-in fallback is called with the node's rendered input; its answer is the output."""
    fake.behaviours["nlp"] = AgentUnavailable(agent="nlp", retry_after_s=5.0)
    seen: list[Any] = []

    async def parse(payload: Any) -> Any:
        seen.append(payload)
        return {"intent": {"words": payload["query"].split()}}

    run = await harness.run(
        {
            "inputs": {"query": "sales by month"},
            "nodes": [
                agent("nlp", input={"query": "{{ inputs.query }}"}, fallback={"builtin": "rules"})
            ],
        },
        builtins={"rules": parse},
    )
    assert seen == [{"query": "sales by month"}]
    assert run.node("nlp").output == {"intent": {"words": ["sales", "by", "month"]}}
    assert run.state.status is WorkflowStatus.DEGRADED


async def test_a_failing_fallback_fails_the_node_with_both_causes(
    harness: Harness, fake: FakeAgents
) -> None:
    """If the fallback fails too, the node fails (stop) and the error names both failures."""
    fake.behaviours["a@a"] = AgentHTTPError(agent="a", status=500)
    fake.behaviours["a@backup"] = AgentHTTPError(agent="backup", status=503)
    run = await harness.run({"nodes": [agent("a", fallback={"agent": "backup"})]})
    assert run.state.status is WorkflowStatus.FAILED
    error = run.node("a").error
    assert error.type == "agent_http_error"
    assert "HTTP 500" in error.message and "fallback failed" in error.message
    assert "HTTP 503" in error.message
    assert run.node("a").fallback is None


async def test_cancel_mid_dag_cancels_running_nodes_and_records_it(
    harness: Harness, fake: FakeAgents
) -> None:
    """Cancelling the run task aborts in-flight calls, records cancelled, and re-raises."""
    fake.gate("b")
    fake.gate("c")
    task, run = harness.start(
        {
            "nodes": [
                agent("a"),
                agent("b", depends_on=["a"]),
                agent("c", depends_on=["a"]),
                agent("d", depends_on=["b", "c"]),
            ]
        }
    )
    await wait(fake.started_event("b"))
    await wait(fake.started_event("c"))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sorted(fake.cancelled) == ["b", "c"]
    assert run.state.status is WorkflowStatus.CANCELLED
    assert run.statuses() == {
        "a": "completed",
        "b": "cancelled",
        "c": "cancelled",
        "d": "cancelled",
    }
    assert run.snapshots[-1]["status"] == "cancelled"
    assert run.state.finished_at is not None
    assert "d" not in fake.order
    # No node task outlives the run.
    assert [t for t in asyncio.all_tasks() if t.get_name().startswith("dag:")] == []


async def test_workflow_timeout_fails_and_cancels_running_nodes(
    harness: Harness, fake: FakeAgents
) -> None:
    """options.timeout_s runs out: FAILED with workflow_timeout, the running node cancelled."""
    fake.gate("a")
    run = await harness.run(
        {"options": {"timeout_s": 0.05}, "nodes": [agent("a"), agent("b", depends_on=["a"])]}
    )
    assert run.state.status is WorkflowStatus.FAILED
    assert run.state.error is not None and run.state.error.code == "workflow_timeout"
    assert run.statuses() == {"a": "cancelled", "b": "cancelled"}
    assert fake.cancelled == ["a"]


async def test_node_timeout_fails_the_node(harness: Harness, fake: FakeAgents) -> None:
    """A node's timeout_s fails that node with node_timeout (here: continue, so degraded)."""
    fake.gate("a")
    run = await harness.run(
        {"nodes": [agent("a", timeout_s=0.02, on_failure="continue"), agent("b")]}
    )
    assert run.node("a").status is NodeStatus.FAILED
    assert run.node("a").error.type == "node_timeout"
    assert run.state.status is WorkflowStatus.DEGRADED


async def test_retry_override_merges_over_the_agent_spec_and_deadline_is_passed(
    harness: Harness, fake: FakeAgents
) -> None:
    """retry fields replace the agent's; timeout_s reaches the client as a deadline."""
    loop = asyncio.get_running_loop()
    before = loop.time()
    await harness.run(
        {
            "options": {"timeout_s": 600},
            "nodes": [
                agent("a", retry={"max_attempts": 5, "base_delay_s": 0.5}, timeout_s=30),
                agent("b"),
            ],
        }
    )
    calls = {c.node_id: c for c in fake.calls}
    assert calls["a"].retry == RetryConfig(max_attempts=5, base_delay_s=0.5, max_delay_s=30.0)
    assert calls["b"].retry is None
    assert calls["a"].deadline is not None and calls["b"].deadline is not None
    assert before + 29 < calls["a"].deadline <= loop.time() + 30
    assert before + 599 < calls["b"].deadline <= loop.time() + 600
    assert calls["a"].workflow_id == calls["b"].workflow_id


async def test_every_transition_is_recorded_in_order(harness: Harness) -> None:
    """State shows progress: running at start, then pending -> running -> completed per node."""
    run = await harness.run({"nodes": [agent("a"), agent("b", depends_on=["a"])]})
    seq = [
        (s["status"], s["steps"]["a"]["status"], s["steps"]["b"]["status"]) for s in run.snapshots
    ]
    assert seq == [
        ("running", "pending", "pending"),
        ("running", "running", "pending"),
        ("running", "completed", "pending"),
        ("running", "completed", "running"),
        ("running", "completed", "completed"),
        ("completed", "completed", "completed"),
    ]
    a = run.node("a")
    assert a.started_at is not None and a.finished_at is not None and a.attempts == 1


async def test_attempts_come_from_the_call_result(harness: Harness, fake: FakeAgents) -> None:
    """A call that took three attempts records three on its step."""
    fake.attempts["a"] = 3
    run = await harness.run({"nodes": [agent("a")]})
    assert run.node("a").attempts == 3


async def test_default_output_is_the_sink_outputs(harness: Harness) -> None:
    """Without `output`, the result is {sink id: its output}."""
    run = await harness.run(
        {"nodes": [agent("a"), agent("b", depends_on=["a"]), agent("c", depends_on=["a"])]}
    )
    assert set(run.state.result) == {"b", "c"}


async def test_nodes_and_edges_form_runs_like_depends_on(
    harness: Harness, fake: FakeAgents
) -> None:
    """Edges from a visual editor order the run exactly like depends_on."""
    fake.gate("a")
    task, run = harness.start(
        {
            "nodes": [agent("a"), agent("b", input={"x": "{{ a.agent }}"})],
            "edges": [{"id": "e1", "source": "a", "target": "b"}],
        }
    )
    await wait(fake.started_event("a"))
    for _ in range(5):
        await asyncio.sleep(0)
    assert "b" not in fake.order
    fake.gates["a"].set()
    await task
    assert fake.calls[-1].payload == {"x": "a"}


async def test_resumed_workflow_does_not_rerun_completed_steps(
    harness: Harness, fake: FakeAgents
) -> None:
    """Steps already COMPLETED in the state are kept, and their output feeds the rest."""
    state = new_state()
    state.steps["a"] = NodeRun(
        step_id="a", kind="agent", agent="a", status=NodeStatus.COMPLETED, output={"v": 7}
    )
    run = await harness.run(
        {"nodes": [agent("a"), agent("b", depends_on=["a"], input={"v": "{{ a.v }}"})]},
        state=state,
    )
    assert [c.node_id for c in fake.calls] == ["b"]
    assert fake.calls[0].payload == {"v": 7}
    assert run.state.status is WorkflowStatus.COMPLETED


async def test_request_inputs_override_definition_inputs(
    harness: Harness, fake: FakeAgents
) -> None:
    """state.inputs (from the request) win over the definition's default inputs."""
    definition = copy.deepcopy(EXAMPLE)
    script_example(fake, ROWS[:1])
    await harness.run(definition, inputs={"query": "top customers"})
    assert fake.calls[0].payload == {"query": "top customers"}


async def test_a_bug_in_a_node_kind_fails_only_that_node(harness: Harness) -> None:
    """An exception from a kind (here a transform over a missing key) fails the node, typed."""
    run = await harness.run(
        {
            "options": {"on_failure": "continue"},
            "nodes": [
                agent("a"),
                {"id": "t", "kind": "transform", "depends_on": ["a"], "select": "nope"},
            ],
        }
    )
    assert run.node("t").error.type == "path_error"
    assert run.node("t").error.input == {"echo": {}, "agent": "a"}
    assert run.state.status is WorkflowStatus.DEGRADED


async def test_when_that_fails_to_evaluate_fails_the_node(harness: Harness) -> None:
    """A `when` reading a missing key is an expression_error on that node."""
    run = await harness.run({"nodes": [agent("a", when="inputs.missing > 1")]})
    assert run.state.status is WorkflowStatus.FAILED
    assert run.node("a").error.type == "expression_error"


def test_compiled_workflow_is_reusable() -> None:
    """One compiled workflow runs twice with independent states."""
    compiled = compile_def({"nodes": [agent("a")]})

    async def go() -> list[WorkflowStatus]:
        from agents.registry import AgentRegistry, AgentSpec
        from orchestrator.dag.engine import DagEngine

        runner = DagEngine(
            agents=FakeAgents(), registry=AgentRegistry([AgentSpec(name="a", url="http://x")])
        )
        out = []
        for _ in range(2):
            state = new_state()

            async def noop(_: Any) -> None:
                return None

            await runner.run(compiled, state, on_transition=noop)
            out.append(state.status)
        return out

    assert asyncio.run(go()) == [WorkflowStatus.COMPLETED] * 2


async def test_a_fallback_is_bounded_by_the_node_timeout(
    harness: Harness, fake: FakeAgents
) -> None:
    """A hanging built-in fallback times out like the node would, and the node fails."""
    fake.behaviours["a"] = AgentHTTPError(agent="a", status=500)
    never = asyncio.Event()

    async def hang(payload: Any) -> Any:
        await never.wait()

    run = await harness.run(
        {"nodes": [agent("a", timeout_s=0.02, fallback={"builtin": "hang"})]},
        builtins={"hang": hang},
    )
    error = run.node("a").error
    assert run.state.status is WorkflowStatus.FAILED
    assert error.type == "agent_http_error"
    assert "fallback failed: node 'a' timed out after 0.02 s" in error.message


async def test_parallel_node_timeouts_each_end_their_own_node(
    harness: Harness, fake: FakeAgents
) -> None:
    """Node deadlines share one timer per run: a hanging node ends at its own timeout_s,
    a later (longer) one too, and a node beside them that answers completes."""
    fake.gate("slow")
    fake.gate("slower")
    run = await harness.run(
        {
            "options": {"on_failure": "continue"},
            "nodes": [
                agent("fast", timeout_s=5),
                agent("slower", timeout_s=0.06),
                agent("slow", timeout_s=0.02),
                agent("after", depends_on=["fast"], timeout_s=0.03),
            ],
        }
    )
    assert run.statuses() == {
        "fast": "completed",
        "slower": "failed",
        "slow": "failed",
        "after": "completed",
    }
    assert run.node("slow").error.type == "node_timeout"
    assert run.node("slower").error.type == "node_timeout"
    assert sorted(fake.cancelled) == ["slow", "slower"]
    assert run.state.status is WorkflowStatus.DEGRADED
