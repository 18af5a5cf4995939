"""Templates and dot paths: whole values keep their type, strings interpolate, errors name paths."""

from __future__ import annotations

import string
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from orchestrator.dag.paths import PathError, resolve_path, split_path
from orchestrator.dag.templates import MAX_DEPTH, Template, TemplateError, compile_template

SCOPE: dict[str, Any] = {
    "inputs": {"query": "sales by region", "limit": 10, "ratio": 0.5, "debug": False},
    "nlp": {
        "intent": "aggregate",
        "entities": ["region", "sales"],
        "filters": {"year": 2024},
        "note": None,
    },
    "data": {"rows": [{"region": "eu", "total": 120}, {"region": "us", "total": 80}]},
    "my-step_2": {"out": "dashes and underscores"},
}


def render(value: Any, **kwargs: Any) -> Any:
    return compile_template(value).render(SCOPE, **kwargs)


# -- dot paths ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("inputs.query", "sales by region"),
        ("nlp.entities.1", "sales"),
        ("data.rows.0.region", "eu"),
        ("data.rows.1", {"region": "us", "total": 80}),
        ("nlp.note", None),
        ("my-step_2.out", "dashes and underscores"),
        ("nlp", SCOPE["nlp"]),
    ],
)
def test_resolve_path_reads_keys_and_list_indexes(path: str, expected: Any) -> None:
    """Segments are mapping keys or integer indexes into lists."""
    assert resolve_path(SCOPE, path) == expected


@pytest.mark.parametrize(
    ("path", "segment", "reason"),
    [
        ("missing.x", "missing", "unknown name 'missing'"),
        ("nlp.nope", "nope", "key 'nope' not found in 'nlp'"),
        ("data.rows.5.region", "5", "index 5 out of range for 'data.rows' (length 2)"),
        ("data.rows.first", "first", "'data.rows' is an array; 'first' is not an index"),
        ("data.rows.-1", "-1", "'data.rows' is an array; '-1' is not an index"),
        ("inputs.query.0", "0", "'inputs.query' is a string, cannot look up '0' in it"),
        ("nlp.note.x", "x", "'nlp.note' is null, cannot look up 'x' in it"),
        ("inputs.limit.__class__", "__class__", "'inputs.limit' is a number"),
        ("nlp.__class__", "__class__", "key '__class__' not found in 'nlp'"),
    ],
)
def test_resolve_path_failures_name_the_segment(path: str, segment: str, reason: str) -> None:
    """An unresolvable path raises PathError naming the segment; no attribute is ever read."""
    with pytest.raises(PathError) as caught:
        resolve_path(SCOPE, path)
    assert caught.value.path == path
    assert caught.value.segment == segment
    assert reason in str(caught.value)
    assert isinstance(caught.value, LookupError)


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("", "path is empty"),
        ("a..b", "segment 2 is empty"),
        (".a", "segment 1 is empty"),
        ("a.", "segment 2 is empty"),
        ("a b", "segment 'a b' may only contain"),
        ("a.b[0]", "segment 'b[0]' may only contain"),
        ("a.é", "segment 'é' may only contain"),
        ("a.١", "segment '١' may only contain"),
        ("a\n", "may only contain"),
    ],
)
def test_split_path_refuses_malformed_paths(path: str, reason: str) -> None:
    """Only [A-Za-z0-9_-] segments joined by single dots are paths."""
    with pytest.raises(
        PathError, match="^path .*" + reason.replace("[", r"\[").replace("]", r"\]")
    ):
        split_path(path)


def test_split_path_returns_the_segments() -> None:
    """A valid path splits on dots into its segments."""
    assert split_path("data.rows.0.region") == ("data", "rows", "0", "region")


# -- whole-value placeholders -----------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ nlp.entities }}", ["region", "sales"]),
        ("{{nlp.filters}}", {"year": 2024}),
        ("{{ inputs.limit }}", 10),
        ("{{ inputs.ratio }}", 0.5),
        ("{{ inputs.debug }}", False),
        ("{{ nlp.note }}", None),
        ("{{ inputs.query }}", "sales by region"),
        ("{{\tdata.rows.1.total\n}}", 80),
    ],
)
def test_a_lone_placeholder_renders_the_value_with_its_type(template: str, expected: Any) -> None:
    """ "{{ path }}" alone is replaced by the value itself, not by its text."""
    result = render(template)
    assert result == expected
    assert type(result) is type(expected)


def test_text_around_a_placeholder_makes_it_an_interpolation() -> None:
    """Surrounding whitespace is text: the result is a string."""
    assert render(" {{ inputs.limit }}") == " 10"
    assert render("{{ inputs.limit }}\n") == "10\n"


