"""The safe default: without keys the service is open, so it may listen on loopback only."""

from __future__ import annotations

import ipaddress

from orchestrator.access.config import AccessConfig
from orchestrator.errors import StartupError


class UnsafeExposure(StartupError):
    """No API key is configured and the address is reachable from other machines."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to anything


def access_mode(access: AccessConfig, host: str) -> str:
    """One line for the start-up banner; UnsafeExposure when start-up must stop."""
    if access.enabled:
        where = f"{len(access.keys)} key(s) from the config file"
        if access.redis_keys:
            where += " and keys in Redis"
        return f"access: API keys required ({where})"
    if is_loopback(host):
        return (
            "access: OPEN - no API keys configured, so every request acts as admin; "
            "listening on loopback only"
        )
    if access.insecure:
        return (
            f"access: OPEN on {host} - no API keys configured and ORCH_INSECURE/--insecure "
            "given: anyone who can reach this address is admin"
        )
    raise UnsafeExposure(
        f"refusing to listen on {host} without API keys: anyone who can reach it could "
        "cancel workflows and force breakers open. Configure keys ([access.keys] in "
        "ORCH_CONFIG, see the README), bind 127.0.0.1, or pass --insecure / ORCH_INSECURE=1."
    )
