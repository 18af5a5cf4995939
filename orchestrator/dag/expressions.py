"""Sandboxed expressions for conditions and filters in workflow definitions.

Clients send these inside workflow JSON, so nothing here may run arbitrary code.
The language is a small, pure subset of Python expressions: literals (str, int,
float, bool, None, lists, tuples, dicts, sets), arithmetic, comparisons, ``in``,
``and``/``or``/``not``, ternaries, subscripts and slices, ``a.b`` as key lookup,
and calls to the functions in ALLOWED_FUNCTIONS. Two layers keep it that way:

1. ``compile_expression`` parses with :mod:`ast` and checks every node against an
   allow-list before anything runs: no name or attribute starting with ``_``, no
   call except to an allowed function by name (so no method calls), no lambdas,
   comprehensions, f-strings, walrus or unpacking; source length, node count and
   nesting depth are capped.
2. ``Expression.evaluate`` walks the checked tree with our own small evaluator (it
   was simpleeval with its private hooks overridden; owning the ~200 lines lets every
   step be charged to a budget): a name is a key of the scope, ``a.b`` is ``a["b"]``
   on a mapping and nothing else (``getattr`` is never called), and the operators
   refuse results too big to build (``9**9**9``, ``'a'*10**9``, ``[0]*10**9``,
   ``1<<10**9``, ``'%999999999d' % 1``).
3. Every node evaluated and every item an operation walks is charged to a
   :class:`~orchestrator.dag.budget.Budget` (operations and bytes, per node and per
   workflow) as evaluation goes, so no expression can run or grow without bound.

```
ValueError
└── ExpressionError    # refused at compile time, or failed at run time; .expr, .reason
```
"""

from __future__ import annotations

import ast
import math
import operator as op
import types
import warnings
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

from orchestrator.dag.budget import (
    DEFAULT_LIMITS,
    Budget,
    BudgetExceeded,
    EvaluationStopped,
    NeedsOffload,
    measure,
)
from orchestrator.dag.paths import json_type, with_article
from orchestrator.errors import EvaluationError

__all__ = [
    "ALLOWED_FUNCTIONS",
    "MAX_DEPTH",
    "MAX_INT_BITS",
    "MAX_NODES",
    "MAX_SEQUENCE_LENGTH",
    "MAX_SOURCE_LENGTH",
    "MAX_VALUE_SIZE",
    "Expression",
    "ExpressionError",
    "compile_expression",
]

MAX_SOURCE_LENGTH = 1_000
MAX_NODES = 400
# The evaluator recurses ~2 Python frames per tree level; 50 levels stays far from the
# interpreter's recursion limit whatever the caller's own stack depth.
MAX_DEPTH = 50
# Integers built by the expression (``**``, ``*``, ``<<``) stay below this many bits.
MAX_INT_BITS = 4_096
# Strings, lists and tuples built by ``*`` or ``+`` hold at most this many items.
MAX_SEQUENCE_LENGTH = 100_000
# A repeated sequence's total size, nested items and string characters included:
# ``[data.rows] * 1000`` is cheap to build but expensive to compare or print.
MAX_VALUE_SIZE = 1_000_000
_MAX_ROUND_DIGITS = 100
_NO_NAMES: frozenset[str] = frozenset()
_MESSAGE_SOURCE_CHARS = 120


class ExpressionError(EvaluationError, ValueError):
    """An expression was refused (compile time) or failed (run time).

    `expr` is the source as written, `reason` says what is wrong in words meant
    for the person who wrote the expression. The message is both, e.g.
    ``expression 'x.__class__': access to '__class__' is not allowed``.
    """

    def __init__(self, reason: str, *, expr: str) -> None:
        shown = expr if len(expr) <= _MESSAGE_SOURCE_CHARS else expr[:_MESSAGE_SOURCE_CHARS] + "…"
        super().__init__(f"expression {shown!r}: {reason}")
        self.expr = expr
        self.reason = reason


