"""One source of every default: the settings model; the README, the CLI and the code read it."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import re
import textwrap
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from orchestrator import settings_doc
from orchestrator.settings import DEFAULTS, VARIABLES, Settings, default_of, field_type

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("orchestrator", "agents", "circuit", "state")
FIELDS = {f.name for f in dataclasses.fields(Settings)}
# Defaults that mean "off" rather than a value: a lower layer may start with the feature
# off (no cluster, no write-behind, no extra labels) whatever the service's default.
OFF = (None, False, 0, 0.0, ())


def _modules() -> Iterator[tuple[Path, str]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.name != "__main__.py":
                yield path, ".".join(path.relative_to(ROOT).with_suffix("").parts)


def test_the_readme_tables_are_the_models() -> None:
    """README's settings tables are exactly what `settings_doc` renders from the model."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    found = settings_doc.blocks(text)
    assert set(found) == set(settings_doc.TABLES), "a settings table is missing from README"
    fresh = settings_doc.blocks(settings_doc.render(text))
    for name in settings_doc.TABLES:
        assert found[name] == fresh[name], (
            f"README's {name!r} table is stale: "
            "python -m orchestrator.settings_doc --write README.md"
        )
    assert settings_doc.main(["--check", str(ROOT / "README.md")]) == 0


def test_the_env_table_lists_every_variable_with_its_real_default() -> None:
    table = settings_doc.env_table()
    for var in VARIABLES:
        row = next(line for line in table.splitlines() if line.startswith(f"| `{var.name}` |"))
        if var.field is not None and default_of(var.field) not in (None, ()):
            assert settings_doc.show(default_of(var.field), name=var.name.lower()) in row
    assert "| `ORCH_STATE_TTL_S` | `3600` |" in table
    assert "| `ORCH_MAX_BODY_BYTES` | `1048576` (1 MiB) |" in table


def test_every_variable_the_code_reads_is_declared() -> None:
    """The only env reader names no variable that VARIABLES (and so the README) lacks."""
    source = (ROOT / "orchestrator" / "settings.py").read_text(encoding="utf-8")
    read = {
        node.args[0].value
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "get"
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
        and node.args[0].value.isupper()
    }
    assert read <= {var.name for var in VARIABLES}
    assert len({var.name for var in VARIABLES}) == len(VARIABLES)


def _sample(tp: Any, default: Any) -> str:
    """An environment value of type `tp` other than `default`, within its constraints."""
    if typing.get_origin(tp) is typing.Annotated:
        inner, *metas = typing.get_args(tp)
        floor = max(
            [m.ge for m in metas if isinstance(m, msgspec.Meta) and m.ge is not None]
            + [m.gt + 1 for m in metas if isinstance(m, msgspec.Meta) and m.gt is not None]
            + [0]
        )
        if inner is str:
            return "http://elsewhere.test:9"
        return str(max(floor, default or 0) + 1)
    if typing.get_origin(tp) is typing.Literal:
        return next(str(c) for c in typing.get_args(tp) if c != default)
    if tp is bool:
        return "1" if not default else "0"
    if typing.get_origin(tp) in (typing.Union, type(int | None)):
        return _sample(next(a for a in typing.get_args(tp) if a is not type(None)), default)
    if typing.get_origin(tp) is tuple:
        return "a,b"
    return "elsewhere"


@pytest.mark.parametrize(
    "var", [v for v in VARIABLES if v.field and not v.by_hand], ids=lambda v: v.name
)
def test_every_declared_variable_sets_its_field(var: Any) -> None:
    """Each variable really changes the field the README says it sets."""
    tp = var.tp if var.tp is not None else field_type(var.field)
    raw = _sample(tp, default_of(var.field))
    assert _at(Settings.from_env({var.name: raw}), var.field) != default_of(var.field)


def _at(settings: Settings, path: str) -> Any:
    value: Any = settings
    for part in path.split("."):
        value = value[part] if isinstance(value, typing.Mapping) else getattr(value, part)
    return value


def _fed_parameters() -> Iterator[tuple[str, int, Any, str, str]]:
    """(module, line, callee, parameter, setting) for each `f(x=settings.<field>)`."""
    for path, name in _modules():
        module = importlib.import_module(name)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = {**vars(module), **_imported_in_functions(tree)}
        for call in ast.walk(tree):
            if not isinstance(call, ast.Call):
                continue
            for kw in call.keywords:
                setting = _setting_in(kw.value)
                callee = _resolve(names, call.func)
                if kw.arg and setting and callee is not None:
                    yield name, call.lineno, callee, kw.arg, setting


def _setting_in(node: ast.AST) -> str | None:
    for sub in ast.walk(node):
        if isinstance(sub, ast.Attribute) and sub.attr in FIELDS:
            owner = sub.value
            named = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", "")
            if named in ("settings", "_settings"):
                return sub.attr
    return None


