"""Tests use public seams: no test reads or calls another object's private names.

A private name (`x._name`, `from m import _name`) pins a test to how the code is
written, not to what it does. The few that stay are listed here with the reason no
public seam can serve; a test's own helpers (`self._x`) are its business.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# "path:name" -> why no public seam serves.
ALLOWED: dict[str, str] = {
    "tests/orchestrator/dag/test_templates.py:_scan":
        "differential test: the one-regex fast path against the general scanner; the public "
        "compile takes the fast path, so only the scanner itself can be the reference",
    "tests/orchestrator/dag/test_templates.py:_parse_string":
        "the fast path of that differential test",
    "tests/orchestrator/dag/test_template_plan.py:_render":
        "differential test: the planned render against the general one, which the public "
        "render only reaches when the plan cannot decide, so only it can be the reference",
    "tests/orchestrator/dag/test_template_plan.py:_Meter":
        "the general render's budget meter, for that differential test",
    "tests/orchestrator/dag/test_template_plan.py:_compiled":
        "the compiled template the general render takes, for that differential test",
    "tests/orchestrator/dag/test_values.py:_convert":
        "differential test: the one-walk fast path against the general path (measure, then "
        "convert), which the public json_value only reaches for values that are not plain",
    "tests/orchestrator/test_lifecycle_leases.py:_finish_waiters":
        "a leak check: waiters left behind are invisible to every public call",
    "tests/state/test_memory_store.py:_cancel_flags":
        "expiry sweep of flags nobody asks about (asking would drop them lazily instead)",
    "tests/state/test_memory_store.py:_subscribers":
        "a closed, never-read stream leaves no trace any public call can see",
    "tests/agents/test_client.py:_caps":
        "a leak check: a cap left on the client's shared timer is invisible to every public call",
    "tests/agents/test_transport.py:_watches":
        "a leak check: a request's read watch left behind is invisible to every public call",
    "tests/agents/test_transport.py:_innermost":
        "a leak check: a read cap left on the task is invisible to every public call",
    "tests/integration/test_hostile.py:_announcement":
        "the start-up line `orchestrator serve` prints, checked without starting a process",
}  # fmt: skip


def private_uses(path: Path) -> list[tuple[int, str]]:
    """(line, name) for every private name of another object or module used in `path`."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            owner = node.value
            if not (isinstance(owner, ast.Name) and owner.id in {"self", "cls"}):
                found.append((node.lineno, node.attr))
        elif isinstance(node, ast.ImportFrom):
            found += [(node.lineno, a.name) for a in node.names if _private(a.name)]
    return found


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def test_no_test_reaches_into_private_names() -> None:
    """Every private name a test uses is in ALLOWED, with the reason no public seam serves."""
    uses = {
        f"{path.relative_to(ROOT)}:{name}": line
        for path in sorted((ROOT / "tests").rglob("*.py"))
        for line, name in private_uses(path)
    }
    assert uses, "found no uses at all: is the scan reading the tests?"
    assert sorted(use for use in uses if use not in ALLOWED) == []
    # An entry whose use is gone goes too, so the list stays the truth.
    assert sorted(entry for entry in ALLOWED if entry not in uses) == []


def test_the_scan_sees_attributes_and_imports_but_not_self(tmp_path: Path) -> None:
    """The scan reports `obj._x` and `from m import _y`, and leaves `self._z` alone."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from m import _y, ok\n"
        "class A:\n"
        "    def f(self, obj):\n"
        "        return obj._x, self._z, obj.__class__\n"
    )
    assert private_uses(sample) == [(1, "_y"), (4, "_x")]
