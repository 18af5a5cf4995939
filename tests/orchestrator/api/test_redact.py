"""The redactor rewrites exactly what replacing every form of every address would."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from agents.registry import AgentRegistry, AgentSpec
from orchestrator.api.redact import AddressRedactor

_REGISTRY = AgentRegistry(
    [
        AgentSpec(name="nlp", url="http://127.0.0.1:8001/nlp"),
        AgentSpec(name="data", url="http://127.0.0.1:8002/"),
        AgentSpec(name="viz", url="https://Viz.Internal/render"),
    ]
)
# Every form of each address (redact.py), as a reference written out.
_FORMS = {
    "nlp": ["http://127.0.0.1:8001/nlp", "127.0.0.1:8001", "('127.0.0.1', 8001)",
            "[127.0.0.1]:8001"],
    "data": ["http://127.0.0.1:8002", "127.0.0.1:8002", "('127.0.0.1', 8002)",
             "[127.0.0.1]:8002"],
    "viz": ["https://Viz.Internal/render", "Viz.Internal", "viz.internal:443",
            "('viz.internal', 443)", "[viz.internal]:443"],
}  # fmt: skip


def _replace_every_form(body: bytes) -> bytes:
    pairs = sorted(
        ((form.encode(), f"<agent {name}>".encode()) for name, forms in _FORMS.items()
         for form in forms),
        key=lambda p: -len(p[0]),
    )  # fmt: skip
    for needle, label in pairs:
        body = body.replace(needle, label)
    return body


_PIECES = st.sampled_from(
    [form for forms in _FORMS.values() for form in forms]
    + ["127.0.0.1", "viz.internal", "Viz", ":8001", "('", "1796105131.2410471", ", ", "x"]
)


@settings(max_examples=500)
@given(st.lists(st.one_of(_PIECES, st.text(max_size=8)), max_size=12))
def test_a_document_comes_out_as_replacing_every_form_makes_it(pieces: list[str]) -> None:
    """Whether or not a host is in it: a document without one is returned as it came."""
    body = "".join(pieces).encode()
    assert AddressRedactor(_REGISTRY)(body) == _replace_every_form(body)
