"""No dead code: what vulture finds in the packages is either gone or kept for a reason here.

Run by hand: `.venv/bin/python -m pytest tests/test_dead_code.py` (vulture over the four
packages at its 60 % confidence floor, with the route decorators counted as uses). Code
that only tests call is reported too: it stays only with a reason below (a test seam the
tests read, a document field, an interface someone else calls), never by default. Fields of
msgspec Structs (the API's typed bodies) count as used: msgspec encodes them by name.
"""

from __future__ import annotations

import ast
from pathlib import Path

import vulture

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("orchestrator", "agents", "circuit", "state")

_SERVED_STATS = "a field of the stats document the reference agent serves whole (GET /stats)"
_SNAPSHOT = "a field of BreakerSnapshot, served whole by to_dict() (circuit-breakers status)"
_COUNTER = "a counter tests and bench/ read to see what was sent or saved; costs one add"
_ENUM = "an enum member: parsed from the client's string, never named in the code"
_PROTOCOL = (
    "a parameter the caller's interface passes (pybreaker listener, __aexit__, structlog "
    "processor)"
)

# "path:name" -> why it stays. Keep it short: every entry is code nothing in the
# service calls.
ALLOWED: dict[str, str] = {
    "circuit/__init__.py:__getattr__":
        "PEP 562 module attribute hook: loads RedisBreakerBoard (redis-py) only when asked",
    **{f"agents/reference/a2a_service.py:{name}": _SERVED_STATS
       for name in ("requests", "sends", "gets", "cancels", "duplicates")},
    **{f"agents/reference/service.py:{name}": _SERVED_STATS
       for name in ("requests", "injected_failures", "rejected", "duplicates")},
    "agents/reference/dataset.py:read_rows":
        "reads the bundled dataset back, so tests check the agent against the data itself",
    "circuit/breaker.py:failure_count": _SNAPSHOT,
    "circuit/breaker.py:probes_in_flight": _SNAPSHOT,
    "circuit/breaker.py:successes": _SNAPSHOT,
    "circuit/breaker.py:state_change": "pybreaker calls its listeners' state_change",
    "circuit/breaker.py:cb": _PROTOCOL,
    "orchestrator/logs.py:logger": _PROTOCOL,
    "orchestrator/logs.py:method_name": _PROTOCOL,
    "state/streams.py:exc_type": _PROTOCOL,
    "state/streams.py:tb": _PROTOCOL,
    "circuit/sharing.py:refresh":
        "runs one sync cycle now: tests await it instead of sleeping until the next tick",
    "orchestrator/lifecycle.py:pausing":
        "which workflows are draining to a pause: tests wait on it instead of sleeping",
    "state/connect.py:is_cluster_url":
        "the same URL test connect() applies, used by the test fixtures to pick a client",
    "orchestrator/dag/cache.py:hits": _COUNTER,
    "orchestrator/dag/cache.py:misses": _COUNTER,
    "state/layout.py:saves": _COUNTER,
    "state/redis_batch.py:own_round_trips": _COUNTER,
    "orchestrator/dag/triggers.py:ONE_SUCCESS": _ENUM,
    "state/schedules.py:CATCH_UP": _ENUM,
    # Entry points of the definition pipeline kept public although the service itself
    # goes through compile_workflow: each is one stage of it, on its own.
    "orchestrator/dag/parse.py:parse_definition":
        "the parse stage alone: bench/dag_plan.py times it, the model's tests read its result",
    "orchestrator/dag/compiler.py:check_definition":
        "the problems of a parsed definition as a list, without raising (tests of each check)",
}  # fmt: skip


def unused_code() -> list[str]:
    finder = vulture.Vulture(ignore_decorators=["@routes.*"])
    paths = [ROOT / package for package in PACKAGES]
    finder.scavenge([str(path) for path in paths])
    encoded = struct_fields([p for path in paths for p in sorted(path.rglob("*.py"))])
    return [
        f"{Path(item.filename).relative_to(ROOT)}:{item.name}"
        for item in finder.get_unused_code(min_confidence=60)
        if (Path(item.filename), item.first_lineno) not in encoded
    ]


def struct_fields(paths: list[Path]) -> set[tuple[Path, int]]:
    """(file, line) of every field declared on a msgspec Struct (or a subclass of one):
    msgspec encodes and decodes them by name, which vulture cannot see."""
    trees = {path: ast.parse(path.read_text(encoding="utf-8")) for path in paths}
    classes = [
        (path, node) for path, tree in trees.items() for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef)
    ]  # fmt: skip
    structs: set[str] = set()
    grew = True
    while grew:
        before = len(structs)
        for _, cls in classes:
            bases = {ast.unparse(base).rsplit(".", 1)[-1] for base in cls.bases}
            if "Struct" in bases or bases & structs:
                structs.add(cls.name)
        grew = len(structs) > before
    return {
        (path, field.lineno)
        for path, cls in classes
        if cls.name in structs
        for field in cls.body
        if isinstance(field, ast.AnnAssign)
    }


def test_vulture_finds_nothing_without_a_reason() -> None:
    """Every unused name vulture reports in the packages is allowed above, with a reason."""
    found = unused_code()
    assert found, "vulture found nothing at all: is it scanning the packages?"
    assert sorted({f for f in found if f not in ALLOWED}) == []


def test_the_check_catches_new_dead_code(tmp_path: Path) -> None:
    """A function nobody calls is reported: the check above is not vacuous."""
    module = tmp_path / "sample.py"
    module.write_text("def used():\n    return 1\n\ndef forgotten():\n    return 2\n\nused()\n")
    finder = vulture.Vulture(ignore_decorators=["@routes.*"])
    finder.scavenge([str(module)])
    assert [item.name for item in finder.get_unused_code(min_confidence=60)] == ["forgotten"]
