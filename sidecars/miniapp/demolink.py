"""The one-time sign-in link of ``levibot demo``: an ordinary browser opens the Mini App as admin.

As a notebook server does, ``levibot demo`` draws a random token, prints
``http://127.0.0.1:<port>/app#demo=<token>`` and gives the gateway only the token's SHA-256
(``[gateway] demo_token_sha256``). ``POST /auth/demo`` with ``{"token": ...}`` trades it, once,
for an admin session token and an HttpOnly cookie that renews that session (sessions last five
minutes); the token is then spent. The fragment never reaches a server log or a ``Referer``.

Where it works: the route is mounted only when the gateway has a token hash, and the gateway's
config refuses a token hash unless it listens on a loopback address. Each request must also come
from a loopback address, name a loopback host (no DNS rebinding) and carry no proxy header (a
local reverse proxy would make every client look local). Telegram's ``initData`` stays the only
way in everywhere else.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import time
from collections.abc import Callable, Mapping

#: The session's subject is ``tg:demo``: a Mini App session that names no Telegram user.
DEMO_USER = "demo"
COOKIE_NAME = "lb_demo"
RENEW_TTL_S = 12 * 3600  # how long the browser that redeemed the link may renew its session
_PROXY_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Real-IP")


class DemoRefused(Exception):
    """A demo sign-in was refused; ``code`` says why, ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def digest(token: str) -> str:
    """Return the SHA-256 of ``token`` in hex: what the gateway is given instead of the token."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> tuple[str, str]:
    """Return a fresh one-time token and its digest."""
    token = secrets.token_urlsafe(32)
    return token, digest(token)


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (``127.0.0.0/8``, ``::1``)."""
    host = host.strip().strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_name(host_header: str) -> str:
    """Return the host part of a ``Host`` header (``[::1]:8080`` → ``::1``)."""
    if host_header.startswith("["):
        return host_header[1 : host_header.find("]")] if "]" in host_header else host_header
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


def check_local(remote: str | None, headers: Mapping[str, str]) -> None:
    """Raise ``DemoRefused`` (403) unless the request came from this machine, unproxied."""
    if not is_loopback(remote or ""):
        raise DemoRefused(403, "not_local", "the demo sign-in link works only from this machine")
    if any(h in headers for h in _PROXY_HEADERS):
        raise DemoRefused(403, "not_local", "the demo sign-in link is not served through a proxy")
    if not is_loopback(host_name(headers.get("Host", ""))):
        raise DemoRefused(403, "not_local", "the demo sign-in link needs a loopback Host")


class DemoSignIn:
    """Redeem the one-time token once; then renew sessions for the browser that redeemed it."""

    def __init__(
        self,
        token_sha256: str,
        *,
        renew_ttl_s: float = RENEW_TTL_S,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        try:
            self._digest = bytes.fromhex(token_sha256)
        except ValueError:
            raise ValueError("demo_token_sha256 must be a SHA-256 in hex") from None
        if len(self._digest) != 32:
            raise ValueError("demo_token_sha256 must be a SHA-256 in hex (64 digits)")
        self.renew_ttl_s = renew_ttl_s
        self._now = now
        self.spent = False
        self._renewals: dict[bytes, float] = {}  # digest of a renewal cookie → its expiry

    def redeem(self, token: str) -> str:
        """Spend the token; return the renewal secret to set as a cookie."""
        if self.spent:
            raise DemoRefused(
                401, "token_spent",
                "this sign-in link was already used; start `levibot demo` again for a new one",
            )  # fmt: skip
        if not hmac.compare_digest(hashlib.sha256(token.encode()).digest(), self._digest):
            raise DemoRefused(401, "token_invalid", "this is not the demo's sign-in token")
        self.spent = True
        renewal = secrets.token_urlsafe(32)
        self._renewals[hashlib.sha256(renewal.encode()).digest()] = self._now() + self.renew_ttl_s
        return renewal

    def renew(self, renewal: str) -> None:
        """Accept a renewal cookie from the browser that redeemed the link, or raise."""
        expiry = self._renewals.get(hashlib.sha256(renewal.encode()).digest())
        if expiry is None:
            raise DemoRefused(401, "renewal_invalid", "sign in with the demo's link first")
        if expiry <= self._now():
            raise DemoRefused(401, "renewal_expired", "the demo session expired; restart the demo")
