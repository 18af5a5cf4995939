"""Trigger rules: when a node with dependencies runs, given how they ended.

Names as in Airflow. A rule is decided once every direct dependency has ended
(the DAG engine is eager per node, never per level), over three outcomes:

- ``success``: the dependency completed (its own output or its fallback's);
- ``failed``: it failed and the workflow went on (``on_failure: continue``);
- ``skipped``: it did not run (its ``when`` was false, or its own rule was not met).

| rule | runs when |
|---|---|
| ``all_success`` | every dependency succeeded |
| ``all_done`` | always (every dependency has ended, whatever its outcome) |
| ``one_success`` | at least one dependency succeeded |
| ``none_failed`` | no dependency failed (succeeded or skipped) |
| ``none_failed_min_one_success`` | no dependency failed and at least one succeeded |

Default: ``all_success`` for a node with one dependency, and
``none_failed_min_one_success`` for a node with several, so the join after an
if/else runs on the branch that ran. A node that runs although some
dependencies were skipped or failed reads them as ``null`` (templates,
expressions, ``when``). A node without dependencies always runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum


class TriggerRule(StrEnum):
    ALL_SUCCESS = "all_success"
    ALL_DONE = "all_done"
    ONE_SUCCESS = "one_success"
    NONE_FAILED = "none_failed"
    NONE_FAILED_MIN_ONE_SUCCESS = "none_failed_min_one_success"


class Outcome(StrEnum):
    """How a dependency ended, as trigger rules see it."""

    SUCCESS = "success"
    FAILED = "failed"
    SKIPPED = "skipped"


def default_trigger(dependency_count: int) -> TriggerRule:
    """`all_success` for one dependency (or none), `none_failed_min_one_success` for several."""
    if dependency_count > 1:
        return TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS
    return TriggerRule.ALL_SUCCESS


def unmet_reason(
    rule: TriggerRule, deps: Sequence[str], outcomes: Mapping[str, Outcome]
) -> str | None:
    """None when `rule` lets the node run over its dependencies' `outcomes`;
    otherwise why not (the node's skip reason)."""
    if not deps or rule is TriggerRule.ALL_DONE:
        return None
    failed = [d for d in deps if outcomes[d] is Outcome.FAILED]
    skipped = [d for d in deps if outcomes[d] is Outcome.SKIPPED]
    succeeded = len(deps) - len(failed) - len(skipped)
    if rule is TriggerRule.ALL_SUCCESS:
        if failed:
            return _unmet(rule, f"dependency {failed[0]!r} failed")
        if skipped:
            return _unmet(rule, f"dependency {skipped[0]!r} was skipped")
        return None
    if rule in (TriggerRule.NONE_FAILED, TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS) and failed:
        return _unmet(rule, f"dependency {failed[0]!r} failed")
    if rule is TriggerRule.NONE_FAILED:
        return None
    if succeeded == 0:
        return _unmet(rule, "no dependency succeeded")
    return None


def _unmet(rule: TriggerRule, why: str) -> str:
    return f"trigger rule {rule.value!r} not met: {why}"
