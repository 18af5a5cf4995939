"""Sandboxed expressions: what they compute, what they refuse, and that they stay bounded."""

from __future__ import annotations

import ast
import warnings
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.dag.expressions import (
    ALLOWED_FUNCTIONS,
    MAX_DEPTH,
    MAX_NODES,
    MAX_SOURCE_LENGTH,
    Expression,
    ExpressionError,
    compile_expression,
)

SCOPE: dict[str, Any] = {
    "inputs": {"query": "Sales by Region", "min": 2, "limit": 10, "tags": ["a", "b"]},
    "data": {
        "rows": [
            {"region": "eu", "total": 120.5},
            {"region": "us", "total": 80},
            {"region": "apac", "total": None},
        ],
        "items": "a key, not the dict method",
        "count": 3,
    },
    "nlp": {"intent": "aggregate", "confidence": 0.92, "entities": []},
    "flag": True,
    "nothing": None,
}


def evaluate(source: str, scope: dict[str, Any] | None = None, **kwargs: Any) -> Any:
    return compile_expression(source, **kwargs).evaluate(SCOPE if scope is None else scope)


# -- what expressions compute ---------------------------------------------------------

ALLOWED = [
    # literals
    ("1", 1),
    ("-2.5", -2.5),
    ("'text'", "text"),
    ("True", True),
    ("None", None),
    ("[1, 'a', None]", [1, "a", None]),
    ("(1, 2)", (1, 2)),
    ("{'k': [1, 2]}", {"k": [1, 2]}),
    ("{1, 2} == {2, 1}", True),
    # arithmetic
    ("1 + 2 * 3", 7),
    ("(1 + 2) * 3", 9),
    ("7 / 2", 3.5),
    ("7 // 2", 3),
    ("7 % 3", 1),
    ("2 ** 10", 1024),
    ("2 ** -1", 0.5),
    ("1 << 4", 16),
    ("256 >> 4", 16),
    ("6 & 3", 2),
    ("6 | 3", 7),
    ("6 ^ 3", 5),
    ("~0", -1),
    ("-inputs.min", -2),
    ("'ab' + 'cd'", "abcd"),
    ("'ab' * 3", "ababab"),
    ("[0] * 3", [0, 0, 0]),
    ("3 * [1, 2]", [1, 2, 1, 2, 1, 2]),
    ("[1] + [2]", [1, 2]),
    ("2 ** 4000 > 0", True),
    # comparisons and boolean logic
    ("1 < 2 < 3", True),
    ("1 < 3 < 2", False),
    ("inputs.min >= 2 and inputs.limit != 10", False),
    ("nothing is None", True),
    ("flag is not None", True),
    ("not flag", False),
    ("nothing or 'default'", "default"),
    ("0 and 1 / 0", 0),
    ("'a' in inputs.tags", True),
    ("'z' not in inputs.tags", True),
    ("'Sales' in inputs.query", True),
    ("'region' in data.rows[0]", True),
    # ternary
    ("'many' if data.count > 2 else 'few'", "many"),
    ("1 / 0 if False else 'lazy'", "lazy"),
    # key lookup by attribute and by subscript
    ("data.rows[0].region", "eu"),
    ("data['rows'][1]['total']", 80),
    ("data.rows[-1].region", "apac"),
    ("data.rows[1:][0].region", "us"),
    ("inputs.query[:5]", "Sales"),
    ("data.items", "a key, not the dict method"),
    ("nlp.entities == []", True),
    # allowed functions
    ("len(data.rows) > 2 and nlp.confidence > 0.9", True),
    ("min(3, 1, 2)", 1),
    ("max(inputs.tags)", "b"),
    ("sum([1, 2, 3.5])", 6.5),
    ("sum([1, 2], 10)", 13),
    ("abs(-3)", 3),
    ("round(2.567, 2)", 2.57),
    ("round(2.5)", 2),
    ("round(1234, ndigits=-2)", 1200),
    ("int('42') + int(2.9)", 44),
    ("float('1.5')", 1.5),
    ("str(12) + str(None)", "12None"),
    ("bool([])", False),
    ("any([0, nothing, 'x'])", True),
    ("all([1, flag])", True),
    ("sorted([3, 1, 2])", [1, 2, 3]),
    ("sorted(inputs.tags, reverse=True)", ["b", "a"]),
    ("lower(inputs.query)", "sales by region"),
    ("upper('eu') == 'EU'", True),
]


