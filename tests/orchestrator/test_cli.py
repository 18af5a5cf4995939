"""The `orchestrator` console script: help texts, config errors, and `up` for real."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from orchestrator.cli import main
from tests.ports import free_port, free_ports_in_a_row


@pytest.mark.parametrize(
    "argv", [["--help"], ["serve", "--help"], ["up", "--help"], ["agent", "--help"]]
)
def test_every_command_explains_itself(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "usage: orchestrator" in out
    assert len(out.splitlines()) > 3


def test_bad_config_stops_start_up_with_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "orch.toml"
    config.write_text("[agents.data.breaker]\nfail_max = -1\n", encoding="utf-8")
    monkeypatch.setenv("ORCH_CONFIG", str(config))
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert str(config) in err
    assert "agents.data.breaker.fail_max" in err


def _free_ports(n: int) -> list[int]:
    return [free_port() for _ in range(n)]


def _consecutive_free_ports() -> int:
    """A base port with the next two free as well (the agents take base, base+1, base+2)."""
    return free_ports_in_a_row(3)


def test_up_starts_api_and_agents_and_answers_a_query() -> None:
    """`orchestrator up` prints its URL and store, answers the README's query, stops on SIGINT."""
    (api_port,) = _free_ports(1)
    base = _consecutive_free_ports()
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "ORCH_CONFIG")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "orchestrator",
            "up",
            "--port",
            str(api_port),
            "--agents-base-port",
            str(base),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert f"http://127.0.0.1:{api_port}" in first
        assert "state store: memory" in first
        assert f"nlp=http://127.0.0.1:{base}" in first
        assert "curl" in proc.stdout.readline()
        assert "access: OPEN" in proc.stdout.readline()  # no keys: says so, loopback only
        request = urllib.request.Request(
            f"http://127.0.0.1:{api_port}/api/query",
            data=json.dumps({"query": "average revenue by region in 2024"}).encode(),
            headers={"Content-Type": "application/json"},
        )
        # The line is printed once every socket listens: no waiting needed.
        with urllib.request.urlopen(request, timeout=30) as response:
            body = json.loads(response.read())
        assert body["status"] == "completed"
        assert body["chart"]["mark"]
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0


