"""The service around every reference agent: contract errors, fault injection, stats, CLI."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from agents.reference import AGENT_KINDS, AgentKind, create_agent_app, start_agent
from agents.reference.__main__ import build_parser
from agents.reference.parser import parse_intent
from tests.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
VALID_INPUT: dict[str, dict[str, Any]] = {
    "nlp": {"query": "total revenue by region"},
    "data": {"intent": dict(parse_intent("total revenue by region"))},
    "viz": {
        "intent": dict(parse_intent("total revenue by region")),
        "rows": [{"region": "Europe", "sum_revenue": 1.0}],
    },
}


def _envelope(payload: dict[str, Any], step: str = "step") -> dict[str, Any]:
    return {"workflow_id": "wf-1", "step_id": step, "input": payload}


async def _poll(
    session: aiohttp.ClientSession, url: str, until: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """GET `url` until its JSON satisfies `until` (bounded: an event, not a timing)."""
    body: dict[str, Any] = {}
    for _ in range(1000):
        async with session.get(url) as response:
            body = await response.json()
        if until(body):
            return body
        await asyncio.sleep(0.005)
    raise AssertionError(f"{url} never satisfied the condition; last answer {body}")


@pytest.mark.parametrize("kind", AGENT_KINDS)
async def test_health_names_the_agent(aiohttp_client: Any, kind: str) -> None:
    client = await aiohttp_client(create_agent_app(kind))  # type: ignore[arg-type]
    response = await client.get("/health")
    assert response.status == 200
    assert await response.json() == {"status": "ok", "agent": kind}


@pytest.mark.parametrize("kind", AGENT_KINDS)
async def test_valid_input_succeeds(aiohttp_client: Any, kind: str) -> None:
    """Every agent answers its valid input with the success envelope."""
    client = await aiohttp_client(create_agent_app(kind))  # type: ignore[arg-type]
    response = await client.post("/process", json=_envelope(VALID_INPUT[kind]))
    assert response.status == 200
    body = await response.json()
    assert body["status"] == "success"
    assert isinstance(body["data"], dict)


BAD_ENVELOPES: list[tuple[bytes, str]] = [
    (b"{not json", "invalid_json"),
    (b"", "invalid_json"),
    (b"[1, 2]", "malformed_input"),
    (b'"text"', "malformed_input"),
    (b'{"workflow_id": "w", "step_id": "s"}', "malformed_input"),
    (b'{"workflow_id": "w", "step_id": "s", "input": [1]}', "malformed_input"),
    (b'{"step_id": "s", "input": {}}', "malformed_input"),
    (b'{"workflow_id": 7, "step_id": "s", "input": {}}', "malformed_input"),
    (b'{"workflow_id": "w", "input": {}}', "malformed_input"),
]


@pytest.mark.parametrize("kind", AGENT_KINDS)
@pytest.mark.parametrize(("body", "code"), BAD_ENVELOPES)
async def test_malformed_envelopes_are_400(
    aiohttp_client: Any, kind: str, body: bytes, code: str
) -> None:
    """A body that is not the contract's envelope is a 400 with the error shape, never a 500."""
    client = await aiohttp_client(create_agent_app(kind))  # type: ignore[arg-type]
    response = await client.post("/process", data=body)
    assert response.status == 400
    payload = await response.json()
    assert payload["status"] == "error"
    assert payload["error"]["code"] == code
    assert isinstance(payload["error"]["message"], str)


async def test_unknown_routes_and_methods_answer_json(aiohttp_client: Any) -> None:
    client = await aiohttp_client(create_agent_app("nlp"))
    missing = await client.get("/nowhere")
    assert missing.status == 404
    assert (await missing.json())["error"]["code"] == "not_found"
    wrong = await client.get("/process")
    assert wrong.status == 405
    assert (await wrong.json())["status"] == "error"
    assert "POST" in wrong.headers["Allow"]


async def test_oversized_body_is_413(aiohttp_client: Any) -> None:
    client = await aiohttp_client(create_agent_app("viz"))
    response = await client.post("/process", data=b"x" * (17 * 1024 * 1024))
    assert response.status == 413
    assert (await response.json())["status"] == "error"


@pytest.mark.parametrize("kind", AGENT_KINDS)
async def test_fail_rate_one_answers_503_every_time(aiohttp_client: Any, kind: str) -> None:
    """fail_rate 1.0 fails every /process call with 503, while /health stays 200."""
    client = await aiohttp_client(create_agent_app(kind, fail_rate=1.0))  # type: ignore[arg-type]
    for _ in range(5):
        response = await client.post("/process", json=_envelope(VALID_INPUT[kind]))
        assert response.status == 503
        body = await response.json()
        assert body["status"] == "error"
        assert body["error"]["code"] == "injected_failure"
    assert (await client.get("/health")).status == 200
    stats = await (await client.get("/stats")).json()
    assert stats["requests"] == 5
    assert stats["injected_failures"] == 5


