"""Who is calling: resolve a request's credential into a ``Principal`` with scopes.

Accepted credentials, first match wins: ``Authorization: Bearer <JWT access token>``,
``X-API-Key: lb_...`` (or ``Authorization: ApiKey lb_...``), the ``lb_admin`` cookie (from an
allowlisted IP only) and, for the websocket where browsers cannot set headers, ``?token=<JWT>``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from sidecars.gateway.auth.cookie import COOKIE_NAME, AdminCookie
from sidecars.gateway.auth.keys import ApiKey, KeyStore, effective_scopes, parse_key, verify_secret
from sidecars.gateway.auth.tokens import AuthError, TokenLedger


@dataclass(frozen=True)
class Principal:
    """An authenticated caller."""

    subject: str  # key id, or ``tg:<user id>`` for a Mini App session
    scopes: frozenset[str]
    via: str  # "jwt" | "api_key" | "cookie"

    @property
    def key_id(self) -> str:
        """The API key id behind this principal ("" for a Mini App session)."""
        return "" if self.subject.startswith("tg:") else self.subject


@dataclass
class Authenticator:
    """Check credentials against the key store, the token ledger and the cookie signer."""

    keys: KeyStore
    ledger: TokenLedger
    cookie: AdminCookie
    pepper: str = ""
    now: Callable[[], float] = time.time  # against key expiries

    async def _key(self, key_id: str) -> ApiKey:
        record = await self.keys.get(key_id)
        if record is None:
            raise AuthError("key_unknown", "the API key behind this credential does not exist")
        if record.revoked:
            raise AuthError("key_revoked", "the API key behind this credential was revoked")
        if record.expired(self.now()):
            raise AuthError("key_expired", "the API key behind this credential has expired")
        return record

    async def api_key(self, plaintext: str) -> Principal:
        """Return the principal of an API key; raise ``AuthError`` when it is bad or revoked."""
        parsed = parse_key(plaintext.strip())
        if parsed is None:
            raise AuthError("key_invalid", "malformed API key")
        key_id, secret = parsed
        record = await self.keys.get(key_id)
        if record is None or not verify_secret(record.hash, secret, self.pepper):
            raise AuthError("key_invalid", "unknown API key")
        if record.revoked:
            raise AuthError("key_revoked", "this API key was revoked")
        if record.expired(self.now()):
            raise AuthError("key_expired", "this API key has expired; use its successor")
        return Principal(key_id, effective_scopes(record.scopes), "api_key")

    async def bearer(self, token: str) -> Principal:
        """Return the principal of an access token, checking its key is still valid."""
        claims = await self.ledger.verify(token)
        if not claims.sub.startswith("tg:"):
            await self._key(claims.sub)
        return Principal(claims.sub, effective_scopes(claims.scopes), "jwt")

    async def request(self, request: web.Request, *, allow_query_token: bool = False) -> Principal:
        """Return the principal of ``request``; raise ``AuthError`` when it has no valid one."""
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if header:
            if scheme.lower() == "bearer" and value:
                return await self.bearer(value)
            if scheme.lower() == "apikey" and value:
                return await self.api_key(value)
            raise AuthError(
                "auth_scheme", "Authorization must be 'Bearer <token>' or 'ApiKey <key>'"
            )
        api_key = request.headers.get("X-API-Key")
        if api_key is not None:
            return await self.api_key(api_key)
        cookie = request.cookies.get(COOKIE_NAME)
        if cookie is not None:
            key_id = self.cookie.verify(cookie, request.remote)
            record = await self._key(key_id)
            return Principal(key_id, effective_scopes(record.scopes), "cookie")
        token = request.query.get("token") if allow_query_token else None
        if token:
            return await self.bearer(token)
        raise AuthError("auth_required", "credentials required: a bearer token or an API key")
