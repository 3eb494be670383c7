"""Short-lived JWT access tokens and single-use, rotating refresh tokens with reuse detection.

An access token (HS256, 5 minutes by default) carries the key id, its scopes and the refresh
*family* it was issued in. Each refresh token is single-use: redeeming it returns a new pair in the
same family and marks the old one used. Presenting a used refresh token again means it leaked, so
the whole family is revoked — its refresh tokens and the access tokens issued from it.

``TokenService`` signs and checks the JWTs and, on its own, keeps the families in its memory (the
embedded mode: one process, forgotten on restart). The gateway talks to a ``TokenLedger``:
``LocalLedger`` wraps that memory, ``tokens_pg.PostgresLedger`` keeps the families and their
revocations in PostgreSQL, where every replica sees them and a restart forgets nothing.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

import jwt
import msgspec

from levibot.errors import LevibotError

_ALGORITHM = "HS256"
#: The issuer of Mini App session tokens (``sidecars.miniapp.session.ISSUER``).
MINIAPP_ISSUER = "levibot-miniapp"
#: The family of every Mini App session: they are not issued here, so not revocable one by one.
MINIAPP_FAMILY = "miniapp"


class AuthError(LevibotError):
    """A credential was refused; ``code`` says why (``token_expired``, ``token_reused``...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Claims(msgspec.Struct, frozen=True, kw_only=True):
    """What a verified access token says."""

    sub: str  # the API key id (or ``tg:<user id>`` for a Mini App session)
    scopes: tuple[str, ...]
    family: str
    exp: int


class TokenPair(msgspec.Struct, frozen=True, kw_only=True):
    """An access token, its refresh token and the access token's lifetime in seconds."""

    access_token: str
    refresh_token: str
    expires_in: int
    scopes: tuple[str, ...]
    token_type: str = "bearer"


@dataclass
class _Refresh:
    family: str
    sub: str
    scopes: tuple[str, ...]
    expires: float
    used: bool = False


@dataclass
class TokenService:
    """Issue and verify tokens. ``now`` is injectable so tests can make tokens expire."""

    secret: str
    access_ttl_s: int = 300
    refresh_ttl_s: int = 86_400
    now: Callable[[], float] = time.time
    _refresh: dict[str, _Refresh] = field(default_factory=dict)
    _revoked_families: set[str] = field(default_factory=set)

    @staticmethod
    def digest(token: str) -> str:
        """Return the stored form of a refresh token: a dump of the table grants nothing."""
        return hashlib.sha256(token.encode()).hexdigest()

    def _access(self, sub: str, scopes: tuple[str, ...], family: str, ttl: int) -> str:
        now = int(self.now())
        payload = {
            "sub": sub,
            "scopes": list(scopes),
            "fam": family,
            "iat": now,
            "exp": now + ttl,
            "jti": uuid.uuid4().hex,
            "typ": "access",
        }
        return jwt.encode(payload, self.secret, algorithm=_ALGORITHM)

    def mint(self, sub: str, scopes: tuple[str, ...], family: str) -> tuple[TokenPair, str]:
        """Return a new pair in ``family`` and its refresh token's digest, recording nothing."""
        refresh = f"rt_{secrets.token_urlsafe(32)}"
        pair = TokenPair(
            access_token=self._access(sub, scopes, family, self.access_ttl_s),
            refresh_token=refresh,
            expires_in=self.access_ttl_s,
            scopes=scopes,
        )
        return pair, self.digest(refresh)

    def _pair(self, sub: str, scopes: tuple[str, ...], family: str) -> TokenPair:
        pair, digest = self.mint(sub, scopes, family)
        self._refresh[digest] = _Refresh(family, sub, scopes, self.now() + self.refresh_ttl_s)
        self._prune()
        return pair

    def issue(self, sub: str, scopes: Iterable[str]) -> TokenPair:
        """Return a new token pair starting a new refresh family."""
        return self._pair(sub, tuple(scopes), uuid.uuid4().hex)

    def refresh(self, token: str) -> TokenPair:
        """Redeem a refresh token for a new pair; a reused token revokes its whole family."""
        record = self._refresh.get(self.digest(token))
        if record is None:
            raise AuthError("refresh_invalid", "unknown refresh token")
        if record.family in self._revoked_families:
            raise AuthError("token_revoked", "this token family was revoked")
        if record.used:
            self.revoke_family(record.family)
            raise AuthError(
                "refresh_reused", "refresh token already used; the token family is revoked"
            )
        if record.expires <= self.now():
            raise AuthError("refresh_expired", "refresh token expired; get a new token")
        record.used = True
        return self._pair(record.sub, record.scopes, record.family)

    def revoke_family(self, family: str) -> None:
        """Revoke every token of ``family``."""
        self._revoked_families.add(family)

    def revoke(self, token: str) -> bool:
        """Revoke the family of a refresh or access token; False when the token names none."""
        family = self.family_of(token)
        if family is None:
            record = self._refresh.get(self.digest(token))
            family = None if record is None else record.family
        if family is None:
            return False
        self.revoke_family(family)
        return True

    def family_of(self, token: str) -> str | None:
        """Return the revocable family of a valid access token; None for anything else."""
        if token.startswith("rt_"):
            return None
        try:
            claims = self.decode(token)
        except AuthError:
            return None
        return None if claims.family == MINIAPP_FAMILY else claims.family

    def verify(self, token: str) -> Claims:
        """Return the claims of a valid, unrevoked access token; raise ``AuthError`` otherwise."""
        claims = self.decode(token)
        if claims.family in self._revoked_families:
            raise AuthError("token_revoked", "this token was revoked")
        return claims

    def decode(self, token: str) -> Claims:
        """Return the claims of a validly signed, unexpired access token, revoked or not.

        Besides its own access tokens it accepts the Mini App's session tokens
        (``iss="levibot-miniapp"``, ``sub="tg:<user id>"``; see ``sidecars.miniapp.session``),
        which the Mini App signs with the same secret.
        """
        try:
            payload = jwt.decode(
                token,
                self.secret,
                algorithms=[_ALGORITHM],
                options={"require": ["exp", "sub"], "verify_exp": False, "verify_iss": False},
            )
        except jwt.PyJWTError as exc:
            raise AuthError("token_invalid", f"invalid access token: {exc}") from None
        # Expiry is checked here, against the injectable clock, rather than by PyJWT.
        if not isinstance(payload.get("exp"), int) or payload["exp"] <= self.now():
            raise AuthError("token_expired", "access token expired; refresh it")
        scopes = payload.get("scopes")
        if not isinstance(scopes, list):
            raise AuthError("token_invalid", "token has no scopes")
        sub = str(payload["sub"])
        if payload.get("iss") == MINIAPP_ISSUER:
            if not sub.startswith("tg:"):
                raise AuthError("token_invalid", "a Mini App session must name a Telegram user")
            family = MINIAPP_FAMILY
        elif payload.get("typ") == "access" and isinstance(payload.get("fam"), str):
            family = payload["fam"]
            if sub.startswith("tg:"):
                raise AuthError("token_invalid", "not an access token")
        else:
            raise AuthError("token_invalid", "not an access token")
        return Claims(
            sub=sub, scopes=tuple(str(x) for x in scopes), family=family, exp=payload["exp"]
        )

    def _prune(self) -> None:
        # Keep the table bounded: drop refresh records long past expiry.
        if len(self._refresh) < 10_000:
            return
        horizon = self.now() - self.refresh_ttl_s
        for digest in [d for d, r in self._refresh.items() if r.expires < horizon]:
            del self._refresh[digest]


class TokenLedger(Protocol):
    """Where refresh-token families and their revocations live: issue, rotate, check, revoke."""

    async def issue(self, sub: str, scopes: Iterable[str]) -> TokenPair:
        """Return a new token pair starting a new refresh family."""
        ...

    async def refresh(self, token: str) -> TokenPair:
        """Redeem a refresh token for a new pair; a reused token revokes its whole family."""
        ...

    async def verify(self, token: str) -> Claims:
        """Return the claims of a valid access token whose family is not revoked."""
        ...

    async def revoke(self, token: str) -> bool:
        """Revoke the family of a refresh or access token; False when the token names none."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


@dataclass
class LocalLedger:
    """The embedded ledger: ``TokenService``'s own memory (one process, gone on restart)."""

    tokens: TokenService

    async def issue(self, sub: str, scopes: Iterable[str]) -> TokenPair:
        return self.tokens.issue(sub, scopes)

    async def refresh(self, token: str) -> TokenPair:
        return self.tokens.refresh(token)

    async def verify(self, token: str) -> Claims:
        return self.tokens.verify(token)

    async def revoke(self, token: str) -> bool:
        return self.tokens.revoke(token)

    async def close(self) -> None:
        pass


async def open_token_ledger(postgres_dsn: str, tokens: TokenService) -> TokenLedger:
    """Return the PostgreSQL ledger when a DSN is given, else the process's own memory."""
    if postgres_dsn:
        from sidecars.gateway.auth.tokens_pg import PostgresLedger

        return await PostgresLedger.connect(postgres_dsn, tokens)
    return LocalLedger(tokens)