class _Refused(Exception):
    """Raised inside the evaluator; Expression.evaluate turns it into ExpressionError."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# -- allowed functions ---------------------------------------------------------------


def _sum(values: Iterable[Any], start: int | float = 0) -> int | float:
    # Only numbers: builtin sum over lists or strings concatenates in quadratic time.
    total = start
    for value in values:
        if not isinstance(value, int | float):
            raise _Refused(f"sum() adds numbers, not {json_type(value)} values")
        total += value
    return total


def _round(number: Any, ndigits: int | None = None) -> Any:
    # round(5, -10**9) computes 10**(10**9) before it answers.
    if ndigits is not None and (not isinstance(ndigits, int) or abs(ndigits) > _MAX_ROUND_DIGITS):
        raise _Refused(f"round() takes a whole number of digits, at most {_MAX_ROUND_DIGITS}")
    return round(number, ndigits)


def _sorted(values: Iterable[Any], *, reverse: bool = False) -> list[Any]:
    # No key=: it would take a callable, and expressions have none to give.
    return sorted(values, reverse=bool(reverse))


def _lower(text: Any) -> str:
    if not isinstance(text, str):
        raise _Refused(f"lower() takes a string, not {json_type(text)}")
    return text.lower()


def _upper(text: Any) -> str:
    if not isinstance(text, str):
        raise _Refused(f"upper() takes a string, not {json_type(text)}")
    return text.upper()


ALLOWED_FUNCTIONS: Mapping[str, Callable[..., Any]] = types.MappingProxyType(
    {
        "abs": abs,
        "all": all,
        "any": any,
        "bool": bool,
        "float": float,
        "int": int,
        "len": len,
        "lower": _lower,
        "max": max,
        "min": min,
        "round": _round,
        "sorted": _sorted,
        "str": str,
        "sum": _sum,
        "upper": _upper,
    }
)
# For messages: the functions that may be called.
_ALLOWED_LIST = ", ".join(sorted(ALLOWED_FUNCTIONS))
# Keyword arguments each function accepts; every other keyword is refused at compile time.
_ALLOWED_KEYWORDS: Mapping[str, frozenset[str]] = {
    "round": frozenset({"ndigits"}),
    "sorted": frozenset({"reverse"}),
}

# -- bounded operators ----------------------------------------------------------------

_SEQUENCE_TYPES = (str, list, tuple)


def _power(base: Any, exponent: Any) -> Any:
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1:
        if exponent * math.log2(abs(base)) > MAX_INT_BITS:
            raise _Refused(f"the result of ** would exceed {MAX_INT_BITS} bits")
    return base**exponent


def _multiply(left: Any, right: Any) -> Any:
    if isinstance(left, int) and isinstance(right, int):
        if left.bit_length() + right.bit_length() > MAX_INT_BITS + 1:
            raise _Refused(f"the result of * would exceed {MAX_INT_BITS} bits")
        return left * right
    if isinstance(left, _SEQUENCE_TYPES) and isinstance(right, int):
        return _repeat(left, right)
    if isinstance(left, int) and isinstance(right, _SEQUENCE_TYPES):
        return _repeat(right, left)
    return left * right


def _repeat(sequence: str | list[Any] | tuple[Any, ...], times: int) -> Any:
    _check_repeat(sequence, times)
    return sequence * times


def _check_repeat(sequence: str | list[Any] | tuple[Any, ...], times: int) -> None:
    if times > 1:
        if len(sequence) * times > MAX_SEQUENCE_LENGTH:
            raise _Refused(
                f"repeating {with_article(json_type(sequence))} of length {len(sequence)} "
                f"would make more than {MAX_SEQUENCE_LENGTH} items"
            )
        if not isinstance(sequence, str):
            _check_size(sequence, MAX_VALUE_SIZE // times)


class _TooBig(Exception):
    pass


def _check_size(value: Any, limit: int) -> None:
    """Refuse if `value`, counted as a tree (shared items counted each time), exceeds `limit`."""

    memo: dict[int, int] = {}

    def size(item: Any) -> int:
        if isinstance(item, str):
            return max(1, len(item))
        children: Iterable[Any]
        if isinstance(item, Mapping):
            children = [*item.keys(), *item.values()]
        elif isinstance(item, list | tuple | set | frozenset):
            children = item
        else:
            return 1
        # Memoised by identity so a structure full of shared references is measured in
        # time proportional to its distinct parts, not to its (possibly huge) tree size.
        known = memo.get(id(item))
        if known is not None:
            return known
        total = 1
        for child in children:
            total += size(child)
            if total > limit:
                raise _TooBig
        memo[id(item)] = total
        return total

    try:
        size(value)
    except _TooBig:
        raise _Refused(
            f"repeating this value would build more than {MAX_VALUE_SIZE} items"
        ) from None


def _add(left: Any, right: Any) -> Any:
    if (
        isinstance(left, _SEQUENCE_TYPES)
        and isinstance(right, _SEQUENCE_TYPES)
        and len(left) + len(right) > MAX_SEQUENCE_LENGTH
    ):
        raise _Refused(f"the result of + would have more than {MAX_SEQUENCE_LENGTH} items")
    return left + right


def _left_shift(value: Any, count: Any) -> Any:
    if isinstance(value, int) and isinstance(count, int) and value and count > 0:
        if value.bit_length() + count > MAX_INT_BITS:
            raise _Refused(f"the result of << would exceed {MAX_INT_BITS} bits")
    return value << count


def _modulo(left: Any, right: Any) -> Any:
    # '%' on a string is printf formatting: '%0999999999d' % 1 builds a gigabyte.
    if isinstance(left, str | bytes):
        raise _Refused("'%' formatting of strings is not allowed")
    return left % right


_OPERATORS: Mapping[type[ast.AST], Callable[..., Any]] = {
    ast.Add: _add,
    ast.Sub: op.sub,
    ast.Mult: _multiply,
    ast.Div: op.truediv,
    ast.FloorDiv: op.floordiv,
    ast.Mod: _modulo,
    ast.Pow: _power,
    ast.LShift: _left_shift,
    ast.RShift: op.rshift,
    ast.BitOr: op.or_,
    ast.BitXor: op.xor,
    ast.BitAnd: op.and_,
    ast.Not: op.not_,
    ast.USub: op.neg,
    ast.UAdd: op.pos,
    ast.Invert: op.invert,
    ast.Eq: op.eq,
    ast.NotEq: op.ne,
    ast.Lt: op.lt,
    ast.LtE: op.le,
    ast.Gt: op.gt,
    ast.GtE: op.ge,
    ast.In: lambda left, right: left in right,
    ast.NotIn: lambda left, right: left not in right,
    ast.Is: lambda left, right: left is right,
    ast.IsNot: lambda left, right: left is not right,
}

# -- compile-time checks --------------------------------------------------------------

_PLAIN_NODES = (
    ast.BoolOp,
    ast.UnaryOp,
    ast.Compare,
    ast.IfExp,
    ast.Subscript,
    ast.Slice,
    ast.List,
    ast.Tuple,
    ast.Set,
)
# Operator and context nodes carry no code of their own; BinOp checks its operator.
_MARKER_NODES = (ast.expr_context, ast.operator, ast.boolop, ast.unaryop, ast.cmpop)
_CONSTANT_TYPES = (str, int, float, bool, type(None))
_NAMED_NODES = (ast.Name, ast.Attribute)
_REFUSED_SYNTAX: Mapping[type[ast.AST], str] = {
    ast.Lambda: "lambda functions are",
    ast.ListComp: "comprehensions are",
    ast.SetComp: "comprehensions are",
    ast.DictComp: "comprehensions are",
    ast.GeneratorExp: "generator expressions are",
    ast.JoinedStr: "f-strings are",
    ast.FormattedValue: "f-strings are",
    ast.NamedExpr: "assignment expressions (:=) are",
    ast.Starred: "unpacking with * is",
    ast.Await: "await is",
    ast.Yield: "yield is",
    ast.YieldFrom: "yield is",
}
_OPERATOR_SYMBOLS: Mapping[type[ast.AST], str] = {ast.MatMult: "@"}


def _refuse(reason: str) -> NoReturn:
    raise _Refused(reason)


def _check_call(node: ast.Call) -> None:
    func = node.func
    allowed = _ALLOWED_LIST
    if isinstance(func, ast.Attribute):
        if func.attr.startswith("_"):
            _refuse(f"access to {func.attr!r} is not allowed")
        _refuse(f"calling methods ('.{func.attr}()') is not allowed; functions: {allowed}")
    if not isinstance(func, ast.Name):
        _refuse(f"only these functions can be called: {allowed}")
    if func.id.startswith("_"):
        _refuse(f"access to {func.id!r} is not allowed")
    if func.id not in ALLOWED_FUNCTIONS:
        _refuse(f"function {func.id!r} is not allowed; functions: {allowed}")
    accepted = _ALLOWED_KEYWORDS.get(func.id, frozenset())
    for keyword in node.keywords:
        if keyword.arg is None:
            _refuse("unpacking with ** is not allowed")
        if keyword.arg not in accepted:
            _refuse(f"{func.id}() takes no keyword argument {keyword.arg!r}")


def _check_node(node: ast.AST) -> None:
    # A name is always a scope read (a step may be called "max"); only a call's callee
    # refers to a function, and that is checked by _check_call.
    if isinstance(node, _NAMED_NODES):
        name = node.id if isinstance(node, ast.Name) else node.attr
        if name.startswith("_"):
            _refuse(f"access to {name!r} is not allowed")
    elif isinstance(node, ast.Call):
        _check_call(node)
    elif isinstance(node, ast.Constant):
        if not isinstance(node.value, _CONSTANT_TYPES):
            _refuse(f"literals of type {type(node.value).__name__} are not allowed")
    elif isinstance(node, ast.BinOp):
        if type(node.op) not in _OPERATORS:
            symbol = _OPERATOR_SYMBOLS.get(type(node.op), type(node.op).__name__)
            _refuse(f"operator {symbol!r} is not allowed")
    elif isinstance(node, ast.Dict):
        if any(key is None for key in node.keys):
            _refuse("unpacking with ** is not allowed")
    elif not isinstance(node, _PLAIN_NODES):
        what = _REFUSED_SYNTAX.get(type(node), f"{type(node).__name__} expressions are")
        _refuse(f"{what} not allowed")


# Fields that, by Python's grammar (ast's ASDL), never hold an expression: contexts,
# operators and identifiers. Every other field of every node is looked at, so a node
# type this module does not know of still has all its sub-expressions checked.
_NOT_EXPRESSION_FIELDS = frozenset({"ctx", "op", "ops", "id", "attr", "kind"})
_FIELDS: dict[type[ast.AST], tuple[str, ...]] = {}


def _children(node: ast.AST) -> list[ast.AST]:
    """The expression nodes under `node`, in ast.iter_child_nodes order."""
    if isinstance(node, ast.Call):
        # The callee is a function name, checked by _check_call, not a value read.
        return [*node.args, *(keyword.value for keyword in node.keywords)]
    kind = type(node)
    fields = _FIELDS.get(kind)
    if fields is None:
        fields = _FIELDS[kind] = tuple(
            name for name in node._fields if name not in _NOT_EXPRESSION_FIELDS
        )
    children: list[ast.AST] = []
    for name in fields:
        value = getattr(node, name, None)
        if isinstance(value, ast.AST):
            if not isinstance(value, _MARKER_NODES):
                children.append(value)
        elif isinstance(value, list):
            children.extend(
                item
                for item in value
                if isinstance(item, ast.AST) and not isinstance(item, _MARKER_NODES)
            )
    return children


def _check_tree(tree: ast.Expression) -> frozenset[str]:
    """Check every node; return the root names read."""
    names: set[str] = set()
    count = 0
    stack: list[tuple[ast.AST, int]] = [(tree.body, 1)]
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_NODES:
            _refuse(f"expression is too complex (more than {MAX_NODES} parts)")
        if depth > MAX_DEPTH:
            _refuse(f"expression is nested too deeply (more than {MAX_DEPTH} levels)")
        # The two leaves of nearly every expression, checked inline (as _check_node would).
        if isinstance(node, ast.Name):
            name = node.id
            if name.startswith("_"):
                _refuse(f"access to {name!r} is not allowed")
            names.add(name)
        elif isinstance(node, ast.Constant):
            value = node.value
            if not isinstance(value, _CONSTANT_TYPES):
                _refuse(f"literals of type {type(value).__name__} are not allowed")
        else:
            _check_node(node)
            stack.extend([(child, depth + 1) for child in _children(node)])
    return frozenset(names)


def _parse(source: str) -> ast.Expression:
    try:
        # The parser warns about things like an invalid escape ('\\d'); those strings
        # mean what Python makes of them, and a client's input must not spam our logs.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ast.parse(source.strip(), mode="eval")
    except SyntaxError as exc:
        where = f" at column {exc.offset}" if exc.offset else ""
        _refuse(f"invalid syntax{where}: {exc.msg}")
    except (ValueError, RecursionError, MemoryError) as exc:
        _refuse(f"cannot parse: {exc}")


def compile_expression(source: str, *, extra_names: Collection[str] = ()) -> Expression:
    """Parse and check `source`; raises ExpressionError if it is malformed or not allowed.

    `extra_names` are names the caller binds itself at evaluation time (``item`` in a
    filter); they are allowed, and left out of ``Expression.names`` because they are
    not read from other steps.
    """
    if not isinstance(source, str):
        raise ExpressionError(
            f"an expression must be a string, not {json_type(source)}", expr=repr(source)
        )
    try:
        if not source.strip():
            _refuse("expression is empty")
        if len(source) > MAX_SOURCE_LENGTH:
            _refuse(
                f"expression is too long ({len(source)} characters; "
                f"the limit is {MAX_SOURCE_LENGTH})"
            )
        for name in extra_names:
            if not name.isidentifier() or name.startswith("_"):
                _refuse(f"invalid extra name {name!r}")
        tree = _parse(source)
        names = _check_tree(tree)
    except _Refused as exc:
        raise ExpressionError(exc.reason, expr=source) from None
    if not extra_names:  # the common case: no set arithmetic, one shared empty set
        return Expression(source, names, tree, _NO_NAMES)
    extra = frozenset(extra_names)
    return Expression(source, names - extra, tree, extra)


# -- evaluation -----------------------------------------------------------------------


def _describe(node: ast.AST) -> str:
    return ast.unparse(node)


_COMPARE_COST_CAP = 1 << 40


def _width(value: Any) -> int:
    """Items an operation on `value` walks (shallow): its length, or 1 for a scalar."""
    if isinstance(value, str | list | tuple | dict | set | frozenset):
        return len(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return 1 + value.bit_length() // 64
    return 1


def _out_bytes(value: Any) -> int:
    """Bytes charged for a value an operation just built (its shallow size)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list | tuple | dict | set | frozenset):
        return 8 * len(value)
    return 0


