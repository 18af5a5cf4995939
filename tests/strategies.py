"""Hypothesis strategies more than one test module draws from."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st


def json_values(
    keys: st.SearchStrategy[str], *, text_size: int = 8, size: int = 4, leaves: int = 20
) -> st.SearchStrategy[Any]:
    """What orjson yields (ints within 64 bits, finite floats), nested a few levels: a
    step's output or a workflow's result, as stored. `keys` names the objects' members."""
    return st.recursive(
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**63), max_value=2**64 - 1)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=text_size),
        lambda children: (
            st.lists(children, max_size=size) | st.dictionaries(keys, children, max_size=size)
        ),
        max_leaves=leaves,
    )
