"""The A2A protocol versions the reference A2A agent speaks (`orchestrator agent --a2a`).

A module of its own so that the command line can offer them without loading the A2A
SDK (pydantic, protobuf: ~18 MB), which only an A2A agent process needs.
"""

from __future__ import annotations

from typing import Final, Literal

Version = Literal["1.0", "0.3"]
VERSIONS: Final[tuple[Version, ...]] = ("1.0", "0.3")
