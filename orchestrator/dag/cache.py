"""Compiled definitions cached by content hash: the same submitted DAG is compiled once.

Clients that run one workflow many times send the same definition with every
request; compiling it (parse, schema, graph checks, templates, expressions) costs far
more than hashing it. The key is a SHA-256 of the definition's canonical JSON (keys
sorted), so two requests that differ only in key order or whitespace share an entry,
plus the agents it was checked against (a tenant may be restricted to some agents:
its compile must not be served to another, or the other's to it).
Only definitions that compile are cached — a bad one is rejected afresh each time,
with its problems — and the cache is a bounded LRU, in entries and in the size of
the definitions it keeps. A `CompiledWorkflow` is immutable by contract and safe to
run many times at once (the built-in chain has always been shared that way). Big
definitions are compiled in worker threads (orchestrator/api/services.py), so the
entries are guarded by a lock; compiling itself runs outside it.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import orjson

from orchestrator.dag.compiler import CompiledWorkflow

AgentsAllowed = tuple[str, ...] | None

__all__ = ["DEFAULT_CACHE_ENTRIES", "DEFAULT_CACHE_MAX_DEFINITION_BYTES", "CompileCache"]

DEFAULT_CACHE_ENTRIES = 256
# A definition larger than this is compiled every time: a few giant definitions
# must not hold the memory of hundreds of everyday ones.
DEFAULT_CACHE_MAX_DEFINITION_BYTES = 256 * 1024


class CompileCache:
    """`get(raw, agents)` returns `compile(raw, agents)`, computed once per distinct pair."""

    def __init__(
        self,
        compile: Callable[[Any, AgentsAllowed], CompiledWorkflow],
        *,
        max_entries: int = DEFAULT_CACHE_ENTRIES,
        max_definition_bytes: int = DEFAULT_CACHE_MAX_DEFINITION_BYTES,
    ) -> None:
        self._compile = compile
        self._max_entries = max_entries
        self._max_bytes = max_definition_bytes
        self._entries: OrderedDict[tuple[AgentsAllowed, bytes], CompiledWorkflow] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, raw: Any, agents: AgentsAllowed = None) -> CompiledWorkflow:
        digest = self._digest(raw)
        key = None if digest is None else (agents, digest)
        if key is not None:
            with self._lock:
                cached = self._entries.get(key)
                if cached is not None:
                    self._entries.move_to_end(key)
                    self.hits += 1
                    return cached
                self.misses += 1
        compiled = self._compile(raw, agents)  # raises on a bad definition: nothing is cached
        if key is not None and self._max_entries > 0:
            with self._lock:
                self._entries[key] = compiled
                if len(self._entries) > self._max_entries:
                    self._entries.popitem(last=False)
        return compiled

    def _digest(self, raw: Any) -> bytes | None:
        try:
            canonical = orjson.dumps(raw, option=orjson.OPT_SORT_KEYS)
        except TypeError:  # not plain JSON (e.g. an int past 64 bits): compile uncached
            return None
        if len(canonical) > self._max_bytes:
            return None
        return hashlib.sha256(canonical).digest()
