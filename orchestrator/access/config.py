"""The `[access]` and `[tenants]` tables of the TOML file (read by Settings)::

[access]
cors_origins = ["https://app.example.com"]   # exact origins; none = CORS off
redis_keys = true                            # also accept keys kept in Redis
[access.limits]                              # defaults for every key
requests_per_s = 20                          # token bucket refill; 0 = no limit
burst = 40
max_in_flight = 20                           # workflows running at once; 0 = no limit
max_async_workflows = 1000                   # per tenant, held in state; 0 = no limit
[access.keys.frontend]                       # one table per key; the name is its id
hash = "sha256:..."                          # `orchestrator keys create` prints it
tenant = "acme"
roles = ["user"]
requests_per_s = 50                          # optional per-key overrides of the limits

[tenants.acme]
agents = ["nlp", "data", "viz"]              # agents its workflows may call (default: all)
max_async_workflows = 200
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from orchestrator.access.keys import KeyRecord, check_hash
from orchestrator.access.principal import Limits, OffOrMore, parse_roles
from orchestrator.errors import StartupError
from orchestrator.settings_values import ConfigError, convert, overlay


class AccessConfigError(StartupError, ValueError):
    """A bad `[access]`/`[tenants]` value; `key` is its dotted path in the file."""

    def __init__(self, message: str, *, key: str) -> None:
        super().__init__(message)
        self.key = key


@dataclass(frozen=True, slots=True)
class TenantPolicy:
    # None: every registered agent.
    agents: frozenset[str] | None = None
    # None: [access.limits] max_async_workflows.
    max_async_workflows: OffOrMore | None = None


@dataclass(frozen=True, slots=True)
class AccessConfig:
    keys: tuple[KeyRecord, ...] = ()
    redis_keys: bool = False
    default_limits: Limits = field(default_factory=Limits)
    max_async_workflows: OffOrMore = 1000
    cors_origins: tuple[str, ...] = ()
    tenants: Mapping[str, TenantPolicy] = field(default_factory=dict)
    # Serve without keys on a non-loopback address anyway (ORCH_INSECURE / --insecure).
    insecure: bool = False

    @property
    def enabled(self) -> bool:
        """Keys are configured: every request but the public ones must carry one."""
        return bool(self.keys) or self.redis_keys

    def tenant(self, name: str) -> TenantPolicy:
        return self.tenants.get(name, TenantPolicy())

    def max_async_for(self, tenant: str) -> int:
        own = self.tenant(tenant).max_async_workflows
        return self.max_async_workflows if own is None else own


_LIMIT_FIELDS = {"requests_per_s", "burst", "max_in_flight"}


def parse_access(access: object, tenants: object) -> AccessConfig:
    """The AccessConfig of the file's tables (either may be absent: None)."""
    table = _table(access, "access")
    unknown = set(table) - {"cors_origins", "redis_keys", "limits", "keys"}
    if unknown:
        raise AccessConfigError("unknown key", key=f"access.{sorted(unknown)[0]}")
    limits_table = _table(table.get("limits"), "access.limits")
    max_async = AccessConfig().max_async_workflows
    if "max_async_workflows" in limits_table:
        where = "access.limits.max_async_workflows"
        max_async = _count(limits_table.pop("max_async_workflows"), where)
    defaults = _limits(limits_table, Limits(), "access.limits")
    records = []
    for key_id, raw in _table(table.get("keys"), "access.keys").items():
        records.append(_key(key_id, _table(raw, f"access.keys.{key_id}"), defaults))
    hashes = [r.key_hash for r in records]
    if len(set(hashes)) != len(hashes):
        raise AccessConfigError("two keys have the same hash", key="access.keys")
    origins = table.get("cors_origins", [])
    if not isinstance(origins, list) or not all(isinstance(o, str) for o in origins):
        raise AccessConfigError("must be a list of origins", key="access.cors_origins")
    redis_keys = table.get("redis_keys", False)
    if not isinstance(redis_keys, bool):
        raise AccessConfigError("must be true or false", key="access.redis_keys")
    return AccessConfig(
        keys=tuple(records),
        redis_keys=redis_keys,
        default_limits=defaults,
        max_async_workflows=max_async,
        cors_origins=tuple(check_origin(o, "access.cors_origins") for o in origins),
        tenants=_tenants(tenants),
    )