@pytest.mark.parametrize(("source", "expected"), ALLOWED)
def test_allowed_expressions_compute_like_python(source: str, expected: Any) -> None:
    """Each allowed expression gives the value Python gives, with the same type."""
    result = evaluate(source)
    assert result == expected
    assert type(result) is type(expected)


def test_item_is_an_extra_name_for_filters() -> None:
    """A filter binds `item` itself: allowed, evaluated from the scope, not a dependency."""
    expr = compile_expression("item.total > inputs.min * 50", extra_names=("item",))
    assert expr.names == frozenset({"inputs"})
    assert expr.extra_names == frozenset({"item"})
    kept = [row for row in SCOPE["data"]["rows"][:2] if expr.evaluate({**SCOPE, "item": row})]
    assert kept == [{"region": "eu", "total": 120.5}]


def test_a_name_that_is_also_a_function_reads_the_scope() -> None:
    """Only a call refers to a function: a step named "max" can still be read."""
    expr = compile_expression("max.value + max([1, 2])")
    assert expr.names == frozenset({"max"})
    assert expr.evaluate({"max": {"value": 1}}) == 3
    with pytest.raises(ExpressionError, match="name 'len' is not defined"):
        evaluate("len")


def test_expression_can_be_evaluated_many_times() -> None:
    """A compiled expression is reusable: results follow the scope, not the first run."""
    expr = compile_expression("x * 2")
    assert [expr.evaluate({"x": n}) for n in range(4)] == [0, 2, 4, 6]


def test_leading_and_trailing_whitespace_is_ignored() -> None:
    """Whitespace around the source (common in JSON written by hand) is not a syntax error."""
    assert evaluate("  1 + 1\n") == 2


def test_invalid_escape_in_a_string_literal_means_what_python_makes_of_it() -> None:
    """'\\d' compiles (the parser's warning is silenced) and keeps the backslash."""
    assert evaluate(r"'\d'") == "\\d"


# -- names ----------------------------------------------------------------------------

NAMES = [
    ("len(data.rows) > 10 and inputs.min < 3", {"data", "inputs"}),
    ("1 + 2", set()),
    ("x", {"x"}),
    ("a.b.c[d.e]", {"a", "d"}),
    ("sorted(values, reverse=desc)", {"values", "desc"}),
    ("inputs.len + inputs.max", {"inputs"}),
    ("[p, {'k': q}, (r,)]", {"p", "q", "r"}),
    ("x if cond else y", {"x", "cond", "y"}),
    ("'data' in s", {"s"}),
    ("max.value > len", {"max", "len"}),
]


@pytest.mark.parametrize(("source", "names"), NAMES)
def test_names_are_the_root_names_read(source: str, names: set[str]) -> None:
    """`names` holds root names only: not keys, not function names, not string contents."""
    assert compile_expression(source).names == frozenset(names)


# -- sandbox escapes, refused before anything runs ------------------------------------

