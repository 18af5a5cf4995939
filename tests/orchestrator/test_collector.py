"""The garbage collector's thresholds: ORCH_GC_THRESHOLD sets the first, 0 keeps CPython's."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from orchestrator.collector import tune_collector
from orchestrator.settings import ConfigError, Settings


@pytest.fixture(autouse=True)
def _restore_thresholds() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)


def test_the_first_threshold_is_set_and_the_older_ones_follow() -> None:
    assert tune_collector(12_345) == (12_345, 20, 100)
    assert gc.get_threshold() == (12_345, 20, 100)


def test_zero_leaves_the_thresholds_as_they_are() -> None:
    gc.set_threshold(700, 10, 10)
    assert tune_collector(0) == (700, 10, 10)


def test_the_setting_comes_from_the_environment() -> None:
    assert Settings.from_env({}).gc_threshold == 50_000
    assert Settings.from_env({"ORCH_GC_THRESHOLD": "0"}).gc_threshold == 0
    for wrong in ("-1", "10000001", "99999999999999999999"):
        with pytest.raises(ConfigError, match="ORCH_GC_THRESHOLD"):
            Settings.from_env({"ORCH_GC_THRESHOLD": wrong})