# -- interpolation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("Q: {{ inputs.query }}", "Q: sales by region"),
        ("{{ inputs.limit }} rows", "10 rows"),
        ("ratio={{ inputs.ratio }}", "ratio=0.5"),
        ("debug={{ inputs.debug }}", "debug=false"),
        ("note={{ nlp.note }}", "note=null"),
        ("e={{ nlp.entities }}", 'e=["region","sales"]'),
        ("f={{ nlp.filters }}", 'f={"year":2024}'),
        ("{{ nlp.intent }}/{{ data.rows.0.region }}", "aggregate/eu"),
        ("{{ nlp.intent }}{{ nlp.intent }}", "aggregateaggregate"),
        ("no placeholders", "no placeholders"),
        ("single { braces } and }} stray closers", "single { braces } and }} stray closers"),
        ("", ""),
    ],
)
def test_interpolation_formats_each_value(template: str, expected: str) -> None:
    """Strings as is, numbers with str(), everything else as compact JSON."""
    assert render(template) == expected


def test_nested_structures_render_every_string_but_not_keys() -> None:
    """Dicts and lists are walked; keys are left as written; other scalars pass through."""
    raw = {
        "{{ nlp.intent }}": "key stays",
        "query": "{{ inputs.query }}",
        "filters": [{"region": "{{ data.rows.0.region }}", "limit": "{{ inputs.limit }}"}],
        "constants": [1, 2.5, True, None, "plain"],
    }
    assert render(raw) == {
        "{{ nlp.intent }}": "key stays",
        "query": "sales by region",
        "filters": [{"region": "eu", "limit": 10}],
        "constants": [1, 2.5, True, None, "plain"],
    }


def test_rendering_builds_new_containers_each_time() -> None:
    """Changing one rendered result cannot change the template or the next result."""
    template = compile_template({"list": [1, "{{ inputs.limit }}"], "d": {"k": "v"}})
    first = template.render(SCOPE)
    first["list"].append("mutated")
    first["d"]["k"] = "mutated"
    assert template.render(SCOPE) == {"list": [1, 10], "d": {"k": "v"}}
    assert template.raw == {"list": [1, "{{ inputs.limit }}"], "d": {"k": "v"}}


def test_references_and_paths_list_what_the_template_reads() -> None:
    """`references` are root names; `paths` every path, once, in order of appearance."""
    template = compile_template(
        {
            "a": "{{ inputs.query }}",
            "b": ["{{ nlp.intent }} and {{ inputs.query }}", "{{ nlp.entities.0 }}"],
            "{{ ignored.key }}": 1,
        }
    )
    assert template.references == frozenset({"inputs", "nlp"})
    assert template.paths == ("inputs.query", "nlp.intent", "nlp.entities.0")


def test_a_template_without_placeholders_references_nothing() -> None:
    """Plain JSON compiles to a template that renders to an equal value."""
    template = compile_template([1, {"a": None}])
    assert template.references == frozenset()
    assert template.paths == ()
    assert template.render({}) == [1, {"a": None}]


def test_templates_are_hashable_and_compare_by_value() -> None:
    """Equal raw values compile to equal templates, even when raw is a dict."""
    first = compile_template({"q": "{{ inputs.query }}"})
    second = compile_template({"q": "{{ inputs.query }}"})
    assert isinstance(first, Template)
    assert first == second
    assert hash(first) == hash(second)


# -- missing values -------------------------------------------------------------------


def test_missing_path_raises_naming_the_path() -> None:
    """With missing="error" an unresolvable path is a TemplateError that names it."""
    template = compile_template({"input": {"region": "x={{ nlp.nope.deeper }}"}})
    with pytest.raises(TemplateError) as caught:
        template.render(SCOPE)
    error = caught.value
    assert error.path == "nlp.nope.deeper"
    assert error.template == "x={{ nlp.nope.deeper }}"
    assert error.location == "input.region"
    assert "'nlp.nope.deeper'" in str(error)
    assert "key 'nope' not found in 'nlp'" in str(error)
    assert isinstance(error.__cause__, PathError)


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ nlp.nope }}", None),
        ("{{ absent }}", None),
        ("a={{ nlp.nope }};b={{ inputs.limit }}", "a=;b=10"),
        (["{{ data.rows.9 }}", "{{ data.rows.0.region }}"], [None, "eu"]),
        ({"k": "{{ inputs.query.0 }}"}, {"k": None}),
    ],
)
def test_missing_null_renders_none_or_empty_text(template: Any, expected: Any) -> None:
    """With missing="null" a whole value becomes None and an interpolated one ""."""
    assert render(template, missing="null") == expected


