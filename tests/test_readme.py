"""The README is executable: every shell example it shows runs as written.

Each fenced shell block (```sh) in README.md is one example. Its info string says how it
is checked:

    ```sh                run here, against a live service (below)
    ```sh setup          one of the two set-up commands (./scripts/run.sh, ./scripts/test.sh)
    ```sh needs:redis    needs what this test does not start (also needs:docker,
    ```sh needs:keys     needs:keys for API keys configured, needs:pypi for the network):
                         checked with `bash -n` only

The live service is what `./scripts/run.sh` starts (`orchestrator up`: the three reference
agents and the API on 127.0.0.1, the embedded memory store, no keys), on free ports. The
README's examples address it as `localhost:8000` and the agents as `localhost:8001`..`8003`
(and an A2A agent as `--port 9003` / `localhost:9003`); this test rewrites exactly those
ports to the ones it got, and nothing else in a block. Each block runs with
`bash -euo pipefail` from the repository's root, in order, and must exit 0.

Every `curl` a block makes goes through a recording shim (a `curl` first on PATH that runs
the real one with `--dump-header`), so each call is checked too: it exited 0; its HTTP
status is below 400 unless the block names that status (a comment such as `# 502 ten
times`); a JSON response printed as such parses; an event stream ends with the workflow's
terminal event.

Commands shown inline in the prose (`orchestrator keys list`, `.venv/bin/python -m
bench.dag_plan`) are not run (benchmarks take minutes, some need Redis), but must name what
exists: the CLI's own parser accepts each `orchestrator ...`, each `python -m` module exists
with the flags shown, each script exists.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from orchestrator import cli
from tests.ports import free_port, free_ports_in_a_row

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SHELLS = {"sh", "bash", "shell"}
NOT_RUN = {"needs:redis", "needs:docker", "needs:keys", "needs:pypi"}
SET_UP_COMMANDS = ["./scripts/run.sh", "./scripts/test.sh"]
# The ports README examples use: the API, the three agents, an A2A agent of its own.
README_PORTS = {"api": 8000, "nlp": 8001, "data": 8002, "viz": 8003, "a2a": 9003}


@dataclass(frozen=True)
class Block:
    line: int  # of the opening fence, 1-based
    tags: frozenset[str]
    text: str

    @property
    def id(self) -> str:
        first = next((s for s in self.text.splitlines() if s.strip()), "")
        return f"L{self.line}:{first.strip()[:40]}"


def shell_blocks(markdown: str, languages: set[str] = SHELLS) -> list[Block]:
    """Every fenced block in one of `languages`, with the rest of its info string."""
    blocks: list[Block] = []
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        opening = re.match(r"^(`{3,})\s*(\S*)\s*(.*)$", lines[i])
        if not opening:
            i += 1
            continue
        fence, language, rest = opening.groups()
        end = next(
            (j for j in range(i + 1, len(lines)) if lines[j].startswith(fence)), len(lines)
        )
        if language in languages:
            body = "\n".join(lines[i + 1 : end]) + "\n"
            blocks.append(Block(i + 1, frozenset(rest.split()), body))
        i = end + 1
    return blocks


BLOCKS = shell_blocks(README.read_text(encoding="utf-8"))
RUN = [b for b in BLOCKS if not b.tags]
CHECKED_ONLY = [b for b in BLOCKS if b.tags]


def test_the_readme_has_shell_examples_and_knows_every_tag() -> None:
    assert len(RUN) >= 10, "the README's runnable examples were not found"
    for block in CHECKED_ONLY:
        unknown = block.tags - NOT_RUN - {"setup"}
        assert not unknown, f"README line {block.line}: unknown tag(s) {sorted(unknown)}"


def test_the_readme_keeps_exactly_the_two_set_up_commands() -> None:
    setup = [b.text.strip() for b in BLOCKS if "setup" in b.tags]
    assert setup == SET_UP_COMMANDS
    for command in SET_UP_COMMANDS:
        assert os.access(ROOT / command, os.X_OK), f"{command} is not executable"


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_every_shell_example_parses(block: Block) -> None:
    result = subprocess.run(
        ["bash", "-n"], input=block.text, capture_output=True, text=True, timeout=10
    )
    assert result.returncode == 0, f"README line {block.line}: {result.stderr}"


TOML = shell_blocks(README.read_text(encoding="utf-8"), {"toml"})


@pytest.mark.parametrize("block", TOML, ids=[b.id for b in TOML])
def test_every_toml_example_is_toml(block: Block) -> None:
    """The ORCH_CONFIG examples can be pasted into a file as they are."""
    try:
        tomllib.loads(block.text)
    except tomllib.TOMLDecodeError as exc:
        raise AssertionError(f"README line {block.line}: {exc}") from exc


# --- the live service ----------------------------------------------------------------


def _free_port() -> int:
    return free_port()


def _three_free_ports() -> int:
    """A base port with the next two free as well (`up` puts the agents on base..base+2)."""
    return free_ports_in_a_row(3)


@dataclass(frozen=True)
class Live:
    ports: dict[int, int]  # README port -> the port it is here
    env: dict[str, str]
    calls: Path  # where the curl shim records each call


CURL_SHIM = """#!/usr/bin/env bash
# tests/test_readme.py: run the real curl, keep what came back for the test to check.
call="$(mktemp -d "$README_CURL_CALLS/$(date +%s%N)-XXXX")"
printf '%s\\n' "$@" > "$call/args"
"$README_REAL_CURL" --dump-header "$call/head" "$@" | tee "$call/out"
rc="${PIPESTATUS[0]}"
echo "$rc" > "$call/rc"
exit "$rc"
"""


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """`orchestrator up` (what ./scripts/run.sh execs) on free ports, memory store, no keys."""
    real_curl = shutil.which("curl")
    assert real_curl, "curl is needed (scripts/test.sh installs it)"
    api, base, a2a = _free_port(), _three_free_ports(), _free_port()
    ports = {
        README_PORTS["api"]: api,
        README_PORTS["nlp"]: base,
        README_PORTS["data"]: base + 1,
        README_PORTS["viz"]: base + 2,
        README_PORTS["a2a"]: a2a,
    }
    tmp = tmp_path_factory.mktemp("readme")
    shim_dir, calls = tmp / "bin", tmp / "calls"
    shim_dir.mkdir()
    calls.mkdir()
    (shim_dir / "curl").write_text(CURL_SHIM)
    (shim_dir / "curl").chmod(0o755)
    # The service's environment: the embedded default, whatever the suite runs with.
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("REDIS_URL", "REDIS_CLUSTER_URL", "ORCH_CONFIG") and not k.startswith("ORCH_")
    }
    # `.venv/bin/...` in the README is this interpreter's environment.
    env["PATH"] = f"{shim_dir}:{Path(sys.executable).parent}:{env.get('PATH', '')}"
    env.update(README_REAL_CURL=real_curl, README_CURL_CALLS=str(calls))
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "up", "--port", str(api),
         "--agents-base-port", str(base)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        # The first line is printed once every socket listens: nothing to wait for after.
        ready = proc.stdout.readline()
        assert f"http://127.0.0.1:{api}" in ready, ready
        yield Live(ports, env, calls)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)


def rewrite_ports(text: str, ports: dict[int, int]) -> str:
    """`localhost:8000`, `127.0.0.1:8002`, `--port 9003`: the README's ports to the live ones."""
    numbers = "|".join(str(p) for p in ports)

    def swap(match: re.Match[str]) -> str:
        return f"{match[1]}{ports[int(match[2])]}"

    return re.sub(rf"(\blocalhost:|\b127\.0\.0\.1:|--port )({numbers})\b", swap, text)


