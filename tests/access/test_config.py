"""The [access] and [tenants] tables, and the safe default on start-up."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.access.config import AccessConfigError, parse_access
from orchestrator.access.exposure import UnsafeExposure, access_mode, is_loopback
from orchestrator.access.keys import hash_key
from orchestrator.access.principal import Limits, Role
from orchestrator.settings import ConfigError, Settings

HASH = hash_key("orch_example")


def test_a_full_file(tmp_path: Path) -> None:
    config = tmp_path / "orch.toml"
    config.write_text(
        f"""
[access]
cors_origins = ["https://app.example.com"]
[access.limits]
requests_per_s = 5
burst = 10
max_in_flight = 3
max_async_workflows = 50
[access.keys.frontend]
hash = "{HASH}"
tenant = "acme"
roles = ["user"]
requests_per_s = 50
[access.keys.oncall]
hash = "{hash_key("orch_other")}"
tenant = "ops"
roles = ["ops", "user"]
[tenants.acme]
agents = ["nlp", "data", "viz"]
max_async_workflows = 7
""",
        encoding="utf-8",
    )
    settings = Settings.from_env({"ORCH_CONFIG": str(config), "ORCH_CORS_ORIGINS": "http://x:3000"})
    access = settings.access
    assert access.enabled
    front, oncall = access.keys
    assert (front.key_id, front.tenant, front.roles) == ("frontend", "acme", frozenset({Role.USER}))
    assert front.limits == Limits(requests_per_s=50.0, burst=10, max_in_flight=3)
    assert oncall.limits == Limits(requests_per_s=5.0, burst=10, max_in_flight=3)
    assert access.cors_origins == ("https://app.example.com", "http://x:3000")
    assert access.max_async_for("acme") == 7
    assert access.max_async_for("other") == 50
    assert access.tenant("acme").agents == frozenset({"nlp", "data", "viz"})
    assert access.tenant("other").agents is None


def test_no_file_means_no_keys() -> None:
    access = Settings.from_env({}).access
    assert not access.enabled and not access.keys and not access.cors_origins


@pytest.mark.parametrize(
    ("access", "tenants", "key"),
    [
        (
            {"keys": {"k": {"key": "orch_plain", "tenant": "a", "roles": ["user"]}}},
            None,
            "access.keys.k.key",
        ),
        (
            {"keys": {"k": {"hash": "orch_plain", "tenant": "a", "roles": ["user"]}}},
            None,
            "access.keys.k.hash",
        ),
        (
            {"keys": {"k": {"hash": HASH, "tenant": "a", "roles": ["root"]}}},
            None,
            "access.keys.k.roles",
        ),
        ({"keys": {"k": {"hash": HASH, "tenant": "a", "roles": []}}}, None, "access.keys.k.roles"),
        ({"keys": {"k": {"hash": HASH, "roles": ["user"]}}}, None, "access.keys.k.tenant"),
        (
            {
                "keys": {
                    "a": {"hash": HASH, "tenant": "a", "roles": ["user"]},
                    "b": {"hash": HASH, "tenant": "b", "roles": ["user"]},
                }
            },
            None,
            "access.keys",
        ),
        ({"limits": {"requests_per_s": -1}}, None, "access.limits.requests_per_s"),
        ({"limits": {"requests_per_s": 5, "burst": 0}}, None, "access.limits.burst"),
        ({"cors_origins": ["*"]}, None, "access.cors_origins"),
        ({"cors_origins": ["https://a.example.com/"]}, None, "access.cors_origins"),
        ({"surprise": 1}, None, "access.surprise"),
        (None, {"acme": {"agents": "nlp"}}, "tenants.acme.agents"),
        (None, {"acme": {"max_async_workflows": -3}}, "tenants.acme.max_async_workflows"),
    ],
)
def test_bad_tables_name_the_key(access: object, tenants: object, key: str) -> None:
    with pytest.raises(AccessConfigError) as info:
        parse_access(access, tenants)
    assert info.value.key == key


def test_a_tenant_naming_an_unknown_agent_stops_start_up(tmp_path: Path) -> None:
    config = tmp_path / "orch.toml"
    config.write_text('[tenants.acme]\nagents = ["nlp", "summariser"]\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="summariser"):
        Settings.from_env({"ORCH_CONFIG": str(config)})


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.5", "::1", "[::1]", "localhost"])
def test_loopback_addresses(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.5", "example.com", ""])
def test_other_addresses(host: str) -> None:
    assert not is_loopback(host)


def test_open_only_on_loopback_unless_insecure() -> None:
    settings = Settings.from_env({})
    assert "OPEN" in access_mode(settings.access, "127.0.0.1")
    assert "loopback only" in access_mode(settings.access, "127.0.0.1")
    with pytest.raises(UnsafeExposure, match="--insecure"):
        access_mode(settings.access, "0.0.0.0")
    insecure = Settings.from_env({"ORCH_INSECURE": "1"}).access
    assert "anyone who can reach" in access_mode(insecure, "0.0.0.0")


def test_with_keys_any_address_is_fine(tmp_path: Path) -> None:
    config = tmp_path / "orch.toml"
    config.write_text(
        f'[access.keys.k]\nhash = "{HASH}"\ntenant = "a"\nroles = ["user"]\n', encoding="utf-8"
    )
    access = Settings.from_env({"ORCH_CONFIG": str(config)}).access
    assert "API keys required" in access_mode(access, "0.0.0.0")


def test_bad_insecure_flag_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="ORCH_INSECURE"):
        Settings.from_env({"ORCH_INSECURE": "maybe"})


def test_keys_in_redis_need_redis(tmp_path: Path) -> None:
    config = tmp_path / "orch.toml"
    config.write_text("[access]\nredis_keys = true\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="REDIS_URL"):
        Settings.from_env({"ORCH_CONFIG": str(config)})
    access = Settings.from_env({"ORCH_CONFIG": str(config), "REDIS_URL": "redis://h:1/0"}).access
    assert access.enabled and access.redis_keys
