"""Settings.from_env: defaults, environment overrides, and config files that stop start-up."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.settings import ConfigError, Settings


def test_defaults_follow_the_design() -> None:
    settings = Settings.from_env({})
    assert settings.redis_url is None
    assert settings.state_ttl_s == 3600
    assert set(settings.agents) == {"nlp", "data", "viz"}
    data = settings.agents["data"]
    assert (data.breaker.fail_max, data.breaker.reset_timeout_s) == (3, 120.0)
    assert (data.retry.max_attempts, data.retry.base_delay_s, data.retry.max_delay_s) == (
        2,
        2.0,
        60.0,
    )
    nlp = settings.agents["nlp"]
    assert (nlp.breaker.fail_max, nlp.retry.max_attempts, nlp.retry.max_delay_s) == (5, 3, 30.0)
    assert settings.agents["viz"].url == "http://127.0.0.1:8003"


def test_environment_overrides() -> None:
    settings = Settings.from_env(
        {
            "REDIS_URL": "redis://r:6379/0",
            "ORCH_STATE_TTL_S": "60",
            "NLP_AGENT_URL": "http://nlp.internal:9001",
            "ORCH_PORT": "9000",
            "ORCH_HTTP_TRANSPORT": "httpx",
        }
    )
    assert settings.redis_url == "redis://r:6379/0"
    assert settings.state_ttl_s == 60
    assert settings.agents["nlp"].url == "http://nlp.internal:9001"
    assert settings.port == 9000
    assert settings.http_transport == "httpx"


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"ORCH_STATE_TTL_S": "soon"}, "ORCH_STATE_TTL_S"),
        ({"ORCH_STATE_TTL_S": "0"}, "ORCH_STATE_TTL_S"),
        ({"DATA_AGENT_URL": "data:8002"}, "DATA_AGENT_URL"),
        ({"ORCH_HTTP_TRANSPORT": "curl"}, "ORCH_HTTP_TRANSPORT"),
    ],
)
def test_bad_environment_names_the_variable(env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    assert info.value.key == key
    assert key in str(info.value)


def test_config_file_tunes_agents_and_registers_new_ones(tmp_path: Path) -> None:
    path = tmp_path / "orch.toml"
    path.write_text(
        """
[agents.data]
concurrency = 4
max_response_bytes = 65536
[agents.data.breaker]
fail_max = 7
half_open_max_calls = 2
[agents.data.retry]
max_attempts = 4
base_delay_s = 0.5
[agents.data.timeouts]
read = 12.5

[agents.summariser]
url = "http://127.0.0.1:9100"

[agents.charts]
url = "http://127.0.0.1:9200"
protocol = "a2a"
""",
        encoding="utf-8",
    )
    settings = Settings.from_env({"ORCH_CONFIG": str(path), "DATA_AGENT_URL": "http://d:1"})
    data = settings.agents["data"]
    assert (data.concurrency, data.max_response_bytes) == (4, 65536)
    assert settings.agents["nlp"].max_response_bytes == 4 * 1024 * 1024
    assert (data.breaker.fail_max, data.breaker.half_open_max_calls) == (7, 2)
    assert data.breaker.reset_timeout_s == 120.0  # untouched keys keep their defaults
    assert (data.retry.max_attempts, data.retry.base_delay_s) == (4, 0.5)
    assert data.timeouts.read == 12.5
    assert data.url == "http://d:1"  # the environment wins over the file
    assert settings.agents["summariser"].url == "http://127.0.0.1:9100"
    assert settings.agents["summariser"].protocol == "native"
    assert settings.agents["charts"].protocol == "a2a"


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        ("[agents.data.breaker]\nfail_max = 'three'\n", "agents.data.breaker.fail_max", "int"),
        ("[agents.data.breaker]\nfail_max = 0\n", "agents.data.breaker.fail_max", "> 0"),
        ("[agents.data.breaker]\nfail_maks = 3\n", "agents.data.breaker.fail_maks", "unknown"),
        ("[agents.data.retry]\nmax_attempts = 2.5\n", "agents.data.retry.max_attempts", "int"),
        ("[agents.data]\nurl = 'ftp://x'\n", "agents.data.url", "http"),
        ("[agents.data]\nprotocol = 'grpc'\n", "agents.data.protocol", "native, a2a"),
        ("[agents.new]\nconcurrency = 2\n", "agents.new.url", "url"),
        ("[agents.data]\nspeed = 1\n", "agents.data.speed", "unknown"),
        ("[agents.data]\nmax_response_bytes = 0\n", "agents.data.max_response_bytes", "> 0"),
        ("[agent.data]\nurl = 'http://x'\n", "agent", "unknown"),
        ("[agents.data\n", "(file)", "TOML"),
        (
            "[agents.data.breaker]\npolicy = 'often'\n",
            "agents.data.breaker.policy",
            "one of: consecutive, rate",
        ),
        ("[agents.data.breaker]\nwindow_type = 1\n", "agents.data.breaker.window_type", "count"),
        (
            "[agents.data.breaker]\nfailure_rate_threshold = 150\n",
            "agents.data.breaker",
            "failure_rate_threshold",
        ),
        (
            "[agents.data.breaker]\nbackoff_jitter = -0.1\n",
            "agents.data.breaker.backoff_jitter",
            ">",
        ),
    ],
)
def test_bad_config_file_names_file_key_and_problem(
    tmp_path: Path, text: str, key: str, words: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"ORCH_CONFIG": str(path)})
    message = str(info.value)
    assert info.value.key == key
    assert str(path) in message
    assert words in message


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        Settings.from_env({"ORCH_CONFIG": str(tmp_path / "nope.toml")})


def test_state_write_delay_is_a_few_ms_and_may_be_zero() -> None:
    """ORCH_STATE_WRITE_DELAY_S: 5 ms by default; 0 writes every transition at once."""
    assert Settings.from_env({}).state_write_delay_s == 0.005
    assert Settings.from_env({"ORCH_STATE_WRITE_DELAY_S": "0"}).state_write_delay_s == 0.0
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"ORCH_STATE_WRITE_DELAY_S": "-1"})
    assert caught.value.key == "ORCH_STATE_WRITE_DELAY_S"


def test_breaker_defaults_are_rate_based_and_keep_the_seed_waits() -> None:
    """The seed's per-agent open waits stay; fail_max stays for the consecutive policy."""
    agents = Settings.from_env({}).agents
    for name, fail_max, wait in (("nlp", 5, 60.0), ("data", 3, 120.0), ("viz", 5, 60.0)):
        breaker = agents[name].breaker
        assert breaker.policy == "rate"
        window = (breaker.window_type, breaker.window_size, breaker.minimum_calls)
        assert window == ("count", 100, 20)
        assert breaker.failure_rate_threshold == 60.0
        assert (breaker.fail_max, breaker.reset_timeout_s) == (fail_max, wait)
    assert Settings.from_env({}).breaker_sync_s == 0.25