def _post(url: str, body: dict[str, object], timeout: float = 30) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_sigterm_answers_waiting_sync_clients_and_exits_after_the_grace() -> None:
    """SIGTERM: no new connections, running workflows get ORCH_SHUTDOWN_GRACE_S, then end
    `cancelled` (memory store); a sync client still waiting gets the workflow document."""
    import threading
    import time

    (api_port,) = _free_ports(1)
    base = _consecutive_free_ports()
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "ORCH_CONFIG")}
    env["ORCH_SHUTDOWN_GRACE_S"] = "1"
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "up", "--port", str(api_port),
         "--agents-base-port", str(base)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    answers: list[tuple[int, dict[str, object]]] = []
    try:
        assert proc.stdout is not None
        proc.stdout.readline()
        proc.stdout.readline()
        # The NLP agent now takes a minute: the workflow is still running at SIGTERM.
        _post(f"http://127.0.0.1:{base}/control", {"delay_ms": 60_000})
        client = threading.Thread(
            target=lambda: answers.append(
                _post(f"http://127.0.0.1:{api_port}/api/query", {"query": "revenue by region"})
            )
        )
        client.start()
        for _ in range(500):  # until the agent holds the request (another process: polled)
            with urllib.request.urlopen(f"http://127.0.0.1:{base}/stats", timeout=5) as r:
                if json.loads(r.read())["in_flight"] >= 1:
                    break
            time.sleep(0.01)
        else:
            raise AssertionError("the workflow never reached the agent")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        client.join(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    ((status, body),) = answers
    assert status == 200
    assert body["status"] == "cancelled"
    error = body["error"]
    assert isinstance(error, dict) and error["code"] == "replica_shutdown"


def test_agent_a2a_serves_the_card_and_answers_json_rpc() -> None:
    """`orchestrator agent viz --a2a 1.0` publishes its card and answers SendMessage."""
    (port,) = _free_ports(1)
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "ORCH_CONFIG")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "agent", "viz", "--a2a", "1.0", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        assert "A2A v1.0" in proc.stdout.readline()
        base = f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(f"{base}/.well-known/agent-card.json", timeout=10) as r:
            card = json.loads(r.read())
        (interface,) = card["supportedInterfaces"]
        assert interface["protocolVersion"] == "1.0" and interface["url"] == f"{base}/"
        message = {
            "messageId": "m1",
            "role": "ROLE_USER",
            "parts": [{"data": {"intent": "bad"}}],
        }
        request = urllib.request.Request(
            f"{base}/",
            data=json.dumps(
                {"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {"message": message}}
            ).encode(),
            headers={"Content-Type": "application/json", "A2A-Version": "1.0"},
        )
        with urllib.request.urlopen(request, timeout=10) as r:
            answer = json.loads(r.read())
        assert answer["result"]["task"]["status"]["state"] == "TASK_STATE_REJECTED"
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0


def _get_json(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=10) as r:
        loaded: dict[str, object] = json.loads(r.read())
    return loaded


def test_agent_takes_its_faults_on_the_command_line() -> None:
    """`orchestrator agent data --delay-ms --fail-rate --fail-status --seed` as the README says."""
    (port,) = _free_ports(1)
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "ORCH_CONFIG")}
    argv = ["agent", "data", "--port", str(port), "--delay-ms", "5", "--fail-rate", "1",
            "--fail-status", "500", "--seed", "7"]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        ready = proc.stdout.readline()
        assert f"data agent listening on http://127.0.0.1:{port}" in ready
        assert "--fail-rate 1.0" in ready and "--delay-ms 5.0" in ready
        base = f"http://127.0.0.1:{port}"
        control = _get_json(f"{base}/control")
        assert control == {"status": "ok", "delay_ms": 5.0, "fail_rate": 1.0, "fail_status": 500}
        request = urllib.request.Request(
            f"{base}/process",
            data=json.dumps({"workflow_id": "w", "step_id": "s", "input": {}}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with pytest.raises(urllib.error.HTTPError) as failed:
            urllib.request.urlopen(request, timeout=10)
        assert failed.value.code == 500  # the injected status, before any work
        assert json.loads(failed.value.read())["error"]["code"] == "injected_failure"
        assert _get_json(f"{base}/stats")["injected_failures"] == 1
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0


def test_agent_help_lists_the_fault_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["agent", "data", "--help"])
    out = capsys.readouterr().out
    for flag in ("--delay-ms", "--fail-rate", "--fail-status", "--seed", "--db", "--a2a"):
        assert flag in out


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["agent", "data", "--fail-rate", "1.5"], "fail_rate must be between 0 and 1"),
        (["agent", "nlp", "--delay-ms", "-3"], "delay_ms must be between 0"),
        (["agent", "viz", "--fail-status", "200"], "fail_status must be an HTTP error status"),
        (["agent", "viz", "--a2a", "1.0", "--fail-rate", "0.5"], "takes only --delay-ms"),
    ],
)
def test_agent_refuses_bad_fault_flags(
    argv: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A flag out of range (or one an A2A agent has no use for) is a usage error, exit 2."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert words in capsys.readouterr().err


def test_agent_a2a_takes_a_delay_on_the_command_line() -> None:
    """`orchestrator agent viz --a2a 1.0 --delay-ms 40`: the A2A agent's delay is set."""
    (port,) = _free_ports(1)
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "ORCH_CONFIG")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "agent", "viz", "--a2a", "1.0",
         "--port", str(port), "--delay-ms", "40"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert "A2A v1.0" in proc.stdout.readline()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/control",
            data=b"{}",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as r:
            faults = json.loads(r.read())
        assert faults["delay_ms"] == 40.0
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
