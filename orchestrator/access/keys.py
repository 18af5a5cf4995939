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
- `RedisKeyStore` (orchestrator/access/keys_redis.py, so that redis-py is loaded only
  by a service that has Redis): keys in Redis (`orchestrator keys create --redis`), shared by
  every replica; the record is found under the hash, and its stored hash is then
  compared with `hmac.compare_digest` too. Records are cached for a few seconds,
  so a revoked key stops working on every replica within `cache_s`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from orchestrator.access.principal import Limits, Principal, Role

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
