"""Roles, the principal a request acts as, and the limits a key carries."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated

from msgspec import Meta

# A rate or a count where 0 turns the limit off.
OffOrMore = Annotated[int, Meta(ge=0)]


class Role(StrEnum):
    """`user`: its own tenant's workflows. `ops`: breakers, metrics, agent URLs.
    `admin`: everything, every tenant."""

    USER = "user"
    OPS = "ops"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Limits:
    """Per key. `requests_per_s` refills a bucket of `burst` tokens; 0 turns a limit off."""

    requests_per_s: Annotated[float, Meta(ge=0)] = 20.0
    burst: OffOrMore = 40
    max_in_flight: OffOrMore = 20

    @property
    def unlimited(self) -> bool:
        return self.requests_per_s == 0 and self.max_in_flight == 0


UNLIMITED = Limits(requests_per_s=0.0, burst=0, max_in_flight=0)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts as. `key_id` names the key (never the key itself)."""

    key_id: str
    tenant: str
    roles: frozenset[Role]
    limits: Limits = field(default=UNLIMITED)

    def has(self, role: Role) -> bool:
        return Role.ADMIN in self.roles or role in self.roles

    @property
    def all_tenants(self) -> bool:
        return Role.ADMIN in self.roles

    def may_see(self, tenant: str | None) -> bool:
        """Whether a workflow of `tenant` exists for this principal (else it is a 404)."""
        return self.all_tenants or tenant == self.tenant


# The principal of every request when no key is configured (loopback only, see exposure.py).
OPEN_TENANT = "default"
OPEN_PRINCIPAL = Principal(
    key_id="anonymous",
    tenant=OPEN_TENANT,
    roles=frozenset({Role.ADMIN}),
    limits=UNLIMITED,
)


def parse_roles(names: Iterable[str]) -> frozenset[Role]:
    """Roles from their names; ValueError naming the first unknown one."""
    roles = set()
    for name in names:
        try:
            roles.add(Role(name))
        except ValueError:
            allowed = ", ".join(r.value for r in Role)
            raise ValueError(f"unknown role {name!r} (allowed: {allowed})") from None
    return frozenset(roles)
