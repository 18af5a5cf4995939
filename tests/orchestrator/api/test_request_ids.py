"""Fresh request ids (api/middleware.py): uuid4-shaped, unique, never repeated by a fork."""

from __future__ import annotations

import multiprocessing
import re
from multiprocessing.connection import Connection

from orchestrator.api.middleware import fresh_request_id

HEX32 = re.compile(r"[0-9a-f]{32}")


def test_fresh_ids_are_32_hex_digits_and_all_different() -> None:
    ids = [fresh_request_id() for _ in range(1000)]
    assert all(HEX32.fullmatch(i) for i in ids)
    assert len(set(ids)) == len(ids)


def _report_an_id(out: Connection) -> None:
    out.send(fresh_request_id())
    out.close()


def test_a_forked_child_draws_its_own_prefix() -> None:
    """A child forked after ids were handed out (a worker) does not hand out its parent's
    ids again: its prefix is drawn again at the fork."""
    parent = fresh_request_id()
    receive, send = multiprocessing.Pipe(duplex=False)
    child = multiprocessing.get_context("fork").Process(target=_report_an_id, args=(send,))
    child.start()
    theirs = receive.recv()
    child.join(timeout=30)
    assert child.exitcode == 0
    assert HEX32.fullmatch(theirs)
    assert theirs[:16] != parent[:16]
    assert fresh_request_id()[:16] == parent[:16]  # the parent keeps its own
