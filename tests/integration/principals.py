"""API keys for the access tests: one per kind of caller, and the AccessConfig holding them."""

from __future__ import annotations

import dataclasses
from typing import Any

from orchestrator.access.config import AccessConfig, TenantPolicy
from orchestrator.access.keys import KeyRecord, generate_key, hash_key
from orchestrator.access.principal import UNLIMITED, Limits, Role

# name -> (tenant, roles)
CALLERS: dict[str, tuple[str, frozenset[Role]]] = {
    "user_a": ("acme", frozenset({Role.USER})),
    "user_b": ("globex", frozenset({Role.USER})),
    "ops": ("acme", frozenset({Role.OPS})),
    "admin": ("root", frozenset({Role.ADMIN})),
}
KEYS: dict[str, str] = {name: generate_key() for name in CALLERS}


def record(name: str, limits: Limits = UNLIMITED) -> KeyRecord:
    tenant, roles = CALLERS[name]
    return KeyRecord(
        key_id=name, key_hash=hash_key(KEYS[name]), tenant=tenant, roles=roles, limits=limits
    )


def access_config(
    *,
    limits: Limits = UNLIMITED,
    tenants: dict[str, TenantPolicy] | None = None,
    **changes: Any,
) -> AccessConfig:
    config = AccessConfig(
        keys=tuple(record(name, limits) for name in CALLERS),
        default_limits=limits,
        max_async_workflows=0,
        tenants=tenants or {},
    )
    return dataclasses.replace(config, **changes)


def auth(name: str | None) -> dict[str, str]:
    """Headers authenticating as `name` (None: no key)."""
    return {} if name is None else {"Authorization": f"Bearer {KEYS[name]}"}