def check_origin(origin: str, key: str) -> str:
    """An exact origin: scheme://host[:port], no path, no trailing slash."""
    scheme, sep, rest = origin.partition("://")
    if scheme not in ("http", "https") or not sep or not rest or "/" in rest or "*" in rest:
        raise AccessConfigError(
            f"expected an exact origin like https://app.example.com, got {origin!r}", key=key
        )
    return origin


def _key(key_id: str, raw: dict[str, Any], defaults: Limits) -> KeyRecord:
    where = f"access.keys.{key_id}"
    unknown = set(raw) - {"hash", "tenant", "roles"} - _LIMIT_FIELDS
    if unknown:
        raise AccessConfigError("unknown key", key=f"{where}.{sorted(unknown)[0]}")
    for name in ("hash", "tenant", "roles"):
        if name not in raw:
            raise AccessConfigError("missing", key=f"{where}.{name}")
    if "key" in raw or not isinstance(raw["hash"], str):
        raise AccessConfigError("must be a hash string", key=f"{where}.hash")
    try:
        key_hash = check_hash(raw["hash"])
    except ValueError as exc:
        raise AccessConfigError(str(exc), key=f"{where}.hash") from None
    tenant = raw["tenant"]
    if not isinstance(tenant, str) or not tenant:
        raise AccessConfigError("must be a non-empty string", key=f"{where}.tenant")
    roles_raw = raw["roles"]
    if (
        not isinstance(roles_raw, list)
        or not roles_raw
        or not all(isinstance(r, str) for r in roles_raw)
    ):
        raise AccessConfigError("must be a non-empty list of role names", key=f"{where}.roles")
    try:
        roles = parse_roles(roles_raw)
    except ValueError as exc:
        raise AccessConfigError(str(exc), key=f"{where}.roles") from None
    limits = _limits({k: v for k, v in raw.items() if k in _LIMIT_FIELDS}, defaults, where)
    return KeyRecord(key_id=key_id, key_hash=key_hash, tenant=tenant, roles=roles, limits=limits)


def _limits(table: dict[str, Any], base: Limits, where: str) -> Limits:
    # Each value checked against its Limits field's type (orchestrator/settings_values.py).
    try:
        limits = overlay(base, table, source="", key=where)
    except ConfigError as exc:
        raise AccessConfigError(exc.problem, key=exc.key) from None
    if limits.requests_per_s > 0 and limits.burst < 1:
        raise AccessConfigError("must be >= 1 when requests_per_s > 0", key=f"{where}.burst")
    return limits


def _tenants(raw: object) -> dict[str, TenantPolicy]:
    out = {}
    for name, table in _table(raw, "tenants").items():
        where = f"tenants.{name}"
        policy = _table(table, where)
        unknown = set(policy) - {"agents", "max_async_workflows"}
        if unknown:
            raise AccessConfigError("unknown key", key=f"{where}.{sorted(unknown)[0]}")
        agents = policy.get("agents")
        if agents is not None and (
            not isinstance(agents, list) or not all(isinstance(a, str) for a in agents)
        ):
            raise AccessConfigError("must be a list of agent names", key=f"{where}.agents")
        cap = policy.get("max_async_workflows")
        out[name] = TenantPolicy(
            agents=frozenset(agents) if agents is not None else None,
            max_async_workflows=_count(cap, f"{where}.max_async_workflows")
            if cap is not None
            else None,
        )
    return out


def _table(value: object, key: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise AccessConfigError("must be a table", key=key)
    return dict(value)


def _count(value: object, key: str) -> int:
    try:
        count: int = convert(value, OffOrMore, source="", key=key, lax=False)
    except ConfigError as exc:
        raise AccessConfigError(exc.problem, key=key) from None
    return count