def test_breaker_policy_settings_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "agents.toml"
    path.write_text(
        "[agents.data.breaker]\n"
        'policy = "consecutive"\nfail_max = 4\n'
        "[agents.nlp.breaker]\n"
        'window_type = "time"\nwindow_size = 30\nfailure_rate_threshold = 50\n'
        'minimum_calls = 10\nslow_call_duration_s = 2.5\nbackoff_jitter = 0\nshare = "follow"\n',
        encoding="utf-8",
    )
    agents = Settings.from_env({"ORCH_CONFIG": str(path), "ORCH_BREAKER_SYNC_S": "0.1"}).agents
    assert (agents["data"].breaker.policy, agents["data"].breaker.fail_max) == ("consecutive", 4)
    nlp = agents["nlp"].breaker
    assert (nlp.window_type, nlp.window_size, nlp.minimum_calls) == ("time", 30, 10)
    assert (nlp.failure_rate_threshold, nlp.slow_call_duration_s) == (50.0, 2.5)
    assert (nlp.backoff_jitter, nlp.share) == (0.0, "follow")


def test_hostile_input_limits_come_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "ORCH_EVAL_NODE_OPS": "5000",
            "ORCH_EVAL_WORKFLOW_BYTES": "2048",
            "ORCH_EVAL_TIMEOUT_S": "2.5",
            "ORCH_COMPILE_TIMEOUT_S": "3",
            "ORCH_MAX_JSON_DEPTH": "20",
            "ORCH_BODY_TIMEOUT_S": "4",
            "ORCH_KEEPALIVE_TIMEOUT_S": "6",
            "ORCH_MAX_METRIC_SERIES": "7",
            "ORCH_MEMORY_MAX_WORKFLOWS": "8",
            "ORCH_MEMORY_MAX_BYTES": "9999",
        }
    )
    assert (settings.limits.node_ops, settings.limits.workflow_bytes) == (5000, 2048)
    assert settings.limits.offload_timeout_s == 2.5
    assert (settings.compile_timeout_s, settings.max_json_depth) == (3.0, 20)
    assert (settings.body_timeout_s, settings.keepalive_timeout_s) == (4.0, 6.0)
    assert settings.max_metric_series == 7
    assert (settings.memory_max_workflows, settings.memory_max_bytes) == (8, 9999)


def test_the_redis_password_is_redacted_wherever_the_url_is_shown() -> None:
    from orchestrator.settings import redact_url

    assert redact_url("redis://:pw@h:6379/0") == "redis://:***@h:6379/0"
    assert redact_url("redis://user:pw@h/1") == "redis://user:***@h/1"
    assert redact_url("rediss://token@h") == "rediss://***@h"
    assert redact_url("redis://h:6379/0") == "redis://h:6379/0"
    settings = Settings.from_env({"REDIS_URL": "redis://:pw@h:6379/0"})
    assert "pw" not in repr(settings)
    assert settings.redacted_redis_url == "redis://:***@h:6379/0"