def _imported_in_functions(tree: ast.Module) -> dict[str, Any]:
    """What `from x import y` inside functions binds (the Redis parts are imported where
    they are built, so that a service on the memory store never loads redis-py)."""
    found: dict[str, Any] = {}
    for function in ast.walk(tree):
        if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(function):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                source = importlib.import_module(node.module)
                for alias in node.names:
                    found[alias.asname or alias.name] = getattr(source, alias.name)
    return found


def _resolve(names: dict[str, Any], func: ast.expr) -> Any:
    parts: list[str] = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if not isinstance(func, ast.Name) or func.id not in names:
        return None
    obj = names[func.id]
    for part in reversed(parts):
        obj = getattr(obj, part, None)
    ours = getattr(obj, "__module__", "") or ""
    return obj if ours.split(".")[0] in PACKAGES else None


def _default_node(callee: Any, parameter: str) -> ast.expr | None:
    """How `parameter`'s default is written in `callee`'s source (None: no default)."""
    function = callee.__init__ if inspect.isclass(callee) else callee
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    node = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef))
    args = node.args
    positional = args.posonlyargs + args.args
    pairs = list(
        zip(positional[len(positional) - len(args.defaults) :], args.defaults, strict=True)
    )
    pairs += [(a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True) if d]
    return next((d for a, d in pairs if a.arg == parameter), None)


def _literal(node: ast.expr) -> bool:
    return all(isinstance(n, ast.Constant | ast.BinOp | ast.operator) for n in ast.walk(node))


def test_no_parameter_fed_by_a_setting_restates_its_default() -> None:
    """A parameter given `settings.<field>` has no default of its own: none, "off", or the model's.

    A literal there would be a second copy of the model's default (which drifts) or a
    different one (which a caller that forgets the setting silently gets).
    """
    problems = []
    fed = list(_fed_parameters())
    assert len(fed) > 30  # the scan sees the wiring in app.py, not nothing
    for module, line, callee, parameter, setting in fed:
        node = _default_node(callee, parameter)
        if node is None:
            continue
        value = inspect.signature(callee).parameters[parameter].default
        if (
            _literal(node)
            and value not in OFF
            or not _literal(node)
            and value not in OFF
            and (value != getattr(DEFAULTS, setting))
        ):
            where = f"{module}:{line} {callee.__qualname__}({parameter}=settings.{setting})"
            problems.append(
                f"{where}: default {ast.unparse(node)} (model: {getattr(DEFAULTS, setting)!r})"
            )
    assert not problems, "\n".join(problems)


def test_no_same_named_parameter_hard_codes_the_models_value() -> None:
    """Second-hand copies too: `lease_s: float = 15.0` anywhere is the model's lease, restated."""
    names = {(parameter, setting) for _, _, _, parameter, setting in _fed_parameters()}
    # host/port: the reference agents are programs of their own, binding loopback too.
    names |= {(field, field) for field in FIELDS - {"host", "port"}}
    problems = []
    for path, _ in _modules():
        if path.name == "settings.py" and path.parent.name == "orchestrator":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            args = node.args
            positional = args.posonlyargs + args.args
            pairs = list(
                zip(positional[len(positional) - len(args.defaults) :], args.defaults, strict=True)
            )
            pairs += [(a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True) if d]
            for arg, default in pairs:
                if not isinstance(default, ast.Constant) or default.value in OFF:
                    continue
                for parameter, setting in names:
                    if arg.arg == parameter and default.value == getattr(DEFAULTS, setting):
                        problems.append(f"{path.relative_to(ROOT)}:{node.lineno} {arg.arg}")
    assert not problems, "\n".join(problems)


