"""Templates: JSON values with ``{{ path }}`` placeholders, rendered against a scope.

A workflow node's input is a template. Every string in it (dict keys excepted) may
hold placeholders naming a dot path (see :mod:`orchestrator.dag.paths`); there are
no expressions inside placeholders, only paths, so rendering can only copy data.

- A string that is exactly one placeholder, ``"{{ nlp.intent }}"``, renders to the
  referenced value itself, keeping its type (a list stays a list, None stays None).
  Whitespace is allowed inside the braces; any text outside them, whitespace
  included, makes the string an interpolation.
- Any other string renders by interpolation: strings as they are, numbers with
  ``str()``, and everything else (objects, arrays, booleans, null) as compact JSON,
  so ``"n={{ x }}"`` with ``x = True`` gives ``"n=true"`` as the JSON around it would.

Rendering builds new dicts and lists for the template's own structure; a value
taken from the scope by a whole-value placeholder is returned as is, not copied.

```
ValueError
└── TemplateError     # malformed placeholder, or a path that does not resolve;
                      # .template (the string), .reason, .path, .location
```
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from orchestrator.dag.budget import DEFAULT_LIMITS, Budget, KnownSizes, measure
from orchestrator.dag.paths import PathError, json_type, resolve_segments, split_path
from orchestrator.dag.values import MAX_JSON_DEPTH, ValueSizes, json_value, sized_within
from orchestrator.errors import EvaluationError

__all__ = ["MAX_DEPTH", "Template", "TemplateError", "compile_template"]

# Deeper than any real node input, and far from the interpreter's recursion limit.
MAX_DEPTH = 64

# A string that is exactly one placeholder holding a well-formed path (split_path's
# rule: segments of [A-Za-z0-9_-] joined by dots). Its `\s` is str.strip()'s whitespace.
# Groups: the path, its root name.
_WHOLE = re.compile(r"\{\{\s*(([A-Za-z0-9_-]+)(?:\.[A-Za-z0-9_-]+)*)\s*\}\}")
_OPEN = "{{"
_CLOSE = "}}"
# Tuples, not `list | tuple` unions: a union in a function body is built on every call.
_ARRAYS = (list, tuple)
_SCALARS = (bool, int, float)


class TemplateError(EvaluationError, ValueError):
    """A template is malformed, or a path in it did not resolve while rendering.

    `template` is the string holding the bad placeholder, `reason` what is wrong,
    `path` the placeholder's path when there is one, `location` where the string
    sits in the template's JSON (``"filters.0.region"``; ``""`` for the root).
    """

    def __init__(
        self,
        reason: str,
        *,
        template: str,
        path: str | None = None,
        location: str = "",
    ) -> None:
        at = f" at {location!r}" if location else ""
        super().__init__(f"template {template!r}{at}: {reason}")
        self.template = template
        self.reason = reason
        self.path = path
        self.location = location


# The compiled nodes are private and never mutated after compile; they are not frozen
# because a frozen dataclass takes three times as long to build (10,000-node workflows).
@dataclass(slots=True)
class _Ref:
    # A validated path, split again when rendered: a tuple of its segments per
    # placeholder would cost more at compile (allocation, memory, GC) than the split
    # costs at render, which happens once per node run, next to an agent call.
    path: str


@dataclass(slots=True)
class _Whole(_Ref):
    """A string that is exactly one placeholder: its own reference, with where it is."""

    text: str
    location: str


@dataclass(slots=True)
class _Interpolated:
    text: str
    location: str
    parts: tuple[str | _Ref, ...]


# The compiled form mirrors the JSON: dicts and lists of compiled nodes, other values as is.
_Node = _Whole | _Interpolated | dict[str, Any] | list[Any] | str | int | float | bool | None


def _format(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        # Not JSON-serialisable (e.g. a set a caller put in the scope): say what it is.
        return str(value)


def _parse_string(text: str, location: str, found: dict[str, str]) -> _Node:
    """Compile one string; `found` collects each path read (path -> its root name)."""
    if _OPEN not in text:
        return text
    whole = _WHOLE.fullmatch(text)
    if whole is not None:
        # The common case, "{{ path }}": one regex both finds and validates the path
        # (split_path's rule), giving what the general scanner below would give.
        path, root = whole.group(1, 2)
        found.setdefault(path, root)
        return _Whole(path, text, location)
    return _scan(text, location, found)


def _scan(text: str, location: str, found: dict[str, str]) -> _Node:
    """The general case: any number of placeholders, text around them, malformed ones."""

    def fail(reason: str, path: str | None = None) -> TemplateError:
        return TemplateError(reason, template=text, path=path, location=location)

    parts: list[str | _Ref] = []
    end = 0
    # str.find, not a regex: `\{\{(.*?)\}\}` retried at every "{{" of a string with no
    # "}}" scans to its end each time, quadratic in the string's length.
    while (start := text.find(_OPEN, end)) != -1:
        close = text.find(_CLOSE, start + 2)
        if close == -1:
            raise fail("unclosed '{{'")
        before = text[end:start]
        content = text[start + 2 : close]
        if _OPEN in content:
            raise fail("unclosed '{{' before another '{{'")
        path = content.strip()
        if not path:
            raise fail("empty placeholder '{{ }}'")
        try:
            segments = split_path(path)
        except PathError as exc:
            raise fail(f"invalid path {path!r}: {exc.reason}", path) from exc
        found.setdefault(path, segments[0])
        ref = _Ref(path)
        if before:
            parts.append(before)
        parts.append(ref)
        end = close + 2
    rest = text[end:]
    if _OPEN in rest:
        raise fail("unclosed '{{'")
    if rest:
        parts.append(rest)
    if len(parts) == 1 and isinstance(parts[0], _Ref):
        return _Whole(parts[0].path, text, location)
    return _Interpolated(text, location, tuple(parts))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:60] + "…"


def _join(location: str, key: str | int) -> str:
    return f"{location}.{key}" if location else str(key)


def _compile(value: Any, location: str, depth: int, found: dict[str, str]) -> _Node:
    """Compile `value` (at `location`, `depth` levels down); paths read go to `found`."""
    if depth > MAX_DEPTH:
        raise TemplateError(
            f"nested more than {MAX_DEPTH} levels deep", template=_short(value), location=location
        )
    if isinstance(value, str):
        return _parse_string(value, location, found)
    if type(value) is dict or isinstance(value, Mapping):
        compiled: dict[str, Any] = {}
        # Node inputs are mostly objects of strings: those are compiled here rather than
        # by a call per item (the depth check above is `strings_ok` for them).
        strings_ok = depth < MAX_DEPTH
        for key, item in value.items():
            if not isinstance(key, str):
                raise TemplateError(
                    f"object keys must be strings, not {json_type(key)}",
                    template=_short(key),
                    location=location,
                )
            where = f"{location}.{key}" if location else str(key)
            if strings_ok and type(item) is str:
                compiled[key] = item if _OPEN not in item else _parse_string(item, where, found)
            else:
                compiled[key] = _compile(item, where, depth + 1, found)
        return compiled
    if isinstance(value, _ARRAYS):
        return [
            _compile(item, _join(location, i), depth + 1, found) for i, item in enumerate(value)
        ]
    if value is None or isinstance(value, _SCALARS):
        return value
    raise TemplateError(
        f"{json_type(value)} is not a JSON value", template=_short(value), location=location
    )


_Missing = Literal["error", "null"]


def _lookup(
    scope: Mapping[str, Any], ref: _Ref, node: _Whole | _Interpolated, missing: _Missing
) -> tuple[bool, Any]:
    """(found, value); raises TemplateError for a missing path when `missing` is "error"."""
    try:
        return True, resolve_segments(scope, ref.path.split("."))
    except PathError as exc:
        if missing == "null":
            return False, None
        raise TemplateError(
            str(exc), template=node.text, path=ref.path, location=node.location
        ) from exc


class _Meter:
    """Charges a render to its budget: every placeholder's value by its size, once per
    distinct value (a value repeated N times is charged N times, measured once); a
    value whose size is `known` already (a kept step output's) is not walked at all,
    and one read from an adopted step output is measured as keeping it would have
    (`lazy`: ValueSizes.learn)."""

    __slots__ = ("budget", "known", "lazy", "scope", "sizes")

    def __init__(
        self,
        budget: Budget,
        known: KnownSizes | None = None,
        lazy: ValueSizes | None = None,
        scope: Mapping[str, Any] | None = None,
    ) -> None:
        self.budget = budget
        self.known = known
        self.lazy = lazy
        self.scope = scope
        self.sizes: dict[int, int] = {}

    def value(self, value: Any, ref: _Ref) -> None:
        if value is None or isinstance(value, _SCALARS):
            self.budget.spend(1, 8)
            return
        if isinstance(value, str):
            self.budget.spend(1, len(value))
            return
        size = self.sizes.get(id(value))
        if size is None:
            entry = None if self.known is None else self.known.get(id(value))
            if entry is not None:
                size = entry[1]
            else:
                size = self._learned(value, ref)
                if size is None:
                    size = measure(value, max(0, self.budget.bytes_left), self.known)
            self.sizes[id(value)] = size
        self.budget.spend(1 + size // 64, size)

    def _learned(self, value: Any, ref: _Ref) -> int | None:
        if self.lazy is None or self.scope is None:
            return None
        return self.lazy.learn(self.scope.get(ref.path.split(".", 1)[0]), value)


def _render(node: _Node, scope: Mapping[str, Any], missing: _Missing, meter: _Meter) -> Any:
    if isinstance(node, _Whole):
        value = _lookup(scope, node, node, missing)[1]
        meter.value(value, node)
        return value
    if isinstance(node, _Interpolated):
        pieces: list[str] = []
        for part in node.parts:
            if isinstance(part, str):
                meter.budget.spend(1, len(part))
                pieces.append(part)
                continue
            found, value = _lookup(scope, part, node, missing)
            if found:
                # Sized before it is formatted: str() of a big value is as big as the value.
                meter.value(value, part)
                pieces.append(_format(value))
        return "".join(pieces)
    if isinstance(node, dict):
        meter.budget.spend(len(node), 8 * len(node))
        return {key: _render(item, scope, missing, meter) for key, item in node.items()}
    if isinstance(node, list):
        meter.budget.spend(len(node), 8 * len(node))
        return [_render(item, scope, missing, meter) for item in node]
    return node


# -- the planned render ------------------------------------------------------------------
#
# What `_render` does piece by piece (look a path up, charge the budget, build), the plan
# does in two passes: first every placeholder is looked up and priced (the template's
# own structure is priced once, when the plan is made), then, if the budget affords the
# whole render, it is charged once and the result built. Charges never go negative, so
# when the whole fits, no piece-by-piece charge would have failed: the result and what
# is left of the budget are the same. Anything else (a path that does not resolve, a
# budget that does not afford it, a value that is not plain JSON) goes to `_render`,
# which decides as it always did, errors and their order included.

# What `_render` charges 8 bytes for (exact types: a subclass is `_render`'s to decide).
_SCALAR_KINDS = frozenset((type(None), bool, int, float))
_Build = Callable[[Iterator[Any]], Any]


# A placeholder's path: its root name, then each other segment with the list index it
# names (None: not a number, so no list has it).
_Hole = tuple[str, tuple[tuple[str, int | None], ...]]


@dataclass(slots=True)
class _Plan:
    # Each placeholder in the order `_render` reaches it.
    holes: tuple[_Hole, ...]
    # What `_render` charges for the template's own structure (containers, literal text).
    ops: int
    nbytes: int
    # Whether `_render` charges the budget at all (a stopped budget raises at a charge).
    charges: bool
    # Builds the result from the placeholders' values, in `holes` order.
    build: _Build
    # What `json_value` would count of the result's own structure (None: it must walk it).
    shape: _Shape | None


@dataclass(frozen=True, slots=True)
class _Shape:
    """What `json_value`'s walk finds of a rendered template's own structure (containers,
    keys, constants; placeholders' values not counted): its size, its height (containers
    nested; a value placed at depth d must nest at most MAX_JSON_DEPTH - d more), and
    each placeholder's depth, in `holes` order. Only for a template of whole placeholders
    and plain JSON constants: an interpolation's length is known only once built."""

    size: int
    height: int
    depths: tuple[int, ...]


def _plan(node: _Node) -> _Plan:
    holes: list[_Hole] = []
    cost = [0, 0, 0]  # ops, bytes, charges
    build = _builder(node, holes, cost)
    depths: list[int] = []
    measured = _shape(node, 0, depths)
    shape = None if measured is None else _Shape(measured[0], measured[1], tuple(depths))
    return _Plan(tuple(holes), cost[0], cost[1], bool(cost[2]), build, shape)


def _shape(node: _Node, depth: int, depths: list[int]) -> tuple[int, int] | None:
    """(size, height) of `node`'s own structure as `json_value`'s walk counts it (the
    placeholders' values left out, their depths appended to `depths` in `_builder`'s
    order), or None when the walk must decide (an interpolation, a constant that is not
    plain JSON: an int beyond 64 bits, a float that is not finite, a subclass)."""
    kind = type(node)
    if kind is _Whole:
        depths.append(depth)
        return 0, 0
    if kind is dict or kind is list:
        assert isinstance(node, dict | list)  # (for mypy: `kind is` does not narrow)
        size, height = 2, 0
        items: list[tuple[str | None, _Node]] = (
            list(node.items()) if isinstance(node, dict) else [(None, item) for item in node]
        )
        for key, item in items:
            if key is not None:
                if type(key) is not str:
                    return None
                size += len(key) + 3
            inner = _shape(item, depth + 1, depths)
            if inner is None:
                return None
            size += inner[0] + 1
            height = max(height, inner[1])
        return size, height + 1
    parts = sized_within([node], (depth,), {}, MAX_JSON_DEPTH)
    return None if parts is None else (parts, 0)


def _hole(path: str) -> _Hole:
    # Segments are [A-Za-z0-9_-] (split_path's rule): isdigit() means int() takes it.
    root, *rest = path.split(".")
    return root, tuple((segment, int(segment) if segment.isdigit() else None) for segment in rest)


def _builder(node: _Node, holes: list[_Hole], cost: list[int]) -> _Build:
    if isinstance(node, _Whole):
        holes.append(_hole(node.path))
        cost[2] += 1
        return next
    if isinstance(node, _Interpolated):
        parts: list[str | None] = []
        for part in node.parts:
            if isinstance(part, str):
                cost[0] += 1
                cost[1] += len(part)
                parts.append(part)
            else:
                holes.append(_hole(part.path))
                parts.append(None)
        cost[2] += 1
        texts = tuple(parts)

        def interpolate(values: Iterator[Any]) -> str:
            return "".join([_format(next(values)) if t is None else t for t in texts])

        return interpolate
    if isinstance(node, dict | list):
        cost[0] += len(node)
        cost[1] += 8 * len(node)
        cost[2] += 1
        pairs = node.items() if isinstance(node, dict) else enumerate(node)
        # (key, its builder, or None and its constant value)
        items = tuple(
            (key, None, item) if _constant(item) else (key, _builder(item, holes, cost), None)
            for key, item in pairs
        )
        if isinstance(node, dict):
            if items and all(b is next or b is None for _, b, _ in items):
                return _flat_dict(items)
            return lambda values: {k: c if b is None else b(values) for k, b, c in items}
        return lambda values: [c if b is None else b(values) for _, b, c in items]
    return lambda values: node


def _flat_dict(items: tuple[tuple[Any, _Build | None, Any], ...]) -> _Build:
    """The builder of a dict of whole placeholders and constants only (most node
    inputs: {"a": "{{ x }}", "b": "{{ y.z }}", "n": 3}), in the template's key order."""
    holes = tuple(k for k, b, _ in items if b is not None)
    if len(holes) == len(items):
        # Placeholders only: built at C speed.
        return lambda values: dict(zip(holes, values))  # noqa: B905 (one value per key)
    # A copy of the constants (placeholders' keys in their places), then each value.
    constants = {k: c for k, _, c in items}

    def build(values: Iterator[Any]) -> dict[str, Any]:
        built = constants.copy()
        for key in holes:
            built[key] = next(values)
        return built

    return build


def _constant(node: _Node) -> bool:
    # What `_render` returns as it is: scalars and literal strings (not containers: those
    # are built anew on every render, and charged).
    return node is None or isinstance(node, str | bool | int | float)


def _resolved(plan: _Plan, scope: Mapping[str, Any]) -> list[Any] | None:
    """Each placeholder's value (resolve_segments for plain dicts and lists), or None
    when one does not resolve so (a missing path, another kind of container)."""
    values: list[Any] = []
    for root, rest in plan.holes:
        try:
            value = scope[root]
            for segment, index in rest:
                kind = type(value)
                if kind is dict:
                    value = value[segment]
                elif kind is list and index is not None and index < len(value):
                    value = value[index]
                else:
                    return None
        except KeyError:
            return None
        values.append(value)
    return values


def _priced(
    plan: _Plan,
    scope: Mapping[str, Any],
    budget: Budget,
    known: KnownSizes | None,
    lazy: ValueSizes | None,
) -> list[Any] | None:
    """Each placeholder's value, the whole render charged to `budget` (`plan.build` makes
    the result from them), or None, nothing charged, when `_render` must decide."""
    values = _resolved(plan, scope)
    if values is None:
        return None
    ops = plan.ops
    nbytes = plan.nbytes
    measured: dict[int, int] | None = None
    position = -1
    for value in values:
        position += 1
        kind = type(value)
        if kind is str:
            ops += 1
            nbytes += len(value)
        elif kind in _SCALAR_KINDS:
            ops += 1
            nbytes += 8
        elif kind is dict or kind is list:
            key = id(value)
            # A known size first (a kept or learned step output's: most reads), then one
            # measured earlier in this render (a value read twice is walked once).
            entry = None if known is None else known.get(key)
            if entry is not None:
                size = entry[1]
            elif measured is not None and key in measured:
                size = measured[key]
            else:
                # Within what is left after everything else this render charges: a
                # value bigger than that cannot fit (and `_render` says so).
                room = budget.bytes_left - nbytes
                # A part of an adopted step output (read from `root`) is measured whole,
                # as keeping it would have, and remembered for the next template reading
                # it; any other is measured up to `room` (more when it is bigger).
                root = scope[plan.holes[position][0]]
                learned = None if lazy is None else lazy.learn(root, value)
                size = measure(value, max(0, room), known) if learned is None else learned
                if size > room:
                    return None
                if measured is None:
                    measured = {}
                measured[key] = size
            ops += 1 + size // 64
            nbytes += size
        else:
            return None
    if plan.charges and not budget.spend_if_affords(ops, nbytes):
        return None
    return values


@dataclass(frozen=True, slots=True)
class Template:
    """A checked template, ready to render any number of times.

    `references` are the root names its paths start with (``{"inputs", "nlp"}``);
    `paths` every path it references, once each, in order of first appearance.
    Build one with compile_template.
    """

    raw: Any = field(hash=False)
    references: frozenset[str]
    paths: tuple[str, ...]
    _compiled: Any = field(repr=False, compare=False)
    # The render plan (_plan), made on the first render: a template is compiled once per
    # definition (the definition cache), and many are never rendered (a skipped node).
    _planned: _Plan | None = field(default=None, repr=False, compare=False)

    def _plan_for(self, missing: _Missing) -> _Plan:
        """The render plan (made on the first render), once `missing` is checked."""
        if missing not in ("error", "null"):
            raise ValueError(f"missing must be 'error' or 'null', not {missing!r}")
        plan = self._planned
        if plan is None:
            plan = _plan(self._compiled)
            object.__setattr__(self, "_planned", plan)
        return plan

    def render(
        self,
        scope: Mapping[str, Any],
        *,
        missing: _Missing = "error",
        budget: Budget | None = None,
        sizes: KnownSizes | ValueSizes | None = None,
    ) -> Any:
        """Render against `scope` (root name -> value), spending from `budget`.

        A path that does not resolve raises TemplateError naming it with
        ``missing="error"``; with ``missing="null"`` it renders as None when it is
        the whole value and as ``""`` inside a string. Every value placed in the
        result is charged by its size (bytes), so a template repeating a big value
        stops with BudgetExceeded instead of growing the process; without a budget,
        a fresh one of the default node size. `sizes` are the sizes already known of
        values in the scope (orchestrator.dag.values.ValueSizes.entries): those are
        charged without being walked again; given the ValueSizes itself, parts of the
        values it adopted are measured as keeping them would have (ValueSizes.learn).
        """
        plan = self._planned
        if plan is None or (missing != "error" and missing != "null"):
            plan = self._plan_for(missing)  # the first render, or a bad `missing`
        if budget is None:
            budget = Budget(ops=DEFAULT_LIMITS.node_ops, nbytes=DEFAULT_LIMITS.node_bytes)
        lazy: ValueSizes | None = None
        known: KnownSizes | None
        if isinstance(sizes, ValueSizes):
            known = sizes.entries
            if sizes.adopting:
                lazy = sizes
        else:
            known = sizes
        values = _priced(plan, scope, budget, known, lazy)
        if values is None:
            return _render(self._compiled, scope, missing, _Meter(budget, known, lazy, scope))
        return plan.build(iter(values))

    def render_json(
        self,
        scope: Mapping[str, Any],
        *,
        missing: _Missing = "error",
        budget: Budget,
        sizes: ValueSizes,
        max_bytes: int,
    ) -> Any:
        """`json_value(self.render(scope, ...), max_bytes=max_bytes, known=sizes.entries)`:
        the same value, the same errors, the same budget spent; the value's walk is
        skipped when the render itself proves it plain JSON within `max_bytes` and
        MAX_JSON_DEPTH (every placeholder's value a string, a plain scalar or a container
        whose size and height `sizes` holds, in a template of plain constants without
        interpolations: `_Shape`). For a workflow's output, built from its steps' outputs.
        """
        plan = self._plan_for(missing)
        known = sizes.entries
        lazy = sizes if sizes.adopting else None
        values = _priced(plan, scope, budget, known, lazy)
        if values is None:
            rendered = _render(self._compiled, scope, missing, _Meter(budget, known, lazy, scope))
        else:
            rendered = plan.build(iter(values))
            shape = plan.shape
            if shape is not None and shape.height <= MAX_JSON_DEPTH:
                size = sized_within(values, shape.depths, known, MAX_JSON_DEPTH)
                if size is not None and size + shape.size <= max_bytes:
                    return rendered
        return json_value(rendered, max_bytes=max_bytes, known=known)


def compile_template(value: Any) -> Template:
    """Compile any JSON value (dict/list/str/number/bool/None) into a Template.

    Raises TemplateError on a malformed placeholder (unclosed, empty, bad path),
    a non-string object key, a non-JSON value, or nesting deeper than MAX_DEPTH.
    """
    # One walk compiles and collects every path (-> its root name) in order of first use.
    found: dict[str, str] = {}
    compiled = _compile(value, "", 0, found)
    return Template(value, frozenset(found.values()), tuple(found), compiled)