async def test_fail_status_is_configurable(aiohttp_client: Any) -> None:
    client = await aiohttp_client(create_agent_app("nlp", fail_rate=1.0, fail_status=429))
    response = await client.post("/process", json=_envelope(VALID_INPUT["nlp"]))
    assert response.status == 429


async def _statuses(client: Any, count: int) -> list[int]:
    statuses = []
    for _ in range(count):
        response = await client.post("/process", json=_envelope(VALID_INPUT["nlp"]))
        statuses.append(response.status)
    return statuses


async def test_seeded_failures_repeat(aiohttp_client: Any) -> None:
    """The same seed fails the same requests; a partial rate mixes failures and successes."""
    first = await aiohttp_client(create_agent_app("nlp", fail_rate=0.5, seed=7))
    second = await aiohttp_client(create_agent_app("nlp", fail_rate=0.5, seed=7))
    statuses = await _statuses(first, 30)
    assert statuses == await _statuses(second, 30)
    assert set(statuses) == {200, 503}


async def test_control_changes_behaviour_live(aiohttp_client: Any) -> None:
    """POST /control turns failures on and off without a restart."""
    client = await aiohttp_client(create_agent_app("nlp"))
    assert await _statuses(client, 2) == [200, 200]
    response = await client.post("/control", json={"fail_rate": 1.0, "fail_status": 502})
    assert response.status == 200
    assert await response.json() == {
        "status": "ok",
        "delay_ms": 0.0,
        "fail_rate": 1.0,
        "fail_status": 502,
    }
    assert await _statuses(client, 2) == [502, 502]
    assert (await (await client.get("/control")).json())["fail_rate"] == 1.0
    await client.post("/control", json={"fail_rate": 0})
    assert await _statuses(client, 2) == [200, 200]


async def test_control_reseeds_the_failure_dice(aiohttp_client: Any) -> None:
    client = await aiohttp_client(create_agent_app("nlp", fail_rate=0.5))
    await client.post("/control", json={"seed": 11})
    first = await _statuses(client, 20)
    await client.post("/control", json={"seed": 11})
    assert await _statuses(client, 20) == first


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"fail_rate": 1.5}, 422),
        ({"fail_rate": -0.1}, 422),
        ({"delay_ms": -1}, 422),
        ({"fail_status": 200}, 422),
        ({"fail_rate": "high"}, 400),
        ({"fail_status": 503.5}, 400),
        ({"delay_ms": True}, 400),
        ({"explode": True}, 400),
        ([1], 400),
    ],
)
async def test_bad_control_changes_nothing(aiohttp_client: Any, body: Any, status: int) -> None:
    """An invalid control body is refused as a whole and the settings stay as they were."""
    client = await aiohttp_client(create_agent_app("nlp"))
    before = await (await client.get("/control")).json()
    # A valid change rides along with the bad one: it must not be applied either.
    sent = {"fail_rate": 1.0, **body} if isinstance(body, dict) else body
    response = await client.post("/control", json=sent)
    assert response.status == status
    assert (await response.json())["status"] == "error"
    assert await (await client.get("/control")).json() == before


def test_factory_refuses_bad_options() -> None:
    with pytest.raises(ValueError, match="unknown agent kind"):
        create_agent_app("speech")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="fail_rate"):
        create_agent_app("nlp", fail_rate=2.0)
    with pytest.raises(ValueError, match="fail_status"):
        create_agent_app("nlp", fail_status=204)
    with pytest.raises(ValueError, match="delay_ms"):
        create_agent_app("nlp", delay_ms=-5)


async def test_repeated_idempotency_keys_are_counted(aiohttp_client: Any) -> None:
    """A retry carrying the same Idempotency-Key shows up in /stats as a duplicate."""
    client = await aiohttp_client(create_agent_app("nlp"))
    for key in ("a", "b", "a"):
        await client.post(
            "/process", json=_envelope(VALID_INPUT["nlp"]), headers={"Idempotency-Key": key}
        )
    stats = await (await client.get("/stats")).json()
    assert stats["requests"] == 3
    assert stats["duplicates"] == 1


async def test_rejected_requests_are_counted(aiohttp_client: Any) -> None:
    client = await aiohttp_client(create_agent_app("nlp"))
    await client.post("/process", data=b"{")
    stats = await (await client.get("/stats")).json()
    assert stats == {
        "requests": 1,
        "in_flight": 0,
        "cancelled": 0,
        "injected_failures": 0,
        "rejected": 1,
        "duplicates": 0,
        "traceparents": [],
    }


