"""The root of the state layer's errors (the whole tree is drawn in state/store.py).

Kept in a module that imports nothing, so every module of the package can raise
an error of the one tree without an import cycle (state/store.py imports
state/history.py, whose `BadCursor` is part of the tree).
"""

from __future__ import annotations


class StateError(Exception):
    """Root of the state layer's errors."""