def test_missing_mode_must_be_known() -> None:
    """A typo in `missing` is a programming error, not silently "error"."""
    with pytest.raises(ValueError, match="missing must be 'error' or 'null'"):
        compile_template("x").render(SCOPE, missing="skip")  # type: ignore[arg-type]


def test_missing_value_is_still_none_when_present_as_null() -> None:
    """A path that resolves to null renders None in both modes: present, not missing."""
    assert render("{{ nlp.note }}") is None
    assert render("{{ nlp.note }}", missing="null") is None


# -- malformed templates ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "reason", "location"),
    [
        ("{{ inputs.query", "unclosed '{{'", ""),
        ("a {{ b }} c {{ d", "unclosed '{{'", ""),
        ("{{ a {{ b }}", "unclosed '{{' before another '{{'", ""),
        ("{{ }}", "empty placeholder", ""),
        ("{{}}", "empty placeholder", ""),
        ("{{ a..b }}", "invalid path 'a..b': segment 2 is empty", ""),
        ("{{ a b }}", "invalid path 'a b'", ""),
        ("{{ len(x) }}", "invalid path 'len(x)'", ""),
        ("{{ x.__class__.__mro__[1] }}", "invalid path", ""),
        ("{{ 1 + 1 }}", "invalid path '1 + 1'", ""),
        ({"outer": ["ok", "{{ broken"]}, "unclosed '{{'", "outer.1"),
    ],
)
def test_malformed_templates_are_refused_at_compile_time(
    raw: Any, reason: str, location: str
) -> None:
    """Broken placeholders fail when compiled, with the string and where it sits."""
    with pytest.raises(TemplateError) as caught:
        compile_template(raw)
    assert reason in caught.value.reason
    assert caught.value.location == location
    assert "{{" in caught.value.template


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ({1: "x"}, "object keys must be strings, not number"),
        ({"a": {1, 2}}, "set is not a JSON value"),
        (b"bytes", "bytes is not a JSON value"),
    ],
)
def test_non_json_values_are_refused(raw: Any, reason: str) -> None:
    """Only JSON values can be templates."""
    with pytest.raises(TemplateError, match=reason):
        compile_template(raw)


def test_nesting_is_capped() -> None:
    """A pathologically deep value is refused instead of exhausting the stack."""
    deep: Any = "leaf"
    for _ in range(MAX_DEPTH + 1):
        deep = [deep]
    with pytest.raises(TemplateError, match=f"nested more than {MAX_DEPTH} levels"):
        compile_template(deep)
    assert compile_template(deep[0]).render({}) == deep[0]


@pytest.mark.parametrize("leaf", ["{{ a.b }}", "plain", 1])
def test_nesting_cap_counts_object_levels_too(leaf: Any) -> None:
    """A value under MAX_DEPTH objects compiles; one level more is refused, whatever it is."""

    def nest(levels: int) -> Any:
        value = leaf
        for _ in range(levels):
            value = {"k": value}
        return value

    assert compile_template(nest(MAX_DEPTH)).references <= {"a"}
    with pytest.raises(TemplateError, match=f"nested more than {MAX_DEPTH} levels"):
        compile_template(nest(MAX_DEPTH + 1))


def test_dunder_paths_only_ever_read_keys() -> None:
    """A dunder-looking path is a syntactically valid key lookup, so it finds nothing."""
    template = compile_template("{{ inputs.__class__ }}")
    with pytest.raises(TemplateError, match="key '__class__' not found in 'inputs'"):
        template.render(SCOPE)
    assert template.render({"inputs": {"__class__": "data"}}) == "data"


# -- properties -----------------------------------------------------------------------

KEYS = st.text(alphabet=string.ascii_letters + string.digits + "_-", min_size=1, max_size=6)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=10),
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(KEYS, inner, max_size=4)),
    max_leaves=20,
)
SCOPES = st.dictionaries(KEYS, JSON_VALUES, min_size=1, max_size=4)


@st.composite
def scope_and_path(draw: st.DrawFn) -> tuple[dict[str, Any], str, Any]:
    """A random scope, a random path into it, and the value at that path."""
    scope = draw(SCOPES)
    root = draw(st.sampled_from(sorted(scope)))
    segments, value = [root], scope[root]
    while isinstance(value, dict | list) and value and draw(st.booleans()):
        if isinstance(value, dict):
            key = draw(st.sampled_from(sorted(value)))
            segments.append(key)
            value = value[key]
        else:
            index = draw(st.integers(0, len(value) - 1))
            segments.append(str(index))
            value = value[index]
    return scope, ".".join(segments), value


