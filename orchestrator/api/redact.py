"""Agent addresses are for `ops`: a workflow document shown to anyone else has them replaced.

Error messages carry what the HTTP client said ("Cannot connect to host
10.0.0.5:8002 ...", "('10.0.0.5', 8002)"), and a `user` must not learn where the
agents live from them. The serialized document is rewritten as bytes: every form of
each registered agent's address becomes `<agent NAME>`. The replacement holds no
character JSON escapes, so the document stays valid JSON.

Every answer to a `user` goes through here, and almost none holds an address. Every
form of an address holds its host (but a URL or netloc written in capitals: that form
stands for itself), so a document that holds no host holds no form, and one scan per
host (one for agents on one machine) clears it, where one scan per form took five per
agent (~1-2 us each over the chain's 3 KB of digit-heavy JSON).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from aiohttp import web

from agents.registry import AgentRegistry


class AddressRedactor:
    def __init__(self, registry: AgentRegistry) -> None:
        pairs: dict[bytes, bytes] = {}
        gates: set[bytes] = set()
        for name, spec in registry.items():
            label = f"<agent {name}>".encode()
            parts = urlsplit(spec.url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
            host = parts.hostname or ""
            for form in (
                spec.url.rstrip("/"),
                parts.netloc,
                f"{host}:{port}",
                f"('{host}', {port})",
                f"[{host}]:{port}",
            ):
                if form:
                    pairs[form.encode()] = label
                    # Text every occurrence of the form contains: its host, when the
                    # form holds it as written.
                    gates.add((host if host and host in form else form).encode())
        # Longest first, so a URL is replaced whole before its host:port would be.
        self._pairs = sorted(pairs.items(), key=lambda p: -len(p[0]))
        self._gates = tuple(gates)

    def __call__(self, body: bytes) -> bytes:
        for gate in self._gates:
            if gate in body:
                break
        else:
            return body  # no form can be there (the usual document)
        for needle, label in self._pairs:
            if needle in body:
                body = body.replace(needle, label)
        return body


REDACTOR: web.AppKey[AddressRedactor] = web.AppKey("redactor", AddressRedactor)
