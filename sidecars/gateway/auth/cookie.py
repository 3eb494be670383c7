"""The admin cookie: HMAC-SHA256 signed, expiry inside, honoured only from allowlisted IPs.

Format: ``v1.<key_id>.<expires unix s>.<base64url signature>``; the signature covers the first
three fields, so neither the key id nor the expiry can be changed without the secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from levibot.errors import ConfigError
from sidecars.gateway.auth.tokens import AuthError

COOKIE_NAME = "lb_admin"

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_allowlist(cidrs: Iterable[str]) -> tuple[IpNetwork, ...]:
    """Return the networks of ``cidrs``; a bad entry is a ``ConfigError`` naming it."""
    out: list[IpNetwork] = []
    for cidr in cidrs:
        try:
            out.append(ipaddress.ip_network(cidr, strict=False))
        except ValueError as exc:
            raise ConfigError(
                f"admin_ip_allowlist: {exc}", path="$.gateway.admin_ip_allowlist"
            ) from None
    return tuple(out)


def ip_allowed(ip: str | None, networks: tuple[IpNetwork, ...]) -> bool:
    """Return True when ``ip`` lies in one of ``networks``."""
    if not ip:
        return False
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return any(addr.version == net.version and addr in net for net in networks)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class AdminCookie:
    """Make and check admin cookies."""

    secret: str
    allowlist: tuple[IpNetwork, ...]
    ttl_s: int = 3600
    now: Callable[[], float] = time.time
    _key: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # A key of its own, derived from the JWT secret: a token cannot pass for a cookie.
        self._key = hmac.new(self.secret.encode(), b"levibot-admin-cookie", hashlib.sha256).digest()

    def _sign(self, body: str) -> str:
        return _b64(hmac.new(self._key, body.encode(), hashlib.sha256).digest())

    def make(self, key_id: str) -> str:
        """Return a cookie value for ``key_id`` that expires after ``ttl_s``."""
        body = f"v1.{key_id}.{int(self.now()) + self.ttl_s}"
        return f"{body}.{self._sign(body)}"

    def verify(self, value: str, ip: str | None) -> str:
        """Return the key id of a valid cookie presented from an allowed IP; else ``AuthError``."""
        if not ip_allowed(ip, self.allowlist):
            raise AuthError("ip_not_allowed", "the admin cookie is not accepted from this address")
        parts = value.split(".")
        if len(parts) != 4 or parts[0] != "v1":
            raise AuthError("cookie_invalid", "malformed admin cookie")
        body = ".".join(parts[:3])
        if not hmac.compare_digest(parts[3], self._sign(body)):
            raise AuthError("cookie_invalid", "bad admin cookie signature")
        try:
            expires = int(parts[2])
        except ValueError:
            raise AuthError("cookie_invalid", "malformed admin cookie") from None
        if expires <= self.now():
            raise AuthError("cookie_expired", "admin cookie expired")
        return parts[1]
