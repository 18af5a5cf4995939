"""Who may do what: API keys, roles, tenants, rate limits (DESIGN.md "Access").

- `principal`: roles, the `Principal` a request acts as, and the per-key limits.
- `keys`: key generation and hashing, and the `KeyStore`s that find a key's record
  (the TOML file's keys, and keys kept in Redis so replicas share them).
- `config`: the `[access]` and `[tenants]` tables of the TOML file.
- `exposure`: the safe default (open only on loopback without keys).

The HTTP side (the middleware, the route -> role table, OpenAPI) lives in `orchestrator/api/`.
"""
