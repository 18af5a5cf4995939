"""API keys: stored as hashes only, compared in constant time, found in the file or Redis."""

from __future__ import annotations

import hmac
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from orchestrator.access.keys import (
    Authenticator,
    KeyRecord,
    StaticKeyStore,
    check_hash,
    generate_key,
    hash_key,
)
from orchestrator.access.keys_redis import RedisKeyStore
from orchestrator.access.principal import Limits, Role
from tests.fakes import FakeClock


def _record(key_id: str, key: str, tenant: str = "acme") -> KeyRecord:
    return KeyRecord(
        key_id=key_id,
        key_hash=hash_key(key),
        tenant=tenant,
        roles=frozenset({Role.USER}),
        limits=Limits(),
    )


class RecordingCompare:
    """A fake of hmac.compare_digest that counts its calls and still answers truly."""

    def __init__(self) -> None:
        self.calls = 0
        self._real = hmac.compare_digest

    def __call__(self, a: bytes, b: bytes) -> bool:
        self.calls += 1
        return self._real(a, b)


def test_keys_are_long_random_and_stored_hashed() -> None:
    key = generate_key()
    assert key.startswith("orch_") and len(key) >= 40
    assert generate_key() != key
    stored = hash_key(key)
    assert stored.startswith("sha256:") and len(stored) == 7 + 64
    assert key not in stored
    assert check_hash(stored.upper().replace("SHA256:", "sha256:")) == stored


@pytest.mark.parametrize(
    "bad", ["plain-key", "sha256:abc", "md5:" + "0" * 64, "sha256:" + "z" * 64]
)
def test_malformed_hashes_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        check_hash(bad)


async def test_every_configured_hash_is_compared_in_constant_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """hmac.compare_digest on every record, every time: no early exit on a match."""
    keys = [generate_key() for _ in range(5)]
    store = StaticKeyStore(_record(f"k{i}", k) for i, k in enumerate(keys))
    compare = RecordingCompare()
    monkeypatch.setattr(hmac, "compare_digest", compare)
    found = await store.find(hash_key(keys[0]))
    assert found is not None and found.key_id == "k0"
    assert compare.calls == 5
    assert await store.find(hash_key("orch_wrong")) is None
    assert compare.calls == 10


async def test_authenticator_gives_the_principal() -> None:
    key = generate_key()
    auth = Authenticator([StaticKeyStore([_record("front", key, tenant="globex")])])
    who = await auth.authenticate(key)
    assert who is not None
    assert (who.key_id, who.tenant, who.roles) == ("front", "globex", frozenset({Role.USER}))
    assert await auth.authenticate(key + "x") is None


@pytest.fixture
async def redis_keys(redis_url: str) -> AsyncIterator[tuple[aioredis.Redis, str]]:
    prefix = f"test-keys-{uuid.uuid4().hex[:8]}:"
    client = aioredis.Redis.from_url(redis_url)
    try:
        yield client, prefix
    finally:
        async for k in client.scan_iter(match=prefix + "*"):
            await client.delete(k)
        await client.aclose()


@pytest.mark.redis
async def test_redis_keys_are_shared_and_revocable(
    redis_keys: tuple[aioredis.Redis, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key created through one store is accepted by another (a replica); revoking it
    stops it once the replica's short cache has expired."""
    client, prefix = redis_keys
    clock = FakeClock()
    admin = RedisKeyStore(client, prefix=prefix, default_limits=Limits())
    replica = RedisKeyStore(client, prefix=prefix, default_limits=Limits(), clock=clock)
    key = await admin.create(
        key_id="ops-team", tenant="acme", roles=frozenset({Role.OPS, Role.USER})
    )
    compare = RecordingCompare()
    monkeypatch.setattr(hmac, "compare_digest", compare)
    record = await replica.find(hash_key(key))
    assert record is not None
    assert (record.key_id, record.tenant) == ("ops-team", "acme")
    assert record.roles == frozenset({Role.OPS, Role.USER})
    assert compare.calls == 1
    # Nothing in Redis holds the key itself.
    async for k in client.scan_iter(match=prefix + "*"):
        kind = await client.type(k)
        values = await client.hgetall(k) if kind == b"hash" else {}
        texts = [k, *values.keys(), *values.values()]
        assert all(isinstance(t, bytes) for t in texts)  # the client does not decode
        assert key.encode() not in b"".join(t for t in texts if isinstance(t, bytes))
    assert [r.key_id for r in await admin.list()] == ["ops-team"]
    assert await admin.revoke("ops-team")
    assert await replica.find(hash_key(key)) is not None  # cached for a few seconds
    clock.advance(6)
    assert await replica.find(hash_key(key)) is None
    assert not await admin.revoke("ops-team")


@pytest.mark.redis
async def test_recreating_a_key_id_replaces_the_old_key(
    redis_keys: tuple[aioredis.Redis, str],
) -> None:
    client, prefix = redis_keys
    store = RedisKeyStore(client, prefix=prefix, default_limits=Limits(), cache_s=0)
    old = await store.create(key_id="front", tenant="acme", roles=frozenset({Role.USER}))
    new = await store.create(key_id="front", tenant="acme", roles=frozenset({Role.USER}))
    assert await store.find(hash_key(old)) is None
    assert await store.find(hash_key(new)) is not None
