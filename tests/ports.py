"""Ports for servers a test starts on a port it names (a redis-server, an `orchestrator
serve` or agent process), or leaves closed on purpose (a "connection refused" test).

Such a port is chosen, then bound later by another process: in between, anything else
on the machine could take it. So every test process (pytest alone, or each xdist
worker) reserves a block of `BLOCK` ports of its own with a lock file (`flock`; the
kernel drops it when the process ends, even on SIGKILL) and hands out only ports of that
block, each bind-checked (a program outside the suites may listen there). The blocks lie
below Linux's ephemeral ports (32768 and up), which the OS gives to outgoing connections
and to servers bound to port 0. Two suites on one machine (CI and a developer, two
worktrees) therefore never reach for the same port, and neither does the OS.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import socket
import tempfile
from collections.abc import Collection
from pathlib import Path
from typing import IO

FIRST, LAST = 20_000, 32_000
BLOCK = 64
_LOCKS = Path(tempfile.gettempdir()) / "orchestrator-test-ports"

_block: range | None = None
_lock: IO[bytes] | None = None  # held open for the life of the process: the reservation
_next = 0


def block() -> range:
    """This process's own ports (reserved on first use)."""
    global _block, _lock
    if _block is None:
        _LOCKS.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):  # shared by every user's suites on the machine
            _LOCKS.chmod(0o1777)
        starts = list(range(FIRST, LAST - BLOCK + 1, BLOCK))
        for start in random.sample(starts, len(starts)):
            try:  # a lock file of another user's suite may not be ours to open: next block
                handle = (_LOCKS / f"{start}.lock").open("ab")
            except OSError:
                continue
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()
                continue
            handle.truncate(0)
            handle.write(f"{os.getpid()}\n".encode())
            handle.flush()
            _block, _lock = range(start, start + BLOCK), handle
            break
        else:
            raise RuntimeError(f"every port block in {FIRST}-{LAST - 1} is reserved")
    return _block


def bindable(port: int) -> bool:
    """True when a plain bind on 127.0.0.1 takes `port` now (nothing listens there, and no
    connection of a closed server lingers in TIME_WAIT on it)."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port(*, taken: Collection[int] = ()) -> int:
    """A port of this process's block nothing listens on, other than those `taken`.

    Handed out in turn, so a port given recently (a redis-server down for a restart
    that will take it again) is not given again before the whole block has been.
    """
    return free_ports_in_a_row(1, taken=taken)


def free_ports_in_a_row(count: int, *, taken: Collection[int] = ()) -> int:
    """The first of `count` consecutive free ports of this process's block."""
    global _next
    ports = block()
    for _ in range(len(ports)):
        if _next + count > len(ports):
            _next = 0
        base = ports.start + _next
        run = range(base, base + count)
        if not any(port in taken for port in run) and all(bindable(p) for p in run):
            _next += count
            return base
        _next += 1
    raise RuntimeError(f"no {count} free ports in a row in {ports.start}-{ports.stop - 1}")