class _Evaluator:
    """Walks a checked tree; every node and every item an operation touches is charged.

    Names are keys of the scope, ``a.b`` is ``a["b"]`` on a mapping and nothing else
    (``getattr`` is never called), and calls go only to ALLOWED_FUNCTIONS: the tree was
    checked by compile_expression, and each method re-checks what it relies on.
    """

    __slots__ = ("_budget", "_scope")

    def __init__(self, scope: Mapping[str, Any], budget: Budget) -> None:
        self._scope = scope
        self._budget = budget

    def eval(self, node: ast.AST) -> Any:
        self._budget.spend(1)
        method = _DISPATCH.get(type(node))
        if method is None:
            raise _Refused(f"{type(node).__name__} expressions are not allowed")
        value = method(self, node)
        # Scopes hold JSON; should a caller put anything else there, it is not reachable.
        if callable(value) or isinstance(value, types.ModuleType):
            raise _Refused(f"{type(value).__name__} values are not allowed")
        return value

    def _charge(self, ops: int, value: Any = None) -> None:
        self._budget.spend(ops, _out_bytes(value))

    def _sized(self, value: Any) -> int:
        """The deep size of `value`, charged; raises BudgetExceeded before walking past it."""
        limit = max(0, min(self._budget.bytes_left, self._budget.ops_left))
        size = measure(value, limit)
        self._budget.spend(size, size)
        return size

    # -- leaves and lookups

    def _constant(self, node: ast.Constant) -> Any:
        value = node.value
        if not isinstance(value, _CONSTANT_TYPES):
            raise _Refused(f"literals of type {type(value).__name__} are not allowed")
        return value

    def _name(self, node: ast.Name) -> Any:
        try:
            return self._scope[node.id]
        except KeyError:
            raise _Refused(f"name {node.id!r} is not defined") from None

    def _attribute(self, node: ast.Attribute) -> Any:
        return _get_key(self.eval(node.value), node.attr, node.value)

    def _subscript(self, node: ast.Subscript) -> Any:
        container = self.eval(node.value)
        key = self.eval(node.slice)
        if isinstance(container, Mapping):
            return _get_key(container, key, node.value)
        if not isinstance(container, list | tuple | str):
            raise _Refused(
                f"{_describe(node.value)} is {with_article(json_type(container))}; "
                "it cannot be indexed"
            )
        if isinstance(key, slice):
            result = container[key]
            self._charge(len(result), result)
            return result
        if isinstance(key, bool) or not isinstance(key, int):
            raise _Refused(f"index must be a whole number, not {json_type(key)}")
        try:
            return container[key]
        except IndexError:
            raise _Refused(
                f"index {key!r} out of range for {_describe(node.value)} (length {len(container)})"
            ) from None

    def _slice(self, node: ast.Slice) -> slice:
        parts = [None if p is None else self.eval(p) for p in (node.lower, node.upper, node.step)]
        for part in parts:
            if part is not None and (isinstance(part, bool) or not isinstance(part, int)):
                raise _Refused(f"slice bounds must be whole numbers, not {json_type(part)}")
        return slice(*parts)

    # -- literals

    def _list(self, node: ast.List) -> list[Any]:
        items = [self.eval(e) for e in node.elts]
        self._charge(len(items), items)
        return items

    def _tuple(self, node: ast.Tuple) -> tuple[Any, ...]:
        items = tuple(self.eval(e) for e in node.elts)
        self._charge(len(items), items)
        return items

    def _set(self, node: ast.Set) -> set[Any]:
        items = [self.eval(e) for e in node.elts]
        try:
            result = set(items)
        except TypeError:
            raise _Refused("set items must be numbers, strings or tuples of them") from None
        self._charge(len(items), result)
        return result

    def _dict(self, node: ast.Dict) -> dict[Any, Any]:
        result: dict[Any, Any] = {}
        for key_node, value_node in zip(node.keys, node.values, strict=True):
            if key_node is None:
                raise _Refused("unpacking with ** is not allowed")
            key = self.eval(key_node)
            try:
                result[key] = self.eval(value_node)
            except TypeError:
                raise _Refused(f"{json_type(key)} values cannot be object keys") from None
        self._charge(len(result), result)
        return result

    # -- operators

    def _binop(self, node: ast.BinOp) -> Any:
        operator = _OPERATORS.get(type(node.op))
        if operator is None:
            raise _Refused(f"operator {type(node.op).__name__} is not allowed")
        left = self.eval(node.left)
        right = self.eval(node.right)
        self._charge_binop(node.op, left, right)
        result = operator(left, right)
        self._charge(0, result)
        return result

    def _charge_binop(self, operator: ast.operator, left: Any, right: Any) -> None:
        # Charged before the operation: its cost follows from the operands' sizes.
        if isinstance(operator, ast.Mult) and isinstance(left, int) != isinstance(right, int):
            sequence, times = (left, right) if isinstance(right, int) else (right, left)
            if isinstance(sequence, _SEQUENCE_TYPES) and isinstance(times, int) and times > 1:
                _check_repeat(sequence, times)  # the fixed caps first: clearer messages
                # The items are shared, but whoever reads or prints the result walks them all.
                unit = len(sequence) if isinstance(sequence, str) else self._sized(sequence)
                self._budget.spend(max(1, unit) * (times - 1), max(1, unit) * (times - 1))
                return
        self._budget.spend(_width(left) + _width(right))

    def _unaryop(self, node: ast.UnaryOp) -> Any:
        operator = _OPERATORS.get(type(node.op))
        if operator is None:
            raise _Refused(f"operator {type(node.op).__name__} is not allowed")
        operand = self.eval(node.operand)
        self._budget.spend(_width(operand))
        return operator(operand)

    def _boolop(self, node: ast.BoolOp) -> Any:
        is_and = isinstance(node.op, ast.And)
        value: Any = None
        for operand in node.values:
            value = self.eval(operand)
            if bool(value) != is_and:
                return value
        return value

    def _compare(self, node: ast.Compare) -> bool:
        left = self.eval(node.left)
        for op_node, right_node in zip(node.ops, node.comparators, strict=True):
            right = self.eval(right_node)
            operator = _OPERATORS.get(type(op_node))
            if operator is None:
                raise _Refused(f"comparison {type(op_node).__name__} is not allowed")
            if isinstance(op_node, ast.In | ast.NotIn):
                # `x in list` compares x with every item.
                self._budget.spend(_width(right) * max(1, min(_width(left), 64)))
            elif isinstance(left, list | tuple | dict) and isinstance(right, list | tuple | dict):
                # Comparing two containers may walk both, items included.
                self._sized(left if _width(left) <= _width(right) else right)
            else:
                self._budget.spend(min(_width(left), _width(right)))
            if not operator(left, right):
                return False
            left = right
        return True

    def _ifexp(self, node: ast.IfExp) -> Any:
        return self.eval(node.body) if self.eval(node.test) else self.eval(node.orelse)

    # -- calls

    def _call(self, node: ast.Call) -> Any:
        func = node.func
        if not isinstance(func, ast.Name) or func.id not in ALLOWED_FUNCTIONS:
            raise _Refused("only allowed functions can be called")
        args = [self.eval(arg) for arg in node.args]
        kwargs: dict[str, Any] = {}
        for keyword in node.keywords:
            if keyword.arg is None:
                raise _Refused("unpacking with ** is not allowed")
            kwargs[keyword.arg] = self.eval(keyword.value)
        self._charge_call(func.id, args)
        result = ALLOWED_FUNCTIONS[func.id](*args, **kwargs)
        self._charge(0, result)
        return result

    def _charge_call(self, name: str, args: list[Any]) -> None:
        if not args:
            return
        first = args[0]
        if name == "str":
            # str() of a nested value is as big as the value: sized before it is built.
            if not isinstance(first, str | int | float | bool | None):
                self._sized(first)
            return
        width = sum(_width(arg) for arg in args)
        if name == "sorted":
            width *= max(1, width.bit_length())
        self._budget.spend(width)


