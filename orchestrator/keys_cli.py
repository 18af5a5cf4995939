"""`orchestrator keys ...`: create API keys (for the TOML file or in Redis), list, revoke."""

from __future__ import annotations

import argparse
from typing import Any

from orchestrator.access.keys import generate_key, hash_key
from orchestrator.access.principal import parse_roles
from orchestrator.settings import Settings


def add_keys_parser(sub: Any) -> None:
    keys = sub.add_parser(
        "keys",
        help="create, list or revoke API keys",
        description="API keys carry a tenant and roles (user, ops, admin). A key is shown "
        "once; only its sha256 hash is stored, in the TOML file or in Redis.",
    )
    actions = keys.add_subparsers(dest="action", required=True)
    create = actions.add_parser(
        "create",
        help="make a new key; print it and its [access.keys] table (or store it in Redis)",
    )
    create.add_argument("--id", required=True, help="the key's name (logged; never the key)")
    create.add_argument("--tenant", required=True, help="the tenant its workflows belong to")
    create.add_argument(
        "--roles", default="user", help="comma-separated: user, ops, admin (default user)"
    )
    create.add_argument(
        "--redis",
        action="store_true",
        help="store it in Redis (REDIS_URL, ORCH_KEY_PREFIX) so every replica accepts it; "
        "the config needs [access] redis_keys = true",
    )
    actions.add_parser("list", help="list the keys stored in Redis (ids, tenants, roles)")
    revoke = actions.add_parser("revoke", help="remove a key from Redis")
    revoke.add_argument("id")


async def run_keys_command(args: argparse.Namespace, settings: Settings) -> int:
    if args.action == "create":
        try:
            roles = parse_roles(r.strip() for r in args.roles.split(",") if r.strip())
        except ValueError as exc:
            print(f"orchestrator keys: {exc}")
            return 2
        if not roles:
            print("orchestrator keys: --roles must name at least one role")
            return 2
        if not args.redis:
            key = generate_key()
            role_list = ", ".join(f'"{r.value}"' for r in sorted(roles))
            print(f"key (shown once; give it to the client): {key}\n")
            print("add to the ORCH_CONFIG file:\n")
            print(f"[access.keys.{args.id}]")
            print(f'hash = "{hash_key(key)}"')
            print(f'tenant = "{args.tenant}"')
            print(f"roles = [{role_list}]")
            return 0
    if not settings.redis_url:
        print("orchestrator keys: REDIS_URL is not set (keys in Redis need it)")
        return 2
    # Here, not at the top: `orchestrator serve` imports this module too, and a service
    # on the memory store never loads redis-py.
    from orchestrator.access.keys_redis import RedisKeyStore
    from state.connect import connect

    client = connect(
        settings.redis_url,
        connect_timeout_s=settings.redis_connect_timeout_s,
        command_timeout_s=settings.redis_timeout_s,
    )
    store = RedisKeyStore(
        client, prefix=settings.key_prefix, default_limits=settings.access.default_limits
    )
    try:
        if args.action == "create":
            key = await store.create(key_id=args.id, tenant=args.tenant, roles=roles)
            print(f"key (shown once; give it to the client): {key}")
            print(f"stored in Redis as {args.id!r} (tenant {args.tenant!r})")
            return 0
        if args.action == "list":
            for record in await store.list():
                roles_text = ",".join(sorted(r.value for r in record.roles))
                print(f"{record.key_id}\ttenant={record.tenant}\troles={roles_text}")
            return 0
        if await store.revoke(args.id):
            print(f"revoked {args.id!r} (replicas stop accepting it within seconds)")
            return 0
        print(f"orchestrator keys: no key {args.id!r} in Redis")
        return 1
    finally:
        await client.aclose()
