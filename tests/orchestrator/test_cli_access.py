"""The console script's access side: the safe default at start-up and `orchestrator keys`."""

from __future__ import annotations

import tomllib
import uuid
from pathlib import Path

import pytest

from orchestrator.access.keys import hash_key
from orchestrator.cli import main
from orchestrator.settings import Settings


@pytest.mark.parametrize("command", ["serve", "up"])
def test_no_keys_on_a_public_address_refuses_to_start(
    command: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ORCH_CONFIG", raising=False)
    monkeypatch.delenv("ORCH_INSECURE", raising=False)
    assert main([command, "--host", "0.0.0.0", "--port", "1"]) == 2
    err = capsys.readouterr().err
    assert "refusing to listen on 0.0.0.0 without API keys" in err
    assert "--insecure" in err and "ORCH_INSECURE=1" in err


def test_keys_create_prints_a_table_the_config_accepts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", "create", "--id", "front", "--tenant", "acme", "--roles", "user,ops"]) == 0
    out = capsys.readouterr().out
    key = out.split("give it to the client): ")[1].split()[0]
    table = out[out.index("[access.keys.front]") :]
    assert key not in table
    config = tmp_path / "orch.toml"
    config.write_text(table, encoding="utf-8")
    tomllib.loads(table)
    (record,) = Settings.from_env({"ORCH_CONFIG": str(config)}).access.keys
    assert record.key_hash == hash_key(key)
    assert record.tenant == "acme"
    assert {r.value for r in record.roles} == {"user", "ops"}


def test_keys_create_refuses_unknown_roles(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "create", "--id", "x", "--tenant", "t", "--roles", "root"]) == 2
    assert "unknown role 'root'" in capsys.readouterr().out


@pytest.mark.redis
def test_keys_in_redis_create_list_revoke(
    redis_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = f"test-cli-{uuid.uuid4().hex[:8]}:"
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("ORCH_KEY_PREFIX", prefix)
    args = ["keys", "create", "--redis", "--id", "front", "--tenant", "acme"]
    assert main(args) == 0
    assert "stored in Redis as 'front'" in capsys.readouterr().out
    assert main(["keys", "list"]) == 0
    assert "front\ttenant=acme\troles=user" in capsys.readouterr().out
    assert main(["keys", "revoke", "front"]) == 0
    assert main(["keys", "revoke", "front"]) == 1
    capsys.readouterr()
    assert main(["keys", "list"]) == 0
    assert capsys.readouterr().out == ""
