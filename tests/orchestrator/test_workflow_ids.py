"""Workflow ids: 128 bits from the OS's CSPRNG, read in blocks; never the same twice,
across a fork too."""

from __future__ import annotations

import multiprocessing
import multiprocessing.queues
import re

from orchestrator.lifecycle import new_workflow_id


def test_ids_span_many_blocks_and_never_repeat() -> None:
    """Past a block's 256 ids the next block is read: 2,000 ids, all well-formed, unique."""
    ids = [new_workflow_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)


def test_a_forked_child_never_hands_out_the_parents_next_ids() -> None:
    """The bytes the parent has not handed out yet are dropped in the child: the child's
    ids are fresh reads, not the parent's upcoming ones."""
    new_workflow_id()  # a block is read and partly handed out
    fork = multiprocessing.get_context("fork")
    answers: multiprocessing.queues.SimpleQueue[list[str]] = fork.SimpleQueue()
    child_process = fork.Process(target=_ten_ids_to, args=(answers,))
    child_process.start()
    child = set(answers.get())
    child_process.join()
    parent = {new_workflow_id() for _ in range(10)}
    assert len(child) == 10
    assert not child & parent


def _ten_ids_to(answers: multiprocessing.queues.SimpleQueue[list[str]]) -> None:
    answers.put([new_workflow_id() for _ in range(10)])