@dataclass(frozen=True)
class Call:
    args: list[str]
    rc: int
    status: int | None
    content_type: str
    out: str


def _calls(directory: Path) -> list[Call]:
    found = []
    for call in sorted(directory.iterdir()):
        head = (call / "head").read_text(errors="replace") if (call / "head").exists() else ""
        statuses = re.findall(r"^HTTP/\S+ (\d{3})", head, re.M)
        types = re.findall(r"^content-type:\s*([^;\r\n]+)", head, re.M | re.I)
        found.append(
            Call(
                args=(call / "args").read_text().splitlines(),
                rc=int((call / "rc").read_text() or 0) if (call / "rc").exists() else -1,
                status=int(statuses[-1]) if statuses else None,
                content_type=types[-1].strip().lower() if types else "",
                out=(call / "out").read_text(errors="replace"),
            )
        )
        shutil.rmtree(call)
    return found


def _body(call: Call) -> str:
    if "-i" in call.args or "--include" in call.args:
        # The head comes first: the body starts after the last head's blank line.
        return re.split(r"\r?\n\r?\n", call.out, maxsplit=call.out.count("HTTP/"))[-1]
    return call.out


def _check_call(block: Block, call: Call) -> None:
    where = f"README line {block.line}: curl {' '.join(call.args)}"
    assert call.rc == 0, f"{where} exited {call.rc}"
    assert call.status is not None, f"{where}: no HTTP answer"
    if call.status >= 400:
        assert re.search(rf"\b{call.status}\b", block.text), (
            f"{where} answered {call.status}, which the example does not mention: "
            f"{call.out[:300]}"
        )
    printed = not any(a in ("-o", "--output") for a in call.args)
    if printed and call.content_type == "application/json":
        try:
            json.loads(_body(call))
        except ValueError as exc:
            raise AssertionError(f"{where} printed JSON that does not parse: {exc}") from exc
    if call.content_type == "text/event-stream":
        terminal = r"^event: workflow\.(completed|degraded|failed|cancelled)$"
        assert re.search(terminal, call.out, re.M), f"{where}: the stream did not end"