ESCAPES = [
    ("().__class__.__bases__[0].__subclasses__()", "access to '__subclasses__' is not allowed"),
    ("().__class__", "access to '__class__' is not allowed"),
    ("__import__('os')", "access to '__import__' is not allowed"),
    ("x.__class__", "access to '__class__' is not allowed"),
    ("x._private", "access to '_private' is not allowed"),
    ("_hidden", "access to '_hidden' is not allowed"),
    ("getattr(x, 'a')", "function 'getattr' is not allowed"),
    ("open('/etc/passwd')", "function 'open' is not allowed"),
    ("exec('1')", "function 'exec' is not allowed"),
    ("eval('1')", "function 'eval' is not allowed"),
    ("type(x)", "function 'type' is not allowed"),
    ("globals()", "function 'globals' is not allowed"),
    ("vars(x)", "function 'vars' is not allowed"),
    ("lambda: 1", "lambda functions are not allowed"),
    ("(lambda: 1)()", "only these functions can be called"),
    ("[x for x in y]", "comprehensions are not allowed"),
    ("{x: 1 for x in y}", "comprehensions are not allowed"),
    ("{x for x in y}", "comprehensions are not allowed"),
    ("sum(x for x in y)", "generator expressions are not allowed"),
    ('f"{x}"', "f-strings are not allowed"),
    ("f'{x!r:>10}'", "f-strings are not allowed"),
    ("data.rows.pop()", "calling methods ('.pop()') is not allowed"),
    ("'{}'.format(x)", "calling methods ('.format()') is not allowed"),
    ("x.upper()", "calling methods ('.upper()') is not allowed"),
    ("x['a']()", "only these functions can be called"),
    ("(y := 1)", "assignment expressions (:=) are not allowed"),
    ("[*x]", "unpacking with * is not allowed"),
    ("{**x}", "unpacking with ** is not allowed"),
    ("max(**x)", "unpacking with ** is not allowed"),
    ("max(*x)", "unpacking with * is not allowed"),
    ("sorted(x, key=len)", "sorted() takes no keyword argument 'key'"),
    ("min(x, key=abs)", "min() takes no keyword argument 'key'"),
    ("b'bytes'", "literals of type bytes are not allowed"),
    ("1j", "literals of type complex are not allowed"),
    ("...", "literals of type ellipsis are not allowed"),
    ("a @ b", "operator '@' is not allowed"),
    ("await x", "await is not allowed"),
    ("import os", "invalid syntax"),
    ("x = 1", "invalid syntax"),
    ("1; 2", "invalid syntax"),
]


@pytest.mark.parametrize(("source", "reason"), ESCAPES)
def test_sandbox_escapes_are_refused_at_compile_time(source: str, reason: str) -> None:
    """Each escape attempt is refused by compile_expression with a message saying why."""
    with pytest.raises(ExpressionError) as caught:
        compile_expression(source)
    error = caught.value
    assert reason in error.reason
    assert error.expr == source
    assert str(error) == f"expression {source!r}: {error.reason}"


# Every place an expression can sit inside an allowed one: the checker must reach it.
_POSITIONS = [
    "1 if c else ({})",
    "({}) if c else 1",
    "1 if ({}) else 2",
    "x[({}):2]",
    "x[1:2:({})]",
    "x[({})]",
    "({})[0]",
    "({}).key",
    "{{'k': ({})}}",
    "{{({}): 1}}",
    "[1, ({})]",
    "(1, ({}))",
    "{{1, ({})}}",
    "a < b < ({})",
    "not ({})",
    "a and ({})",
    "-({})",
    "1 + ({})",
    "max(1, ({}))",
    "round(1, ndigits=({}))",
]
_NESTED_ESCAPES = [
    ("x.__class__", "access to '__class__' is not allowed"),
    ("_hidden", "access to '_hidden' is not allowed"),
    ("open('/etc/passwd')", "function 'open' is not allowed"),
    ("lambda: 1", "lambda functions are not allowed"),
    ("[y for y in z]", "comprehensions are not allowed"),
    ('f"{x}"', "f-strings are not allowed"),
    ("x.upper()", "calling methods ('.upper()') is not allowed"),
    ("y := 1", "assignment expressions (:=) are not allowed"),
    ("b'bytes'", "literals of type bytes are not allowed"),
    ("a @ b", "operator '@' is not allowed"),
]


@pytest.mark.parametrize("position", _POSITIONS)
@pytest.mark.parametrize(("escape", "reason"), _NESTED_ESCAPES)
def test_escapes_are_found_wherever_they_are_nested(
    position: str, escape: str, reason: str
) -> None:
    """A refused construct deep inside an allowed one is refused just the same."""
    source = position.format(escape)
    with pytest.raises(ExpressionError) as caught:
        compile_expression(source)
    assert reason in caught.value.reason


