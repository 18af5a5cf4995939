"""API keys: generated, stored only as hashes, found and compared in constant time.

A key is `orch_` + 43 characters of `secrets.token_urlsafe(32)` (256 random bits).
What is stored is `sha256:<hex>` of the whole key. A slow password hash (argon2,
bcrypt) buys nothing for a 256-bit random secret — nobody can guess it — and would
cost tens of milliseconds on every request; a fast hash still means a leaked config
file or Redis dump reveals no usable key.

Two `KeyStore`s find a key's record from its hash:

- `StaticKeyStore`: the keys of the TOML file. Every configured hash is compared
  with `hmac.compare_digest`, all of them every time, so neither the answer's
  timing nor an early exit says how much of a guess matched.
- `RedisKeyStore`: keys in Redis (`orchestrator keys create --redis`), shared by
  every replica; the record is found under the hash, and its stored hash is then
  compared with `hmac.compare_digest` too. Records are cached for a few seconds,
  so a revoked key stops working on every replica within `cache_s`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from redis.typing import EncodableT, FieldT

from orchestrator.access.principal import Limits, Principal, Role, parse_roles
from state import keys as redis_keys
from state.store import StateStoreError

KEY_PREFIX = "orch_"
HASH_SCHEME = "sha256:"


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """The stored form of a key: `sha256:<hex>`."""
    return HASH_SCHEME + hashlib.sha256(key.encode("utf-8")).hexdigest()


def check_hash(value: str) -> str:
    """`value` if it is a well-formed stored hash; ValueError saying what is expected."""
    digest = value.removeprefix(HASH_SCHEME)
    if not value.startswith(HASH_SCHEME) or len(digest) != 64:
        raise ValueError(f"expected 'sha256:' and 64 hex digits, got {value[:16]!r}...")
    try:
        bytes.fromhex(digest)
    except ValueError:
        raise ValueError("the sha256 digest is not hex") from None
    return HASH_SCHEME + digest.lower()


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """What is stored for a key: never the key itself."""

    key_id: str
    key_hash: str
    tenant: str
    roles: frozenset[Role]
    limits: Limits

    def principal(self) -> Principal:
        return Principal(
            key_id=self.key_id, tenant=self.tenant, roles=self.roles, limits=self.limits
        )


class KeyStore(Protocol):
    async def find(self, key_hash: str) -> KeyRecord | None:
        """The record whose hash equals `key_hash` (compared in constant time), or None."""
        ...


class StaticKeyStore:
    """The keys of the TOML file."""

    def __init__(self, records: Iterable[KeyRecord]) -> None:
        self._records = tuple(records)

    def __len__(self) -> int:
        return len(self._records)

    async def find(self, key_hash: str) -> KeyRecord | None:
        presented = key_hash.encode()
        found: KeyRecord | None = None
        for record in self._records:
            # No early exit: every configured hash is compared, every time.
            if hmac.compare_digest(record.key_hash.encode(), presented):
                found = record
        return found


class RedisKeyStore:
    """Keys kept in Redis, shared by every replica; `create`/`revoke` back the CLI."""

    def __init__(
        self,
        client: aioredis.Redis,
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
                pipe.delete(redis_keys.api_key_key(self._prefix, _text(old)))
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
            pipe.delete(redis_keys.api_key_key(self._prefix, _text(digest)))
            pipe.hdel(index, key_id)
            await pipe.execute()
        return True

    async def list(self) -> list[KeyRecord]:
        index = redis_keys.api_key_index_key(self._prefix)
        out = []
        for digest in (await self._client.hgetall(index)).values():
            raw = await self._client.hgetall(redis_keys.api_key_key(self._prefix, _text(digest)))
            if raw:
                out.append(self._record(raw))
        return sorted(out, key=lambda r: r.key_id)

    def _record(self, raw: Mapping[bytes | str, bytes | str]) -> KeyRecord:
        fields = {_text(k): _text(v) for k, v in raw.items()}
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


class Authenticator:
    """Finds the principal of a presented key in each store, in order."""

    def __init__(self, stores: Iterable[KeyStore]) -> None:
        self._stores = tuple(stores)

    async def authenticate(self, key: str) -> Principal | None:
        key_hash = hash_key(key)
        for store in self._stores:
            record = await store.find(key_hash)
            if record is not None:
                return record.principal()
        return None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
