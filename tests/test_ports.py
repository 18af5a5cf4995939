"""tests/ports.py: ports no other suite on the machine reaches for."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import ports

ROOT = Path(__file__).resolve().parents[1]
EPHEMERAL_FIRST = 32768  # Linux's default ip_local_port_range starts here


def test_another_process_reserves_another_block() -> None:
    """While this process holds its block, a second one (another suite, another xdist
    worker) gets a block of its own; both lie below the OS's ephemeral ports."""
    mine = ports.block()
    child = subprocess.run(
        [sys.executable, "-c", "from tests.ports import block; print(block().start)"],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    theirs = range(int(child.stdout), int(child.stdout) + ports.BLOCK)
    assert not set(theirs) & set(mine)
    assert mine.stop <= EPHEMERAL_FIRST and theirs.stop <= EPHEMERAL_FIRST


@contextlib.contextmanager
def _busy_but(spare: range) -> Iterator[None]:
    """Every port of this process's block is bound, except those of `spare`."""
    held: list[socket.socket] = []
    try:
        for port in ports.block():
            if port in spare:
                continue
            sock = socket.socket()
            held.append(sock)
            with contextlib.suppress(OSError):  # already busy: just as good
                sock.bind(("127.0.0.1", port))
        yield
    finally:
        for sock in held:
            sock.close()


def _bindable_run(count: int) -> int:
    """The first `count` ports in a row of the block that can be bound now (a port an
    earlier test's server used may still be in TIME_WAIT, which refuses a plain bind)."""
    block = ports.block()
    for base in range(block.start, block.stop - count + 1):
        if all(ports.bindable(port) for port in range(base, base + count)):
            return base
    raise AssertionError("no bindable ports in the block")


def test_a_busy_port_is_never_handed_out() -> None:
    spare = _bindable_run(1)
    with _busy_but(range(spare, spare + 1)):
        assert [ports.free_port() for _ in range(3)] == [spare] * 3
        with pytest.raises(RuntimeError, match="no 1 free ports"):
            ports.free_port(taken={spare})


def test_a_run_of_free_ports_is_consecutive_and_inside_the_block() -> None:
    start = _bindable_run(3)
    with _busy_but(range(start, start + 3)):
        assert ports.free_ports_in_a_row(3) == start