def _slots(tree: ast.AST) -> list[tuple[ast.AST, str, int | None]]:
    """Every place a child expression sits: (parent, field, index in a list field or None).
    A call's callee is left out: it is a function name, checked as such."""
    found: list[tuple[ast.AST, str, int | None]] = []
    for node in ast.walk(tree):
        for field, value in ast.iter_fields(node):
            if isinstance(node, ast.Call) and field == "func":
                continue
            if isinstance(value, ast.expr):
                found.append((node, field, None))
            elif isinstance(value, list):
                found += [(node, field, i) for i, v in enumerate(value) if isinstance(v, ast.expr)]
    return found


@pytest.mark.parametrize("position", _POSITIONS)
def test_the_checker_walks_every_child_expression(position: str) -> None:
    """A refused name in any child slot of any node (as ast lays them out) is refused: the
    checker misses no child, whatever the node."""
    source = position.format("q.r[0]")
    compile_expression(source)  # allowed as it stands
    count = len(_slots(ast.parse(source, mode="eval")))
    assert count >= 3
    for k in range(count):
        tree = ast.parse(source, mode="eval")
        parent, field, index = _slots(tree)[k]
        hidden = ast.Name("_hidden", ast.Load())
        if index is None:
            setattr(parent, field, hidden)
        else:
            getattr(parent, field)[index] = hidden
        refused = ast.unparse(ast.fix_missing_locations(tree))
        with pytest.raises(ExpressionError) as caught:
            compile_expression(refused)
        assert "access to '_hidden' is not allowed" in caught.value.reason, refused


def test_error_message_has_the_documented_shape() -> None:
    """The message quotes the expression and then the reason, for people to read."""
    with pytest.raises(ExpressionError, match=r"^expression 'x.__class__': access to '__class__'"):
        compile_expression("x.__class__")


def test_attribute_access_is_key_lookup_never_getattr() -> None:
    """`a.b` reads a key of a mapping; Python attributes of values are unreachable."""
    with pytest.raises(ExpressionError, match="key 'keys' not found in inputs"):
        evaluate("inputs.keys")
    with pytest.raises(ExpressionError, match="inputs.query is a string, not an object"):
        evaluate("inputs.query.upper")
    with pytest.raises(ExpressionError, match="inputs.min is a number, not an object"):
        evaluate("inputs.min.real")


def test_dunder_strings_as_keys_only_read_data() -> None:
    """A dunder spelled as a subscript key is an ordinary key or index, never an attribute."""
    with pytest.raises(ExpressionError, match="key '__class__' not found in x"):
        evaluate("x['__class__']", {"x": {"a": 1}})
    with pytest.raises(ExpressionError, match="index must be a whole number, not string"):
        evaluate("x['__class__']", {"x": "text"})
    assert evaluate("x['__class__']", {"x": {"__class__": "just data"}}) == "just data"


def test_callables_placed_in_the_scope_cannot_be_reached() -> None:
    """Even if a caller puts a function in the scope, reading it is refused."""
    with pytest.raises(ExpressionError, match="values are not allowed"):
        evaluate("x.f", {"x": {"f": len}})
    with pytest.raises(ExpressionError, match="function 'f' is not allowed"):
        evaluate("f(1)", {"f": len})


def test_allowed_functions_are_the_small_pure_set() -> None:
    """The allow-list is exactly what the docs promise, and cannot be changed at run time."""
    assert set(ALLOWED_FUNCTIONS) == {
        "abs",
        "all",
        "any",
        "bool",
        "float",
        "int",
        "len",
        "lower",
        "max",
        "min",
        "round",
        "sorted",
        "str",
        "sum",
        "upper",
    }
    with pytest.raises(TypeError):
        ALLOWED_FUNCTIONS["open"] = open  # type: ignore[index]


# -- resource bombs -------------------------------------------------------------------