def same_json(left: Any, right: Any) -> bool:
    """Equal and of the same type all the way down (True is not 1, 1.0 is not 1)."""
    if type(left) is not type(right):
        return False
    if isinstance(left, dict):
        return left.keys() == right.keys() and all(same_json(left[k], right[k]) for k in left)
    if isinstance(left, list):
        return len(left) == len(right) and all(map(same_json, left, right))
    return bool(left == right)


@settings(max_examples=300, deadline=None)
@given(scope_and_path(), st.sampled_from(["{{%s}}", "{{ %s }}", "{{\n%s\t}}"]))
def test_whole_value_template_returns_exactly_the_value(
    case: tuple[dict[str, Any], str, Any], form: str
) -> None:
    """For any JSON scope and any path into it, "{{ path }}" renders to that very value."""
    scope, path, expected = case
    template = compile_template(form % path)
    assert template.paths == (path,)
    assert template.references == frozenset({path.split(".")[0]})
    for missing in ("error", "null"):
        assert same_json(template.render(scope, missing=missing), expected)
    assert same_json(resolve_path(scope, path), expected)


@settings(max_examples=200, deadline=None)
@given(
    scope_and_path(), st.text(alphabet="ab {}", max_size=5), st.text(alphabet="ab {}", max_size=5)
)
def test_interpolated_strings_are_spliced_in_verbatim(
    case: tuple[dict[str, Any], str, Any], before: str, after: str
) -> None:
    """Text around a placeholder is kept; a string value is inserted exactly as it is."""
    scope, path, value = case
    raw = f"<{before}{{{{ {path} }}}}{after}>"
    # Braces touching the placeholder would change the placeholder itself; malformed
    # templates have their own tests above.
    assume("{{" not in before + after and not before.endswith("{"))
    rendered = compile_template(raw).render(scope)
    assert isinstance(rendered, str)
    assert rendered.startswith(f"<{before}") and rendered.endswith(f"{after}>")
    if isinstance(value, str):
        assert rendered == f"<{before}{value}{after}>"


@settings(max_examples=200, deadline=None)
@given(SCOPES, KEYS)
def test_a_path_outside_the_scope_never_renders_something_else(
    scope: dict[str, Any], extra: str
) -> None:
    """A root name not in the scope is an error, or None/"" with missing="null"."""
    name = extra + "-absent"
    assume(name not in scope)
    with pytest.raises(TemplateError) as caught:
        compile_template("{{ " + name + ".x }}").render(scope)
    assert caught.value.path == f"{name}.x"
    assert compile_template("{{ " + name + " }}").render(scope, missing="null") is None
    assert compile_template("[{{ " + name + " }}]").render(scope, missing="null") == "[]"


# The alphabet of placeholders and their near misses: braces, dots, path characters, and
# whitespace both ASCII and Unicode (str.strip() removes all of it).
_NEAR_PLACEHOLDERS = st.one_of(
    st.builds(
        "".join,
        st.tuples(
            st.sampled_from(["{{", "{{ ", "{{\n", "{{\u00a0", "{{\x1c", " {{", "{", "{{{"]),
            st.text(alphabet="a9_-.$ {}\u2003", max_size=8),
            st.sampled_from(["}}", " }}", "\t}}", "\u2003}}", "}} ", "}", "}}}", ""]),
        ),
    ),
    st.lists(
        st.sampled_from([*"{}.a9_- \t\n\x1c\u00a0\u2003$(", "{{", "}}", "{{ ", " }}", "ab.c"]),
        max_size=8,
    ).map("".join),
)


@settings(max_examples=500, deadline=None)
@given(_NEAR_PLACEHOLDERS)
def test_the_whole_placeholder_fast_path_agrees_with_the_scanner(text: str) -> None:
    """Whatever the string, the one-regex fast path compiles it as the general scanner does."""
    from orchestrator.dag import templates

    fast: dict[str, str] = {}
    slow: dict[str, str] = {}
    try:
        expected = templates._scan(text, "at", slow)
    except TemplateError as exc:
        with pytest.raises(TemplateError) as caught:
            templates._parse_string(text, "at", fast)
        assert (caught.value.reason, caught.value.path) == (exc.reason, exc.path)
        return
    if "{{" not in text:
        assert templates._parse_string(text, "at", fast) == text
        return
    assert templates._parse_string(text, "at", fast) == expected
    assert fast == slow


@pytest.mark.parametrize("text", ["{{ a.b }}", "{{a}}", "{{\u00a0a-1.0_x\n}}", "{{ a }}}"])
def test_whole_placeholders_compile_alike_either_way(text: str) -> None:
    """The common "{{ path }}" forms (and a near miss) give the same template as the scanner."""
    from orchestrator.dag import templates

    found: dict[str, str] = {}
    assert templates._parse_string(text, "", {}) == templates._scan(text, "", found)
