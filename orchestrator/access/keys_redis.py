"""API keys kept in Redis (`orchestrator keys create --redis`), shared by every replica.

The record is found under the key's hash and its stored hash is then compared with
`hmac.compare_digest`; records are cached for `cache_s`, so a revoked key stops
working on every replica within it. The hashing and the other store live in
orchestrator/access/keys.py.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable, Mapping

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from redis.typing import EncodableT, FieldT

from orchestrator.access.keys import HASH_SCHEME, KeyRecord, generate_key, hash_key
from orchestrator.access.principal import Limits, Role, parse_roles
from state import keys as redis_keys
from state.connect import reply_text
from state.store import StateStoreError


class RedisKeyStore:
    """Keys kept in Redis, shared by every replica; `create`/`revoke` back the CLI."""

    def __init__(
        self,
        client: aioredis.Redis | aioredis.RedisCluster,
        *,
        prefix: str,
        default_limits: Limits,
        cache_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._default_limits = default_limits
        self._cache_s = cache_s
        self._clock = clock
        self._cache: dict[str, tuple[float, KeyRecord | None]] = {}

    async def find(self, key_hash: str) -> KeyRecord | None:
        now = self._clock()
        cached = self._cache.get(key_hash)
        if cached is not None and cached[0] > now:
            return cached[1]
        digest = key_hash.removeprefix(HASH_SCHEME)
        try:
            raw = await self._client.hgetall(redis_keys.api_key_key(self._prefix, digest))
        except RedisError as exc:
            raise StateStoreError(
                f"redis key lookup failed: {exc}", backend="redis", operation="find_key"
            ) from exc
        record = self._record(raw) if raw else None
        if record is not None and not hmac.compare_digest(
            record.key_hash.encode(), key_hash.encode()
        ):
            record = None
        if len(self._cache) > 10_000:
            self._cache.clear()  # bounded: someone is trying many keys
        self._cache[key_hash] = (now + self._cache_s, record)
        return record

    async def create(
        self, *, key_id: str, tenant: str, roles: frozenset[Role], limits: Limits | None = None
    ) -> str:
        """Store a new key's record and return the key (shown once, never stored)."""
        key = generate_key()
        key_hash = hash_key(key)
        digest = key_hash.removeprefix(HASH_SCHEME)
        fields: dict[FieldT, EncodableT] = {
            "id": key_id,
            "hash": key_hash,
            "tenant": tenant,
            "roles": ",".join(sorted(r.value for r in roles)),
        }
        if limits is not None:
            fields |= {
                "requests_per_s": repr(limits.requests_per_s),
                "burst": str(limits.burst),
                "max_in_flight": str(limits.max_in_flight),
            }
        index = redis_keys.api_key_index_key(self._prefix)
        old = await self._client.hget(index, key_id)
        async with self._client.pipeline(transaction=True) as pipe:
            if old is not None:
                pipe.delete(redis_keys.api_key_key(self._prefix, reply_text(old)))
            pipe.hset(redis_keys.api_key_key(self._prefix, digest), mapping=fields)
            pipe.hset(index, key_id, digest)
            await pipe.execute()
        return key

    async def revoke(self, key_id: str) -> bool:
        index = redis_keys.api_key_index_key(self._prefix)
        digest = await self._client.hget(index, key_id)
        if digest is None:
            return False
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.delete(redis_keys.api_key_key(self._prefix, reply_text(digest)))
            pipe.hdel(index, key_id)
            await pipe.execute()
        return True

    async def list(self) -> list[KeyRecord]:
        index = redis_keys.api_key_index_key(self._prefix)
        out = []
        for digest in (await self._client.hgetall(index)).values():
            key = redis_keys.api_key_key(self._prefix, reply_text(digest))
            raw = await self._client.hgetall(key)
            if raw:
                out.append(self._record(raw))
        return sorted(out, key=lambda r: r.key_id)

    def _record(self, raw: Mapping[bytes | str, bytes | str]) -> KeyRecord:
        fields = {reply_text(k): reply_text(v) for k, v in raw.items()}
        base = self._default_limits
        limits = Limits(
            requests_per_s=float(fields.get("requests_per_s", base.requests_per_s)),
            burst=int(fields.get("burst", base.burst)),
            max_in_flight=int(fields.get("max_in_flight", base.max_in_flight)),
        )
        return KeyRecord(
            key_id=fields["id"],
            key_hash=fields["hash"],
            tenant=fields["tenant"],
            roles=parse_roles(r for r in fields.get("roles", "").split(",") if r),
            limits=limits,
        )