BOMBS = [
    ("9**9**9", "would exceed 4096 bits"),
    ("2**100000", "would exceed 4096 bits"),
    ("(2**4000) ** 2", "would exceed 4096 bits"),
    ("2**4000 * 2**4000", "would exceed 4096 bits"),
    ("'a'*10**9", "more than 100000 items"),
    ("[0]*10**9", "more than 100000 items"),
    ("(0,)*10**9", "more than 100000 items"),
    ("10**9*'a'", "more than 100000 items"),
    ("'x'*99999999", "more than 100000 items"),
    ("'a'*99999 + 'b'*99999", "more than 100000 items"),
    ("1<<10**9", "would exceed 4096 bits"),
    ("1<<5000", "would exceed 4096 bits"),
    ("[[0]*1000]*1000", "would build more than 1000000 items"),
    ("[['a'*99999]]*99999", "would build more than 1000000 items"),
    ("str([['a'*99999]]*99999)", "would build more than 1000000 items"),
    ("[data.rows]*100000", "would build more than 1000000 items"),
    ("'%0999999999d' % 1", "'%' formatting of strings is not allowed"),
    ("'%s' % 'x'", "'%' formatting of strings is not allowed"),
    ("round(5, -10**9)", "round() takes a whole number of digits, at most 100"),
    ("sum([[0]] * 9999, [])", "sum() adds numbers"),
    ("int('9' * 5000)", "Exceeds the limit"),
    ("10.0 ** 400", "Numerical result out of range"),
    ("'-'*" + "9" * 900, "more than 100000 items"),
]


@pytest.mark.timeout(5)
@pytest.mark.parametrize(("source", "reason"), BOMBS)
def test_resource_bombs_are_refused_without_running(source: str, reason: str) -> None:
    """Each bomb is refused with a clear reason instead of eating time or memory."""
    with pytest.raises(ExpressionError) as caught:
        evaluate(source, {"data": {"rows": [{"k": "v" * 10}] * 100}})
    assert reason in caught.value.reason


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("-" * (MAX_DEPTH + 1) + "1", "nested too deeply"),
        ("+".join(["1"] * (MAX_DEPTH + 2)), "nested too deeply"),
        ("[" + ",".join(["1"] * MAX_NODES) + "]", "too complex"),
        ("1+" * (MAX_SOURCE_LENGTH // 2) + "1", "too long"),
        ("(" * 250 + "1" + ")" * 250, "too many nested parentheses"),
        ("", "expression is empty"),
        ("   ", "expression is empty"),
        ("1 +", "invalid syntax"),
        ("'unclosed", "invalid syntax"),
        ("1\x00", "null bytes"),
    ],
)
def test_oversized_or_malformed_source_is_refused(source: str, reason: str) -> None:
    """Length, node count, depth and syntax are checked before evaluation."""
    with pytest.raises(ExpressionError) as caught:
        compile_expression(source)
    assert reason in caught.value.reason


def test_limits_leave_room_for_real_expressions() -> None:
    """An expression just inside every limit still compiles and evaluates."""
    source = "+".join(["1"] * (MAX_DEPTH - 1))
    assert evaluate(source) == MAX_DEPTH - 1
    assert evaluate("len([0] * 100000)") == 100_000
    assert evaluate("len('ab' * 50000)") == 100_000


def test_non_string_source_is_refused() -> None:
    """A number or object where an expression belongs is an ExpressionError, not a crash."""
    with pytest.raises(ExpressionError, match="must be a string, not number"):
        compile_expression(3)  # type: ignore[arg-type]


def test_extra_names_must_be_plain_identifiers() -> None:
    """Extra names cannot smuggle in dunders."""
    with pytest.raises(ExpressionError, match="invalid extra name '__builtins__'"):
        compile_expression("1", extra_names=("__builtins__",))


# -- run-time failures ----------------------------------------------------------------

FAILURES = [
    ("1 / 0", "division by zero"),
    ("1 % 0", "division by zero"),
    ("missing + 1", "name 'missing' is not defined"),
    ("data.nope", "key 'nope' not found in data"),
    ("data['rows'][7]", "index 7 out of range for data['rows'] (length 3)"),
    ("data.rows[0].region.x", "data.rows[0].region is a string, not an object"),
    ("flag[0]", "flag is a boolean; it cannot be indexed"),
    ("nothing.x", "nothing is null, not an object"),
    ("1 < 'a'", "'<' not supported"),
    ("'a' + 1", "can only concatenate str"),
    ("len(5)", "has no len()"),
    ("min([])", "empty"),
    ("int('x')", "invalid literal"),
    ("lower(5)", "lower() takes a string, not number"),
    ("upper(None)", "upper() takes a string, not null"),
    ("round(1.5, 'x')", "round() takes a whole number of digits"),
    ("sum(['a'])", "sum() adds numbers, not string values"),
    ("sorted([1, 'a'])", "not supported"),
    ("{[1]: 2}", "cannot be object keys"),
    ("abs()", "abs() takes exactly one argument"),
    ("data.rows[::0]", "slice step cannot be zero"),
]


