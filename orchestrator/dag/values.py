"""The one boundary every value crosses before it is kept in a workflow's state.

Step outputs (agent answers, expression results, transforms) and workflow results
must be JSON that both stores can carry, so `json_value` makes them so, the same
way for every source:

- integers outside what orjson (both stores' serialiser) carries, -2**63 .. 2**64-1,
  become floats, exactly as orjson itself reads such a number from a request body;
  one too big even for a float is refused;
- NaN and infinities are refused (JSON has no such numbers);
- tuples and sets become lists (sets sorted when their items allow), object keys
  become strings;
- nesting deeper than `max_depth` is refused: it could not be written, read back
  or rendered without deep recursion;
- a value larger than `max_bytes` once written out is refused. It is measured
  before it is copied: an expression can build a value full of shared references
  cheaply (`[a, a]`, node after node), which written out doubles at every step, so
  copying it first would take the process's memory and the event loop with it.

Anything else (a Python object a node kind let through) is refused, so a buggy kind
cannot leave a value the store would choke on.

Most values are plain JSON already (an agent's answer as orjson decoded it: dicts,
lists, str, int within orjson's range, finite floats, bool, None), so one walk both
measures a value and checks that; a plain value is kept as it is, not rebuilt (the
caller must not change it afterwards), and only the others are converted.

`ValueSizes` remembers what that walk found about the values a run keeps (its step
outputs), so a template reading `{{ data.rows }}` node after node is charged the
size of `rows` without walking it again each time (orchestrator.dag.templates).

```
ValueError
└── UnstorableValue     # .code: "value_out_of_range" | "nesting_too_deep" | "not_json"
                        #        | "value_too_large"
```
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from orchestrator.dag.budget import DEFAULT_LIMITS, KnownSizes, measure
from orchestrator.errors import EvaluationError

__all__ = [
    "MAX_JSON_DEPTH",
    "UnstorableValue",
    "ValueSizes",
    "decoded_within",
    "json_depth",
    "json_value",
    "sized_within",
]

# Deeper than any real document; far below orjson's own limit (1024) and the
# interpreter's recursion limit, with room for the state document around it.
MAX_JSON_DEPTH = 64

_isfinite = math.isfinite
_MIN_INT = -(2**63)
_MAX_INT = 2**64 - 1


class UnstorableValue(EvaluationError, ValueError):
    """A value cannot be kept as JSON; `code` says why (the step's error type)."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code


def json_value(
    value: Any,
    *,
    max_depth: int = MAX_JSON_DEPTH,
    max_bytes: int = DEFAULT_LIMITS.node_bytes,
    known: KnownSizes | None = None,
) -> Any:
    """`value` as plain JSON (see the module docstring); raises UnstorableValue.

    A value that is plain JSON already, within `max_depth` and `max_bytes`, is returned
    as it is (the same object); any other is converted into a new one. Containers in
    `known` (ValueSizes.entries) are not walked again.
    """
    return _checked(value, max_depth, max_bytes, known)[0]


def decoded_within(source: bytes, *, max_bytes: int, max_depth: int = MAX_JSON_DEPTH) -> bool:
    """Whether any value orjson read from (a part of) the JSON body `source` is sure to be
    kept as it is by `json_value(value, max_depth=max_depth, max_bytes=max_bytes)`, so the
    walk can be skipped.

    orjson yields plain JSON only: dicts with str keys, lists, str, ints within 64 bits
    (larger ones become floats), finite floats (it refuses NaN and infinities), bool and
    None. Every container opens with a "[" or "{" byte, so none nests deeper than the
    body has of those. And the size the walk counts is at most 3 per byte of the body: a
    string counts its characters (each at least a byte) and its quotes; an int at most
    about 1.1 per digit; a float, null or boolean 8 (each at least 3 bytes written); each
    item and key 1 or 2 more, where the body has at least a comma, a colon or a bracket
    (tests/orchestrator/dag/test_values.py checks this on generated bodies).
    """
    if 3 * len(source) > max_bytes:
        return False
    return source.count(b"[") + source.count(b"{") <= max_depth


def sized_within(
    parts: Iterable[Any], depths: Iterable[int], known: KnownSizes, max_depth: int
) -> int | None:
    """What `json_value`'s walk counts for `parts`, values placed at `depths` in a value
    being built (orchestrator.dag.templates' `render_json`), when each is a str, a plain
    scalar, or a dict or list `known` holds (its size and height, found when it was kept
    or learned) nested within `max_depth`; None when one of them needs the walk."""
    total = 0
    for part, depth in zip(parts, depths, strict=False):  # (one depth per part: no check)
        kind = type(part)
        if kind is str:
            total += len(part) + 2
        elif kind is dict or kind is list:
            entry = known.get(id(part))
            if entry is None or depth + entry[2] > max_depth:
                return None
            total += entry[1]
        else:
            try:
                total += _scalar_size(part, kind)
            except _NotPlain:
                return None
    return total


def _checked(
    value: Any, max_depth: int, max_bytes: int, known: KnownSizes | None
) -> tuple[Any, _Survey | None]:
    """(the value as plain JSON, the walk that found it plain; None if it was converted)."""
    survey = _Survey(max_bytes, max_depth, known)
    try:
        size = survey.size(value, 0)
    except _NotPlain:
        pass
    else:
        if size > max_bytes:
            raise _too_large(max_bytes)
        return value, survey
    # The general path. measure() walks each distinct container once, so this check is
    # linear in what was really built, however many times it is referenced.
    if measure(value, max_bytes) > max_bytes:
        raise _too_large(max_bytes)
    return _convert(value, max_depth, 0), None


def _too_large(max_bytes: int) -> UnstorableValue:
    return UnstorableValue(
        f"the value is larger than {max_bytes:,} bytes written out", code="value_too_large"
    )


class _NotPlain(Exception):
    """The walk met something plain JSON does not hold as it is: convert the value."""


class _Survey:
    """One walk of a value that is expected to be plain JSON: its size as `measure`
    counts it (stopping as soon as it is over `limit`), each distinct container walked
    once; raises _NotPlain at the first thing that is not plain JSON or nests deeper
    than `max_depth`. `found` keeps, per container, (container, size, height)."""

    __slots__ = ("found", "height", "known", "limit", "max_depth")

    def __init__(self, limit: int, max_depth: int, known: KnownSizes | None) -> None:
        self.limit = limit
        self.max_depth = max_depth
        # (Entries are non-empty tuples: `found.get(k) or known.get(k)` finds either.)
        self.known: KnownSizes = known if known is not None else {}
        self.found: dict[int, tuple[Any, int, int]] = {}
        self.height = 0

    def size(self, item: Any, depth: int) -> int:
        kind = type(item)
        if kind is str:
            return len(item) + 2
        if kind is dict or kind is list:
            return self._container(item, kind is dict, depth)
        return _scalar_size(item, kind)

    def _container(self, item: Any, is_dict: bool, depth: int) -> int:
        """A dict's or list's size; sets `height` to its height (1: nothing nested)."""
        key = id(item)
        seen = self.found.get(key) or self.known.get(key)
        if seen is not None:
            if depth + seen[2] > self.max_depth:
                raise _NotPlain
            self.height = seen[2]
            return seen[1]
        if depth >= self.max_depth:
            raise _NotPlain
        total = _keys_size(item) + 2 if is_dict else 2
        height = 0
        limit = self.limit
        found = self.found
        known = self.known
        max_depth = self.max_depth
        deeper = depth + 1
        # The walk, inlined for its commonest cases (strings, nested containers, floats,
        # null and booleans): a call per scalar was a third of the walk.
        for child in item.values() if is_dict else item:
            kind = type(child)
            if kind is str:
                total += len(child) + 3
            elif kind is dict or kind is list:
                # A container walked already (or known) is looked up here, not in a
                # call of its own: a kept template output is mostly such values.
                seen = found.get(id(child)) or known.get(id(child))
                if seen is not None and deeper + seen[2] <= max_depth:
                    total += seen[1] + 1
                    below = seen[2]
                else:  # not seen yet; or too deep, which `_container` raises
                    total += self._container(child, kind is dict, deeper) + 1
                    below = self.height
                if below > height:
                    height = below
            elif (kind is float and _isfinite(child)) or child is None or kind is bool:
                total += 9
            else:  # ints, and what is refused (a NaN among them)
                total += _scalar_size(child, kind) + 1
            if total > limit:
                return limit + 1
        self.height = height + 1
        self.found[key] = (item, total, height + 1)
        return total


def _keys_size(item: dict[Any, Any]) -> int:
    total = 0
    for name in item:
        if type(name) is not str:
            raise _NotPlain
        total += len(name) + 3
    return total


def _decoded_dict(item: dict[str, Any]) -> tuple[int, int]:
    """`_Survey.size` of a dict orjson decoded within `decoded_within`'s bounds (an
    adopted answer's part), and its height as `_Survey` counts it (1: nothing nested):
    plain JSON, str keys, no container shared, nested and sized within bounds, so none
    of the walk's checks (what is plain, how deep, how big, what was seen) is needed.
    `_decoded_list` is the same for a list; each calls the right one for a nested
    container directly (no call to pick it)."""
    # Each key counted as its item is read (its length, its quotes, its colon): for the
    # few keys of a row, cheaper than a pass over the keys of their own.
    total = 2
    height = 1
    for key, child in item.items():
        kind = type(child)
        if kind is str:
            total += len(key) + len(child) + 6
        elif kind is dict:
            size, below = _decoded_dict(child)
            total += len(key) + size + 4
            if below >= height:
                height = below + 1
        elif kind is list:
            size, below = _decoded_list(child)
            total += len(key) + size + 4
            if below >= height:
                height = below + 1
        elif kind is int:
            total += len(key) + (child.bit_length() // 3 or 1) + 4
        else:  # a float, null or a boolean
            total += len(key) + 12
    return total, height


def _decoded_list(item: list[Any]) -> tuple[int, int]:
    total = 2
    height = 1
    for child in item:
        kind = type(child)
        if kind is str:
            total += len(child) + 3
        elif kind is dict:
            # A dict in a list (a row, most often: [{"region": "EMEA", "revenue": 1.5},
            # ...]) is sized here, `_decoded_dict` written out for its items, a call made
            # only for a container inside it: a call and a tuple per row was a third of
            # the walk of a table.
            total += 3
            below = 1
            for key, value in child.items():
                kind = type(value)
                if kind is str:
                    total += len(key) + len(value) + 6
                elif kind is dict or kind is list:
                    size, deeper = _decoded_dict(value) if kind is dict else _decoded_list(value)
                    total += len(key) + size + 4
                    below = max(below, deeper + 1)  # (rare in a row: a call is no matter)
                elif kind is int:
                    total += len(key) + (value.bit_length() // 3 or 1) + 4
                else:  # a float, null or a boolean
                    total += len(key) + 12
            if below >= height:
                height = below + 1
        elif kind is list:
            size, below = _decoded_list(child)
            total += size + 1
            if below >= height:
                height = below + 1
        elif kind is int:
            total += (child.bit_length() // 3 or 1) + 1
        else:  # a float, null or a boolean
            total += 9
    return total, height


def _decoded_scalar(item: Any, kind: type) -> int:
    if kind is int:
        bits: int = item.bit_length()
        return max(1, bits // 3)
    return 8  # a float, null or a boolean


def _scalar_size(item: Any, kind: type) -> int:
    """A scalar's size as `measure` counts it; _NotPlain for what plain JSON lacks."""
    if kind is int:
        if _MIN_INT <= item <= _MAX_INT:
            bits: int = item.bit_length()
            return max(1, bits // 3)
        raise _NotPlain
    if kind is float:
        if math.isfinite(item):
            return 8
        raise _NotPlain
    if item is None or kind is bool:
        return 8
    raise _NotPlain


class ValueSizes:
    """What walking the values a run keeps found: each big container's size, so a
    template reading one again is charged without another walk (templates' `sizes`).

    Only containers of at least `min_size` are remembered (smaller ones cost less to
    walk again than to keep), and at most `max_entries` of them per run, outermost
    first, so the memory this takes stays small (~100 KB) whatever the outputs hold.
    Each entry holds its container: a remembered id can never be reused by another
    object while the entry exists. Values kept through here must not be changed.
    """

    __slots__ = ("_adopted", "adopting", "entries", "max_entries", "min_size")

    def __init__(self, *, min_size: int = 16, max_entries: int = 1024) -> None:
        self.min_size = min_size
        self.max_entries = max_entries
        # (container, size, height) of each remembered container, by its id: read by
        # every render (an attribute, not a property: no call each), changed only here.
        self.entries: dict[int, tuple[Any, int, int]] = {}
        # Values kept without a walk (`adopt`), by id. Holding each one keeps its id from
        # being reused.
        self._adopted: dict[int, Any] = {}
        # Whether any value was adopted (else `learn` has nothing to do): read per render.
        self.adopting = False

    def keep(self, value: Any, *, max_bytes: int, max_depth: int = MAX_JSON_DEPTH) -> Any:
        """`json_value(value, ...)`, remembering the sizes of the value's big containers."""
        checked, survey = _checked(value, max_depth, max_bytes, self.entries)
        if survey is not None:
            self._remember(survey.found)
        return checked

    def adopt(self, value: Any) -> Any:
        """Keep `value` as it is, unwalked. Only for a value orjson decoded from a body
        within `decoded_within`'s bounds (an agent's answer as our client read it): one
        `keep` would return unchanged, and whose parts `learn` can size without the
        walk's checks. What `keep` would have remembered of it is found later, a part at
        a time, when a template reads that part: a chain's answers are read a part
        each, and most never whole."""
        self._adopted[id(value)] = value
        self.adopting = True
        return value

    def learn(self, root: Any, part: Any) -> int | None:
        """The size of `part`, a container read from `root` (a value in the scope), when
        `root` was adopted: `part` is sized as `keep`'s walk sizes it (exactly: an adopted
        value is plain JSON within its bounds, `_decoded_dict`) and remembered, so the
        next read is charged from the entry. None when `root` was not adopted, or `part`
        is smaller than `min_size`: the caller measures `part` itself, as it would have
        after `keep`.

        Renders charge exactly what they charge after `keep`. The one difference is past
        `max_entries`, where the two remember different containers (`keep` the outermost
        of the first values kept, this the parts read first): a render that cannot
        afford a part then fails with the same error, though the budget it leaves (spent
        past zero) may differ, as may the resource named when both run out at once.
        """
        if id(root) not in self._adopted:
            return None
        kind = type(part)
        if kind is dict:
            size, height = _decoded_dict(part)
        elif kind is list:
            size, height = _decoded_list(part)
        elif kind is str:
            size, height = len(part) + 2, 0
        else:
            size, height = _decoded_scalar(part, kind), 0
        if size < self.min_size:
            # One `keep` would not have remembered (too small to be worth it) is measured
            # by the caller as it would have been: a render that cannot afford it then
            # charges what `measure` counts within its budget, not the exact size.
            return None
        if len(self.entries) < self.max_entries:
            # The part alone (not the containers inside it: a later read of one of those
            # is learned then, to the same size).
            self.entries[id(part)] = (part, size, height)
        return size

    def _remember(self, found: dict[int, tuple[Any, int, int]]) -> None:
        entries = self.entries
        room = self.max_entries - len(entries)
        if len(found) <= room:  # the common case: all of it fits
            least = self.min_size
            entries.update({key: e for key, e in found.items() if e[1] >= least})
        else:
            # Newest first: a container is found after everything inside it, so the
            # outermost (biggest) ones come first when there is room for only some.
            for key, entry in reversed(found.items()):
                if room <= 0:
                    break
                if entry[1] >= self.min_size and key not in entries:
                    entries[key] = entry
                    room -= 1

    def __len__(self) -> int:
        return len(self.entries)


def _convert(value: Any, max_depth: int, depth: int) -> Any:
    if value is None or isinstance(value, str | bool):
        return value
    if isinstance(value, int):
        if _MIN_INT <= value <= _MAX_INT:
            return value
        try:
            return float(value)
        except OverflowError:
            raise UnstorableValue(
                f"the number {_digits(value)} is too large to store", code="value_out_of_range"
            ) from None
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        raise UnstorableValue(f"{value} is not a JSON number", code="value_out_of_range")
    if depth >= max_depth:
        raise UnstorableValue(
            f"the value is nested more than {max_depth} levels deep", code="nesting_too_deep"
        )
    if isinstance(value, dict):
        return {
            key if isinstance(key, str) else str(key): _convert(item, max_depth, depth + 1)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [_convert(item, max_depth, depth + 1) for item in value]
    if isinstance(value, set | frozenset):
        items = [_convert(item, max_depth, depth + 1) for item in value]
        try:
            return sorted(items)
        except TypeError:
            return items
    raise UnstorableValue(f"a {type(value).__name__} is not a JSON value", code="not_json")


def json_depth(value: Any, limit: int = MAX_JSON_DEPTH) -> int:
    """How deep `value` nests (a scalar is 0), counting at most to `limit + 1`."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        depth += 1
        if depth > deepest:
            deepest = depth
            if deepest > limit:
                return deepest
        stack.extend((child, depth) for child in children)
    return deepest


def _digits(value: int) -> str:
    # str() of a huge int is itself slow (and Python caps it at 4300 digits).
    return f"of {value.bit_length()} bits"
