"""CompileCache: the same definition is compiled once; bad or huge ones never stick."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.dag.cache import CompileCache
from orchestrator.dag.compiler import CompiledWorkflow, compile_workflow
from orchestrator.dag.errors import DefinitionError

AGENTS = ["a", "b"]


def definition(name: str = "wf", **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "nodes": [
            {"id": "first", "kind": "agent", "agent": "a", "input": {"q": "{{ inputs.q }}"}},
            {"id": "second", "kind": "agent", "agent": "b", "depends_on": ["first"]},
        ],
        **extra,
    }


class CountingCompiler:
    """The real compile_workflow, counting its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, raw: Any, agents: tuple[str, ...] | None) -> CompiledWorkflow:
        self.calls += 1
        return compile_workflow(raw, agents=AGENTS if agents is None else agents)


def test_the_same_definition_is_compiled_once() -> None:
    """Equal definitions — even with keys in another order — share one compiled workflow."""
    compiler = CountingCompiler()
    cache = CompileCache(compiler)
    first = cache.get(definition())
    reordered = dict(reversed(list(definition().items())))
    assert cache.get(reordered) is first
    assert cache.get(definition()) is first
    assert (compiler.calls, cache.hits, cache.misses) == (1, 2, 1)
    other = cache.get(definition(name="other"))
    assert other is not first and other.name == "other"
    assert compiler.calls == 2


def test_a_bad_definition_is_rejected_every_time_and_not_cached() -> None:
    """A definition that does not compile raises its problems on every request."""
    compiler = CountingCompiler()
    cache = CompileCache(compiler)
    bad = definition()
    bad["nodes"][1]["depends_on"] = ["nowhere"]
    for _ in range(2):
        with pytest.raises(DefinitionError):
            cache.get(bad)
    assert (compiler.calls, len(cache)) == (2, 0)


def test_entries_are_bounded_least_recently_used_first() -> None:
    """Past max_entries the least recently used definition is dropped and recompiled."""
    compiler = CountingCompiler()
    cache = CompileCache(compiler, max_entries=2)
    one, two, three = (definition(name=n) for n in ("one", "two", "three"))
    cache.get(one)
    cache.get(two)
    cache.get(one)  # `two` is now the least recently used
    cache.get(three)
    assert len(cache) == 2
    calls = compiler.calls
    cache.get(one)
    assert compiler.calls == calls  # still cached
    cache.get(two)
    assert compiler.calls == calls + 1  # was evicted


def test_huge_or_non_json_definitions_are_compiled_uncached() -> None:
    """A definition past max_definition_bytes (or not plain JSON) is never kept."""
    compiler = CountingCompiler()
    cache = CompileCache(compiler, max_definition_bytes=64)
    cache.get(definition())
    cache.get(definition())
    assert (compiler.calls, len(cache)) == (2, 0)
    odd = definition(inputs={"n": 1 << 70})  # orjson refuses ints past 64 bits
    cache = CompileCache(compiler)
    calls = compiler.calls
    assert cache.get(odd) is not cache.get(odd)
    assert (compiler.calls - calls, len(cache)) == (2, 0)


def test_a_definition_checked_against_fewer_agents_is_its_own_entry() -> None:
    """A tenant restricted to some agents never gets (or gives) another's compile."""
    compiler = CountingCompiler()
    cache = CompileCache(compiler)
    everyone = cache.get(definition())
    with pytest.raises(DefinitionError):
        cache.get(definition(), ("a",))  # agent "b" is not allowed here
    assert cache.get(definition(), ("a", "b")) is not everyone
    assert cache.get(definition()) is everyone
    assert compiler.calls == 3