@pytest.mark.parametrize(("source", "reason"), FAILURES)
def test_runtime_failures_become_expression_errors(source: str, reason: str) -> None:
    """Every failure while evaluating is an ExpressionError with a readable reason."""
    expr = compile_expression(source)
    with pytest.raises(ExpressionError) as caught:
        expr.evaluate(SCOPE)
    assert reason in caught.value.reason
    assert caught.value.__cause__ is not None


def test_expressions_compare_by_source_and_names() -> None:
    """Two compilations of the same source are equal and hash alike (usable as dict keys)."""
    first, second = compile_expression("a + 1"), compile_expression("a + 1")
    assert isinstance(first, Expression)
    assert first == second
    assert hash(first) == hash(second)
    assert first != compile_expression("a + 2")


# -- property: never anything but a value or ExpressionError ----------------------------

_FUNCTIONS_1 = ["len", "abs", "str", "bool", "int", "float", "sorted", "any", "all", "min", "max"]
_BINARY = ["+", "-", "*", "/", "//", "%", "**", "<<", ">>", "&", "|", "^"]
_COMPARE = ["==", "!=", "<", "<=", ">", ">=", "in", "not in"]


def _atoms() -> st.SearchStrategy[str]:
    return st.one_of(
        st.integers(-5, 40).map(repr),
        st.floats(-10, 10, allow_nan=False).map(repr),
        st.text(alphabet="ab%", max_size=3).map(repr),
        st.sampled_from(["True", "False", "None", "[]", "[1, 2]", "x", "x.k", "x.l", "x.l[0]"]),
    )


def _combine(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.tuples(inner, st.sampled_from(_BINARY), inner).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        st.tuples(inner, st.sampled_from(_COMPARE), inner).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        st.tuples(inner, st.sampled_from(["and", "or"]), inner).map(
            lambda t: f"({t[0]} {t[1]} {t[2]})"
        ),
        st.tuples(st.sampled_from(["-", "not ", "~"]), inner).map(lambda t: f"({t[0]}{t[1]})"),
        st.tuples(st.sampled_from(_FUNCTIONS_1), inner).map(lambda t: f"{t[0]}({t[1]})"),
        st.tuples(inner, inner, inner).map(lambda t: f"({t[0]} if {t[1]} else {t[2]})"),
        st.tuples(inner, inner).map(lambda t: f"[{t[0]}, {t[1]}]"),
        st.tuples(inner, inner).map(lambda t: f"{t[0]}[{t[1]}]"),
    )


EXPRESSIONS = st.recursive(_atoms(), _combine, max_leaves=12)
PROPERTY_SCOPE = {"x": {"k": 3, "l": [4, "s"]}}


class _AttrDict(dict[str, Any]):
    """Python's own reading of `x.k` as the sandbox reads it: a key lookup."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def _python_eval(source: str) -> Any:
    # Safe only because the sandbox evaluated the same source first, within its limits.
    with warnings.catch_warnings():
        # CPython warns at compile time about e.g. `0[0]` in a branch never taken.
        warnings.simplefilter("ignore", SyntaxWarning)
        code = compile(ast.parse(source, mode="eval"), "<expr>", "eval")
    names = {**ALLOWED_FUNCTIONS, "x": _AttrDict(PROPERTY_SCOPE["x"])}
    return eval(code, {"__builtins__": {}}, names)


@pytest.mark.timeout(120)
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(EXPRESSIONS)
def test_random_expressions_give_python_result_or_expression_error(source: str) -> None:
    """Any expression yields Python's own result or an ExpressionError, nothing else."""
    expr = compile_expression(source)
    try:
        result = expr.evaluate(PROPERTY_SCOPE)
    except ExpressionError:
        return
    expected = _python_eval(source)
    assert repr(result) == repr(expected)
    assert type(result) is (dict if type(expected) is _AttrDict else type(expected))
