"""The Redis key layout: every multi-key script's keys share one Cluster hash slot."""

from __future__ import annotations

import pytest
from redis.crc import key_slot

from state import keys

WEIRD_IDS = ["abc123", "with{braces}", "a}b", "star*and?q[1]", "ünï"]
PREFIXES = ["orch:", "", "t*[x]?\\:"]


def _slot(key: str) -> int:
    return key_slot(key.encode())


@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize("workflow_id", WEIRD_IDS)
def test_every_key_of_a_workflow_shares_its_prefix_and_slot(
    prefix: str, workflow_id: str
) -> None:
    """The save and cancel scripts touch the refreshed keys together: one slot on a Cluster."""
    all_keys = keys.refreshed_keys(prefix, workflow_id)
    doc = keys.workflow_key(prefix, workflow_id)
    assert len(set(all_keys)) == len(all_keys)
    assert all_keys[0] == doc
    for key in all_keys:
        assert key.startswith(doc)
        assert _slot(key) == _slot(doc)
    # Spelled out from the document's key there: the same keys every other caller names.
    assert all_keys == (
        doc,
        keys.cancel_flag_key(prefix, workflow_id),
        keys.pause_flag_key(prefix, workflow_id),
        keys.events_key(prefix, workflow_id),
        keys.events_watched_key(prefix, workflow_id),
    )


@pytest.mark.parametrize("prefix", PREFIXES)
def test_the_replica_table_is_one_slot(prefix: str) -> None:
    """The heartbeat and reaping scripts touch the three replica sets together."""
    slots = {
        _slot(keys.replicas_key(prefix)),
        _slot(keys.dead_replicas_key(prefix)),
        _slot(keys.reaping_key(prefix)),
    }
    assert len(slots) == 1


@pytest.mark.parametrize("shard", range(8))
def test_a_history_shard_and_its_expiries_share_a_slot(shard: int) -> None:
    assert _slot(keys.history_key("orch:", shard)) == _slot(keys.history_expiry_key("orch:", shard))


def test_history_shards_spread_over_slots() -> None:
    """On a Cluster the shards of the history index land in different slots."""
    assert len({_slot(keys.history_key("orch:", s)) for s in range(8)}) == 8


def test_a_workflow_always_lands_in_the_same_history_shard() -> None:
    assert keys.history_shard("abc", 8) == keys.history_shard("abc", 8)
    assert {keys.history_shard(f"w{i}", 8) for i in range(200)} == set(range(8))


def test_history_members_sort_by_creation_time() -> None:
    early = keys.history_member(999, "zzz")
    late = keys.history_member(1000, "aaa")
    assert early < late


def test_submit_keys_are_per_tenant() -> None:
    assert keys.submit_key("p:", "a", "k") != keys.submit_key("p:", "b", "k")
    assert keys.submit_key("p:", None, "k") != keys.submit_key("p:", "a", "k")


def test_cancels_are_addressed_per_replica_and_prefix() -> None:
    """A cancel reaches its owner only; replicas on different prefixes never hear each other."""
    assert keys.replica_cancel_channel("a:", "r1") != keys.replica_cancel_channel("a:", "r2")
    assert keys.replica_cancel_channel("a:", "r1") != keys.replica_cancel_channel("b:", "r1")
    assert keys.cancel_channel(keys.DEFAULT_PREFIX) == "orch:cancel"