@pytest.fixture
async def slow_nlp() -> AsyncIterator[str]:
    """A real NLP agent on 127.0.0.1 that takes a minute to answer; yields its base URL."""
    runner, port = await start_agent("nlp", delay_ms=60_000)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_client_disconnect_mid_delay_is_counted_as_cancelled(slow_nlp: str) -> None:
    """A client that gives up mid-request is seen: the handler is cancelled and counted."""
    async with aiohttp.ClientSession() as session:
        request = asyncio.create_task(
            session.post(f"{slow_nlp}/process", json=_envelope(VALID_INPUT["nlp"]))
        )
        await _poll(session, f"{slow_nlp}/stats", lambda s: s["in_flight"] == 1)
        assert not request.done()
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request
        stats = await _poll(session, f"{slow_nlp}/stats", lambda s: s["cancelled"] == 1)
    assert stats["in_flight"] == 0
    assert stats["requests"] == 1


async def test_control_delay_holds_requests_until_lifted(slow_nlp: str) -> None:
    """With a delay set, a request stays in flight; a new request after delay 0 answers."""
    async with aiohttp.ClientSession() as session:
        held = asyncio.create_task(
            session.post(f"{slow_nlp}/process", json=_envelope(VALID_INPUT["nlp"]))
        )
        await _poll(session, f"{slow_nlp}/stats", lambda s: s["in_flight"] == 1)
        async with session.post(f"{slow_nlp}/control", json={"delay_ms": 0}) as response:
            assert response.status == 200
        payload = _envelope(VALID_INPUT["nlp"])
        async with session.post(f"{slow_nlp}/process", json=payload) as response:
            assert response.status == 200
        assert not held.done()
        held.cancel()
        with pytest.raises(asyncio.CancelledError):
            await held


async def test_start_agent_binds_the_requested_port() -> None:
    port = free_port()  # free, and no other suite's (tests/ports.py)
    runner, bound = await start_agent("viz", port=port)
    try:
        assert bound == port
    finally:
        await runner.cleanup()


async def test_the_chain_runs_over_real_http() -> None:
    """NLP -> Data -> Viz over three real servers: a question becomes a chart of real rows."""
    servers = {kind: await start_agent(kind) for kind in AGENT_KINDS}
    try:
        url = {kind: f"http://127.0.0.1:{port}/process" for kind, (_, port) in servers.items()}
        async with aiohttp.ClientSession() as session:

            async def call(kind: AgentKind, payload: dict[str, Any]) -> dict[str, Any]:
                async with session.post(url[kind], json=_envelope(payload, kind)) as response:
                    assert response.status == 200, await response.text()
                    body: dict[str, Any] = await response.json()
                    data: dict[str, Any] = body["data"]
                    return data

            intent = (await call("nlp", {"query": "average profit by category in 2023"}))["intent"]
            data = await call("data", {"intent": intent})
            spec = (await call("viz", {"intent": intent, **data}))["spec"]
        assert data["row_count"] == 4
        assert spec["data"]["values"] == data["rows"]
        assert spec["mark"]["type"] == "bar"
    finally:
        for runner, _ in servers.values():
            await runner.cleanup()


def test_cli_parses_every_option() -> None:
    args = build_parser().parse_args(
        ["data", "--host", "0.0.0.0", "--port", "9100", "--delay-ms", "250",
         "--fail-rate", "0.25", "--fail-status", "500", "--seed", "3", "--db", "x.sqlite"]
    )  # fmt: skip
    assert (args.kind, args.host, args.port) == ("data", "0.0.0.0", 9100)
    assert (args.delay_ms, args.fail_rate, args.fail_status, args.seed) == (250.0, 0.25, 500, 3)
    assert args.db_path == Path("x.sqlite")
    defaults = build_parser().parse_args(["nlp"])
    assert (defaults.port, defaults.delay_ms, defaults.fail_rate) == (None, 0.0, 0.0)
    assert defaults.fail_status == 503


@pytest.mark.parametrize(
    "argv",
    [["speech"], ["nlp", "--fail-rate", "2"], ["nlp", "--fail-status", "200"],
     ["nlp", "--delay-ms", "-1"], []],
)  # fmt: skip
def test_cli_refuses_bad_arguments(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(argv)
    assert exit_info.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_cli_help_describes_the_agents(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    text = capsys.readouterr().out
    for words in ("nlp", "data", "viz", "--delay-ms", "--fail-rate", "--fail-status", "/control"):
        assert words in text


async def test_python_dash_m_runs_an_agent() -> None:
    """`python -m agents.reference nlp --port P` serves the contract until interrupted."""
    port = free_port()  # free, and no other suite's (tests/ports.py)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agents.reference", "nlp", "--port", str(port), "--fail-rate", "1",
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            health: dict[str, Any] = {}
            for _ in range(1000):  # bounded wait for the child to bind its port
                if process.returncode is not None:
                    assert process.stderr is not None
                    pytest.fail((await process.stderr.read()).decode())
                try:
                    async with session.get(f"{base}/health") as response:
                        health = await response.json()
                    break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.01)
            assert health == {"status": "ok", "agent": "nlp"}
            payload = _envelope(VALID_INPUT["nlp"])
            async with session.post(f"{base}/process", json=payload) as response:
                assert response.status == 503
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(process.wait(), timeout=10)
            except TimeoutError:
                process.kill()
                await process.wait()
    assert process.returncode == 0
