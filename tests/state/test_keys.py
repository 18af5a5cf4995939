"""The Redis key layout: one hash tag per workflow, exact cancel-flag matching."""

from __future__ import annotations

import pytest

from state import keys

WEIRD_IDS = ["abc123", "with{braces}", "a}b", "star*and?q[1]", "ünï"]
PREFIXES = ["orch:", "", "t*[x]?\\:"]


@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize("workflow_id", WEIRD_IDS)
def test_every_key_of_a_workflow_shares_its_prefix_and_hash_tag(
    prefix: str, workflow_id: str
) -> None:
    """All keys sit under the prefix with the same {id} cluster hash tag, so Lua may touch them."""
    all_keys = (*keys.refreshed_keys(prefix, workflow_id), keys.lease_key(prefix, workflow_id))
    doc = keys.workflow_key(prefix, workflow_id)
    assert len(set(all_keys)) == len(all_keys)
    for key in all_keys:
        assert key.startswith(doc)
        assert key.startswith(prefix)


def test_the_document_comes_first_and_the_lease_keeps_its_own_ttl() -> None:
    """save's script treats the first refreshed key as the document; the lease is not refreshed."""
    refreshed = keys.refreshed_keys("p:", "w")
    assert refreshed[0] == keys.workflow_key("p:", "w")
    assert keys.cancel_flag_key("p:", "w") in refreshed
    assert keys.idempotency_key("p:", "w") in refreshed
    assert keys.lease_key("p:", "w") not in refreshed


@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize("workflow_id", WEIRD_IDS)
def test_workflow_id_is_recovered_from_its_cancel_flag(prefix: str, workflow_id: str) -> None:
    """The replay after a reconnect turns a flag key back into the exact workflow id."""
    key = keys.cancel_flag_key(prefix, workflow_id)
    assert keys.workflow_id_of_cancel_flag(prefix, key) == workflow_id


def test_cancel_flag_pattern_escapes_glob_characters() -> None:
    """A prefix's glob characters are literal in the SCAN pattern; only the id is a wildcard."""
    assert keys.cancel_flag_pattern("orch:") == "orch:wf:{*}:cancel"
    assert keys.cancel_flag_pattern("t*[x]?\\:") == "t\\*\\[x\\]\\?\\\\:wf:{*}:cancel"


def test_one_cancel_channel_per_prefix() -> None:
    """Replicas on different prefixes never hear each other's cancels."""
    assert keys.cancel_channel("a:") != keys.cancel_channel("b:")
    assert keys.cancel_channel(keys.DEFAULT_PREFIX) == "orch:cancel"