_DISPATCH: Mapping[type[ast.AST], Callable[[_Evaluator, Any], Any]] = {
    ast.Constant: _Evaluator._constant,
    ast.Name: _Evaluator._name,
    ast.Attribute: _Evaluator._attribute,
    ast.Subscript: _Evaluator._subscript,
    ast.Slice: _Evaluator._slice,
    ast.List: _Evaluator._list,
    ast.Tuple: _Evaluator._tuple,
    ast.Set: _Evaluator._set,
    ast.Dict: _Evaluator._dict,
    ast.BinOp: _Evaluator._binop,
    ast.UnaryOp: _Evaluator._unaryop,
    ast.BoolOp: _Evaluator._boolop,
    ast.Compare: _Evaluator._compare,
    ast.IfExp: _Evaluator._ifexp,
    ast.Call: _Evaluator._call,
}


def _get_key(container: Any, key: Any, container_node: ast.AST) -> Any:
    if not isinstance(container, Mapping):
        raise _Refused(
            f"{_describe(container_node)} is {with_article(json_type(container))}, "
            f"not an object; cannot read {key!r} from it"
        )
    try:
        return container[key]
    except KeyError:
        raise _Refused(f"key {key!r} not found in {_describe(container_node)}") from None
    except TypeError:
        raise _Refused(f"{json_type(key)} values cannot be object keys") from None


