"""Dockerfile and docker-compose.yml stay in step with the code and the README.

No Docker engine runs here, so these check what can be checked without one: the
services, ports, commands and environment that compose wires together.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import yaml

from agents.registry import DEFAULT_PORTS
from orchestrator.settings import VARIABLES, Settings

ROOT = Path(__file__).resolve().parents[1]


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def test_compose_runs_redis_three_agents_and_the_orchestrator() -> None:
    every = _compose()["services"]
    # Monitoring is opt-in (`--profile monitoring`); the default set is the service itself.
    services = {name: svc for name, svc in every.items() if not svc.get("profiles")}
    assert set(services) == {"redis", "nlp", "data", "viz", "orchestrator"}
    assert "noeviction" in services["redis"]["command"]
    redis_command = services["redis"]["command"]
    assert redis_command[redis_command.index("--appendonly") + 1] == "yes"  # survives restarts
    for name in ("nlp", "data", "viz"):
        command = services[name]["command"]
        assert command[:3] == ["orchestrator", "agent", name]
        assert command[command.index("--port") + 1] == str(DEFAULT_PORTS[name])
        assert command[command.index("--host") + 1] == "0.0.0.0"
    orchestrator = services["orchestrator"]
    assert orchestrator["command"][:2] == ["orchestrator", "serve"]
    assert "8000:8000" in orchestrator["ports"]
    assert set(orchestrator["depends_on"]) == {"redis", "nlp", "data", "viz"}


def test_compose_environment_is_what_settings_read() -> None:
    env = {k: str(v) for k, v in _compose()["services"]["orchestrator"]["environment"].items()}
    settings = Settings.from_env(env)
    assert settings.redis_url == "redis://redis:6379/0"
    for name in ("nlp", "data", "viz"):
        assert settings.agents[name].url == f"http://{name}:{DEFAULT_PORTS[name]}"
    read = {var.name for var in VARIABLES}
    for key in env:
        assert key in read, f"compose sets {key}, which Settings.from_env never reads"


def test_dockerfile_installs_every_package_and_serves() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = [
        p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    ]
    for package in packages:
        assert re.search(rf"^COPY {package} \./{package}$", dockerfile, re.M), package
    assert 'CMD ["orchestrator", "serve"]' in dockerfile
    assert "EXPOSE 8000" in dockerfile


def test_readme_keeps_exactly_the_two_set_up_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "./scripts/run.sh" in readme
    assert "./scripts/test.sh" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert "scripts/test.sh" in ci


def test_compose_monitoring_profile_wires_prometheus_and_grafana() -> None:
    """Prometheus scrapes the orchestrator's /metrics; Grafana gets the datasource and dashboard."""
    services = _compose()["services"]
    assert services["prometheus"]["profiles"] == ["monitoring"]
    assert services["grafana"]["profiles"] == ["monitoring"]
    mounts = services["prometheus"]["volumes"] + services["grafana"]["volumes"]
    for mount in mounts:
        source = mount.split(":")[0]
        assert (ROOT / source).exists(), mount
    scrape = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    (job,) = scrape["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == ["orchestrator:8000"]
    datasource = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text()
    )
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