@pytest.mark.parametrize(
    ("env", "key", "words"),
    [
        ({"ORCH_STATE_TTL_S": "soon"}, "ORCH_STATE_TTL_S", "expected an integer > 0, got 'soon'"),
        ({"ORCH_LEASE_S": "0"}, "ORCH_LEASE_S", "expected a number > 0, got '0'"),
        ({"ORCH_LEASE_S": "nan"}, "ORCH_LEASE_S", "got 'nan'"),
        ({"ORCH_SYNC_WAIT_S": "inf"}, "ORCH_SYNC_WAIT_S", "(finite)"),
        ({"ORCH_EVAL_NODE_OPS": "999"}, "ORCH_EVAL_NODE_OPS", "an integer >= 1000, got '999'"),
        ({"ORCH_PORT": "70000"}, "ORCH_PORT", "<= 65535"),
        ({"ORCH_LOG_LEVEL": "loud"}, "ORCH_LOG_LEVEL", "one of: debug, info, warning"),
        ({"ORCH_REDIS_CLUSTER": "maybe"}, "ORCH_REDIS_CLUSTER", "true or false, got 'maybe'"),
        ({"ORCH_HISTORY_SHARDS": "0"}, "ORCH_HISTORY_SHARDS", "an integer > 0"),
        ({"VIZ_AGENT_URL": "http://"}, "VIZ_AGENT_URL", "an http(s) URL, got 'http://'"),
    ],
)
def test_a_bad_variable_is_named_with_its_value_and_what_was_expected(
    env: dict[str, str], key: str, words: str
) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    assert info.value.key == key
    assert str(info.value).startswith(f"environment: {key}: ")
    assert words in str(info.value)


def test_environment_values_are_read_as_a_person_writes_them() -> None:
    """Blank is unset, spaces are trimmed, levels and formats any case, flags yes/no too."""
    settings = Settings.from_env(
        {
            "ORCH_STATE_TTL_S": " 60 ",
            "ORCH_LOG_LEVEL": "WARNING",
            "ORCH_LOG_FORMAT": "Console",
            "ORCH_REDIS_CLUSTER": "yes",
            "ORCH_PORT": "",
            "ORCH_METRICS_DEFINITIONS": " a, ,b ",
            "ORCH_HISTORY_SHARDS": "4",
        }
    )
    assert (settings.state_ttl_s, settings.log_level, settings.log_format) == (
        60,
        "warning",
        "console",
    )
    assert settings.redis_cluster and settings.port == 8000
    assert settings.metrics_definitions == ("a", "b")
    assert settings.history_shards == 4
    assert Settings.from_env({}).history_shards is None
    assert not Settings.from_env({"ORCH_INSECURE": "no"}).access.insecure


def test_the_file_checks_every_table_against_the_model(tmp_path: Path) -> None:
    """retry_budget and timeouts overlay like breaker and retry; a wrong type names the key."""
    path = tmp_path / "orch.toml"
    path.write_text(
        "[agents.viz.retry_budget]\nratio = 0.5\nfloor = 2\n[agents.viz.timeouts]\nconnect = 1\n",
        encoding="utf-8",
    )
    viz = Settings.from_env({"ORCH_CONFIG": str(path)}).agents["viz"]
    assert (viz.retry_budget.ratio, viz.retry_budget.floor, viz.retry_budget.window_s) == (
        0.5,
        2,
        10.0,
    )
    assert (viz.timeouts.connect, viz.timeouts.read) == (1.0, 6.0)
    assert viz.retry.max_attempts == 3  # viz's own default, untouched
    path.write_text("[agents.viz.timeouts]\nread = '6'\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"ORCH_CONFIG": str(path)})
    assert info.value.key == "agents.viz.timeouts.read"
    assert "expected a number > 0, got '6'" in str(info.value)
    path.write_text("[agents.viz]\nname = 'other'\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"ORCH_CONFIG": str(path)})
    assert info.value.key == "agents.viz.name"


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        ("agents = 5\n", "agents", "must be a table of agent tables"),
        ("[agents]\ndata = 5\n", "agents.data", "must be a table"),
        ("[agents.data]\nbreaker = 5\n", "agents.data.breaker", "must be a table"),
        ("[agents.new]\nurl = 7\n", "agents.new.url", "expected an http(s) URL, got 7"),
        ("[agents.data]\nconcurrency = true\n", "agents.data.concurrency", "got True"),
        ("[access]\nredis_keys = 'yes'\n", "access.redis_keys", "true or false"),
    ],
)
def test_a_table_where_a_value_belongs_and_the_reverse(
    tmp_path: Path, text: str, key: str, words: str
) -> None:
    path = tmp_path / "orch.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"ORCH_CONFIG": str(path), "REDIS_URL": "redis://h:1/0"})
    assert (info.value.key, info.value.source) == (key, str(path))
    assert words in str(info.value)


def test_an_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"ORCH_CONFIG": str(tmp_path)})  # a directory
    assert info.value.key == "ORCH_CONFIG" and "cannot read" in str(info.value)