def _runtime_reason(exc: Exception) -> str:
    if isinstance(exc, _Refused):
        return exc.reason
    if isinstance(exc, ZeroDivisionError):
        return "division by zero"
    if isinstance(exc, RecursionError):
        return "value is nested too deeply"
    if isinstance(exc, MemoryError):
        return "out of memory"
    text = str(exc)
    return text if text else type(exc).__name__


# Raised through Expression.evaluate untouched: the caller decides what they mean.
_BUDGET_SIGNALS = (BudgetExceeded, NeedsOffload, EvaluationStopped)


@dataclass(frozen=True, slots=True)
class Expression:
    """A checked expression, ready to evaluate any number of times.

    `names` are the root names it reads (``data`` in ``len(data.rows) > 1``), not
    function names and not `extra_names`. Build one with compile_expression.
    """

    source: str
    names: frozenset[str]
    _tree: ast.Expression = field(repr=False, compare=False)
    extra_names: frozenset[str] = frozenset()

    def evaluate(self, scope: Mapping[str, Any], budget: Budget | None = None) -> Any:
        """Evaluate against `scope` (root name -> value), spending from `budget`.

        Missing names or keys, type errors, division by zero and values too big to
        build all become ExpressionError with a message naming the problem. The
        budget's own signals (BudgetExceeded, NeedsOffload, EvaluationStopped) pass
        through as they are. Without a budget, a fresh one of the default node size.
        """
        if budget is None:
            budget = Budget(ops=DEFAULT_LIMITS.node_ops, nbytes=DEFAULT_LIMITS.node_bytes)
        try:
            return _Evaluator(scope, budget).eval(self._tree.body)
        except _BUDGET_SIGNALS:
            raise
        except Exception as exc:  # every failure in user-written code is the user's error
            raise ExpressionError(_runtime_reason(exc), expr=self.source) from exc