@pytest.mark.parametrize("block", RUN, ids=[b.id for b in RUN])
def test_every_runnable_example_runs_against_a_live_service(
    block: Block, live: Live, tmp_path: Path
) -> None:
    script = "set -euo pipefail\n" + rewrite_ports(block.text, live.ports)
    log = tmp_path / "output"
    with log.open("w") as output:
        # Its own process group: whatever a block leaves running in the background (an
        # agent started with `&`) is stopped with it.
        proc = subprocess.Popen(
            ["bash", "-c", script],
            cwd=ROOT,
            env=live.env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            rc = proc.wait(timeout=45)
        finally:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    printed = log.read_text(errors="replace")[-3000:]
    assert rc == 0, f"README line {block.line} exited {rc}:\n{script}\n--- output:\n{printed}"
    calls = _calls(live.calls)
    if "curl " in block.text:
        assert calls, f"README line {block.line}: no curl call was recorded"
    for call in calls:
        _check_call(block, call)


# --- the checker itself ----------------------------------------------------------------


def test_blocks_are_found_with_their_tags() -> None:
    text = "x\n```sh\necho a\n```\n```json\n{}\n```\n````bash needs:redis\nredis-cli\n````\n"
    found = shell_blocks(text)
    assert [(b.line, set(b.tags), b.text) for b in found] == [
        (2, set(), "echo a\n"),
        (8, {"needs:redis"}, "redis-cli\n"),
    ]


def test_only_the_readme_ports_are_rewritten() -> None:
    ports = {8000: 41000, 8002: 41002, 9003: 41003}
    text = (
        "curl localhost:8000/a 127.0.0.1:8002/b --port 9003 localhost:80001 "
        "example.com:8000 --limit 8000 localhost:8001"
    )
    assert rewrite_ports(text, ports) == (
        "curl localhost:41000/a 127.0.0.1:41002/b --port 41003 localhost:80001 "
        "example.com:8000 --limit 8000 localhost:8001"
    )


def _call(status: int, out: str, content_type: str = "application/json") -> Call:
    return Call(args=["-s", "localhost:1/x"], rc=0, status=status, content_type=content_type,
                out=out)  # fmt: skip


def test_a_call_fails_the_example_on_an_unnamed_error_or_bad_json() -> None:
    block = Block(1, frozenset(), "curl -s localhost:8000/x   # 409 if it already ended\n")
    _check_call(block, _call(200, '{"ok": true}'))
    _check_call(block, _call(409, '{"error": {}}'))  # named in the block
    with pytest.raises(AssertionError, match="answered 404"):
        _check_call(block, _call(404, '{"error": {}}'))
    with pytest.raises(AssertionError, match="does not parse"):
        _check_call(block, _call(200, '{"ok": tru'))
    with pytest.raises(AssertionError, match="exited 7"):
        _check_call(block, Call(["localhost:1"], 7, None, "", ""))
    with pytest.raises(AssertionError, match="did not end"):
        _check_call(block, _call(200, "event: step.started\n", "text/event-stream"))


# --- commands shown inline, in the prose ----------------------------------------------

_COMMAND = re.compile(
    r"^(?:[A-Z_]+=\S+ )*(?:\.venv/bin/|\./|bash |eval |python3? |orchestrator |scripts/|docker )"
)


def inline_commands(markdown: str) -> list[str]:
    """The `code spans` outside fenced blocks that are commands (a span may wrap a line)."""
    prose = re.sub(r"^(`{3,}).*?^\1", "", markdown, flags=re.S | re.M)
    spans = (" ".join(span.split()) for span in re.findall(r"(?<!`)`([^`]+)`(?!`)", prose))
    return sorted({span for span in spans if _COMMAND.match(span)})


INLINE = inline_commands(README.read_text(encoding="utf-8"))


def _argv(command: str) -> list[str]:
    words = shlex.split(command)
    while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
        words.pop(0)  # VAR=value prefixes
    return words


@pytest.mark.parametrize("command", INLINE, ids=[c[:70] for c in INLINE])
def test_every_inline_command_names_what_exists(command: str) -> None:
    """What a sentence tells you to run exists, with the flags it shows.

    `orchestrator ...` is parsed by the CLI's own parser (not run); `python -m M` needs an
    importable M whose source defines each --flag shown; a script path must exist. Every
    command parses as shell. Spans with a placeholder (`…`) are checked as shell only.
    """
    assert subprocess.run(["bash", "-n"], input=command, text=True).returncode == 0
    if "…" in command:
        return
    argv = _argv(command)
    program = argv[0]
    if program in ("orchestrator", ".venv/bin/orchestrator"):
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                cli.build_parser().parse_args(argv[1:])
            except SystemExit as exc:
                assert exc.code == 0, f"`{command}`: the orchestrator CLI refuses it"
    elif program in ("python", "python3", ".venv/bin/python") and argv[1:2] == ["-m"]:
        spec = importlib.util.find_spec(argv[2])
        assert spec is not None and spec.origin, f"`{command}`: no module {argv[2]}"
        source = Path(spec.origin).read_text(encoding="utf-8")
        for flag in (a.split("=")[0] for a in argv[3:] if a.startswith("--")):
            assert f'"{flag}"' in source, f"`{command}`: {argv[2]} has no {flag}"
    elif program in ("python", "python3", ".venv/bin/python"):
        assert (ROOT / argv[1]).is_file(), f"`{command}`: no file {argv[1]}"
    elif program == "bash" and argv[1:2] != ["-n"] and not argv[1].startswith("-"):
        assert (ROOT / argv[1]).is_file(), f"`{command}`: no file {argv[1]}"
    elif program.startswith(("./", "scripts/")):
        assert os.access(ROOT / program, os.X_OK), f"`{command}`: {program} is not executable"
