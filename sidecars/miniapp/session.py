"""Session tokens for the Mini App: short-lived HS256 JWTs the gateway accepts as bearer tokens.

Contract shared with the gateway: signed with ``session_secret`` (HS256); claims ``sub`` =
``"tg:<telegram user id>"`` (``"tg:demo"`` after the demo's sign-in link), ``scopes`` =
``["read"]`` or ``["read", "trade", "admin"]`` for admins, ``iat`` and ``exp`` (5 minutes
later), ``iss`` = ``"levibot-miniapp"``, ``name``.
"""

from __future__ import annotations

import time
from typing import Any

import jwt

ALGORITHM = "HS256"
ISSUER = "levibot-miniapp"
TOKEN_TTL_S = 300
READ_SCOPES = ("read",)
ADMIN_SCOPES = ("read", "trade", "admin")


def issue_session_token(
    user_id: int | str,
    *,
    admin: bool,
    secret: bytes,
    name: str = "",
    now: float | None = None,
    ttl_s: int = TOKEN_TTL_S,
) -> str:
    """Return a signed session token for Telegram user ``user_id`` (or ``"demo"``)."""
    iat = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "sub": f"tg:{user_id}",
        "scopes": list(ADMIN_SCOPES if admin else READ_SCOPES),
        "iat": iat,
        "exp": iat + ttl_s,
        "iss": ISSUER,
        "name": name,
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify_session_token(token: str, secret: bytes) -> dict[str, Any]:
    """Return the claims of a valid, unexpired token; raise ``jwt.InvalidTokenError`` otherwise."""
    claims: dict[str, Any] = jwt.decode(
        token,
        secret,
        algorithms=[ALGORITHM],
        issuer=ISSUER,
        options={"require": ["sub", "exp", "iat", "scopes"]},
    )
    return claims