def test_the_cli_help_shows_the_models_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    from orchestrator.cli import main

    with pytest.raises(SystemExit):
        main(["up", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"default {DEFAULTS.host}" in text and f"default {DEFAULTS.port}" in text
    nlp_port = DEFAULTS.agents["nlp"].url.rsplit(":", 1)[1]
    assert f"(default {nlp_port})" in text


def _deploy_environments() -> dict[str, dict[str, str]]:
    """The variables the Dockerfile's ENV lines and each compose service running ours set."""
    import shlex

    import yaml

    found: dict[str, dict[str, str]] = {"Dockerfile": {}}
    for line in (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines():
        if line.startswith("ENV "):
            for word in shlex.split(line.removeprefix("ENV ").rstrip("\\")):
                key, _, value = word.partition("=")
                found["Dockerfile"][key] = value
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    for name, service in compose["services"].items():
        if service.get("image", "").startswith("agent-orchestrator") or "build" in service:
            env = service.get("environment") or {}
            found[f"compose {name}"] = {k: str(v) for k, v in env.items()}
    return found


def test_deploy_files_set_declared_variables_to_valid_non_default_values() -> None:
    """The Dockerfile and compose configure what the model reads, and restate no default.

    ORCH_PORT is the exception in the Dockerfile: the image pins it, so EXPOSE and the
    HEALTHCHECK stay right whatever the model's default becomes.
    """
    declared = {var.name: var for var in VARIABLES}
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    for where, env in _deploy_environments().items():
        ours = {k: v for k, v in env.items() if k in declared or k.startswith("ORCH_")}
        assert set(ours) <= set(declared), f"{where} sets undeclared {set(ours) - set(declared)}"
        Settings.from_env(ours)  # every value is valid
        for key, raw in ours.items():
            var = declared[key]
            if var.field is None or var.by_hand or (where, key) == ("Dockerfile", "ORCH_PORT"):
                continue
            value = _at(Settings.from_env({key: raw}), var.field)
            assert value != default_of(var.field), (
                f"{where} sets {key}={raw}, the model's default: drop it"
            )
    port = _deploy_environments()["Dockerfile"]["ORCH_PORT"]
    assert f"EXPOSE {port}" in dockerfile and f"127.0.0.1:{port}/healthz" in dockerfile


_UNITS = {"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
_NUMBER = re.compile(r"(\d[\d,]*(?:\.\d+)?)\s*(KiB|MiB|GiB)?")


def _numbers(cell: str) -> list[float]:
    return [float(n.replace(",", "")) * _UNITS.get(unit, 1) for n, unit in _NUMBER.findall(cell)]


def _rows(section: str) -> Iterator[list[str]]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    body = text.split(f"\n{section}\n", 1)[1].split("\n#", 1)[0]
    for line in body.splitlines():
        if line.startswith("| ") and not line.startswith("|---"):
            yield [cell.strip() for cell in line.strip("|").split(" | ")]


def test_the_readmes_prose_tables_quote_the_models_defaults() -> None:
    """The hand-written tables that explain limits and defaults quote the model's values."""
    by_name = {var.name: var for var in VARIABLES}
    checked = 0
    for _, default, setting, *_ in _rows("## Hostile input: every limit"):
        names = re.findall(r"`(ORCH_[A-Z_]+)`", setting)
        if not names:
            continue
        values = _numbers(default)[-len(names) :]
        expected = [default_of(by_name[name].field or "") for name in names]
        assert values == expected, f"{setting}: README says {default}, the model {expected}"
        checked += len(names)
    assert checked >= 14
    why = {row[0]: row[1] for row in _rows("### Defaults, and why")}
    concurrency = next(v for k, v in why.items() if k.startswith("per-agent `concurrency`"))
    parallel = next(v for k, v in why.items() if k.startswith("`max_parallel`"))
    assert _numbers(concurrency)[0] == DEFAULTS.agents["nlp"].concurrency
    assert _numbers(parallel)[0] == DEFAULTS.max_parallel


def test_a_stale_table_is_reported_and_rewritten(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--check` names the stale table and fails; `--write` regenerates it in place."""
    readme = tmp_path / "README.md"
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    row = "| `ORCH_STATE_TTL_S` | `3600` |"
    readme.write_text(text.replace(row, row.replace("3600", "60")))
    assert settings_doc.main(["--check", str(readme)]) == 1
    assert "'env' is stale" in capsys.readouterr().out
    assert settings_doc.main(["--write", str(readme)]) == 0
    assert readme.read_text(encoding="utf-8") == text
    readme.write_text("no tables here\n")
    assert settings_doc.main(["--check", str(readme)]) == 1
    assert "'env' is missing" in capsys.readouterr().out


def test_the_readmes_running_text_quotes_the_models_durations() -> None:
    """Wherever the README says "`ORCH_X` (15 s)" or "`ORCH_X`, 5 ms", it is the model's default."""
    by_name = {var.name: var for var in VARIABLES}
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    quoted = re.findall(r"`(ORCH_[A-Z_]+)`(?:,| =| \()\s*(\d[\d.,]*)\s*(ms|s)\b", text)
    assert len(quoted) >= 10
    for name, number, unit in quoted:
        said = float(number.replace(",", "")) / (1000 if unit == "ms" else 1)
        assert said == default_of(by_name[name].field or ""), f"README: `{name}` {number} {unit}"


def test_every_field_of_the_model_is_configured_somewhere() -> None:
    """Each field is set by a variable or by the file; max_nodes is fixed (README: "—")."""
    heads = {var.field.split(".")[0] for var in VARIABLES if var.field}
    by_file = {"agents", "access"}
    assert FIELDS - heads - by_file == {"max_nodes"}


def test_settings_is_the_only_reader_of_the_environment() -> None:
    readers = []
    for path, name in _modules():
        if name == "orchestrator.settings":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv", "environb"):
                readers.append(f"{name}:{node.lineno}")
    assert not readers


def test_the_default_timeouts_nest() -> None:
    """A hanging agent gets two or three reads inside a step's deadline, inside the sync wait."""
    read = DEFAULTS.agents["nlp"].timeouts.read
    assert 2 <= DEFAULTS.step_timeout_s / read < 3
    assert DEFAULTS.step_timeout_s < DEFAULTS.sync_wait_s
    assert {spec.timeouts.read for spec in DEFAULTS.agents.values()} == {read}
