"""orchestrator.loop: uvloop when installed and asked for, asyncio's loop otherwise."""

from __future__ import annotations

import asyncio
import sys

import pytest

from orchestrator.loop import EventLoopUnavailable, loop_factory, uvloop_installed
from orchestrator.settings import ConfigError, Settings


def test_auto_runs_on_uvloop_when_it_is_installed() -> None:
    """The test extra installs uvloop: `auto` picks it, and its loop runs coroutines."""
    assert uvloop_installed()
    name, factory = loop_factory("auto")
    assert name == "uvloop" and factory is not None

    async def which() -> str:
        return type(asyncio.get_running_loop()).__module__

    with asyncio.Runner(loop_factory=factory) as runner:
        assert runner.run(which()).startswith("uvloop")


def test_asyncio_is_asyncio_even_with_uvloop_installed() -> None:
    assert loop_factory("asyncio") == ("asyncio", None)


def test_without_uvloop_auto_falls_back_and_uvloop_refuses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Not installed (import blocked): `auto` is asyncio; an explicit `uvloop` fails loudly."""
    monkeypatch.setitem(sys.modules, "uvloop", None)
    assert not uvloop_installed()
    assert loop_factory("auto") == ("asyncio", None)
    with pytest.raises(EventLoopUnavailable, match="not installed"):
        loop_factory("uvloop")


def test_settings_read_the_loop_choice_and_honest_defaults() -> None:
    assert Settings.from_env({}).event_loop == "auto"
    assert Settings.from_env({"ORCH_EVENT_LOOP": "asyncio"}).event_loop == "asyncio"
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"ORCH_EVENT_LOOP": "tokio"})
    assert caught.value.key == "ORCH_EVENT_LOOP"
    settings = Settings.from_env({})
    assert settings.max_parallel == 32
    assert {spec.concurrency for spec in settings.agents.values()} == {64}
