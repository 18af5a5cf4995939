"""Which asyncio event loop the service runs on: uvloop when installed, else asyncio's.

uvloop (the optional `fast` extra: `pip install '.[fast]'`) runs the same asyncio
code on libuv; the loop's own bookkeeping is the largest single share of the
service's CPU (bench/profile.py), and `python -m bench.targets` shows what uvloop
buys. `ORCH_EVENT_LOOP` chooses: `auto` (uvloop when importable), `asyncio`, or
`uvloop` (start-up fails if it is not installed, rather than run slower unnoticed).
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
from collections.abc import Callable
from typing import Literal

from orchestrator.errors import StartupError

EventLoopChoice = Literal["auto", "asyncio", "uvloop"]
LoopFactory = Callable[[], asyncio.AbstractEventLoop]


class EventLoopUnavailable(StartupError, RuntimeError):
    """`ORCH_EVENT_LOOP=uvloop` but uvloop cannot be imported."""


def uvloop_installed() -> bool:
    return importlib.util.find_spec("uvloop") is not None


def loop_factory(choice: EventLoopChoice) -> tuple[str, LoopFactory | None]:
    """(the loop's name, a factory for `asyncio.Runner`; None = asyncio's default)."""
    if choice == "asyncio" or (choice == "auto" and not uvloop_installed()):
        return "asyncio", None
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError as exc:
        raise EventLoopUnavailable(
            "ORCH_EVENT_LOOP=uvloop but uvloop is not installed (pip install '.[fast]')"
        ) from exc
    factory: LoopFactory = uvloop.new_event_loop
    return "uvloop", factory
