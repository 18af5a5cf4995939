"""Fresh request ids (api/middleware.py): uuid4-shaped, unique, never repeated by a fork."""

from __future__ import annotations

import os
import re

from orchestrator.api import middleware

HEX32 = re.compile(r"[0-9a-f]{32}")


def test_fresh_ids_are_32_hex_digits_and_all_different() -> None:
    ids = [middleware._IDS.next() for _ in range(1000)]
    assert all(HEX32.fullmatch(i) for i in ids)
    assert len(set(ids)) == len(ids)


def test_a_forked_child_draws_its_own_prefix() -> None:
    """A child forked after ids were handed out (a worker) does not hand out its parent's
    ids again: its prefix is drawn again at the fork."""
    parent = middleware._IDS.next()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next id and leave without running anything else
        os.close(read)
        os.write(write, middleware._IDS.next().encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        child = pipe.read().decode()
    os.waitpid(pid, 0)
    assert HEX32.fullmatch(child)
    assert child[:16] != parent[:16]
    assert middleware._IDS.next()[:16] == parent[:16]  # the parent keeps its own
