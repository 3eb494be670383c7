"""Refresh-token families and their revocations in PostgreSQL (migration 0004).

Every gateway replica reads and writes the same two tables, so a token revoked on one is refused
by all, a refresh token redeemed on one is spent on all, and a restart forgets nothing.
PostgreSQL rather than Redis: the families must survive a restart of the store too, and a
redemption is one row locked in one transaction (``SELECT ... FOR UPDATE``), so two replicas
racing on the same refresh token cannot both redeem it: the second one sees it used, which is
reuse, and revokes the family.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Iterable
from typing import Any

import asyncpg

from sidecars.gateway.auth.tokens import (
    MINIAPP_FAMILY,
    AuthError,
    Claims,
    TokenPair,
    TokenService,
)

_TABLES = ("auth_token_families", "auth_refresh_tokens")
_PRUNE_EVERY_S = 60.0  # how often one replica deletes long-expired rows (on issue)
_REVOKED_CACHE = 100_000  # families remembered as revoked in this process


def _dt(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


class PostgresLedger:
    """Token families in ``auth_token_families`` and refresh tokens in ``auth_refresh_tokens``.

    Verifying an access token costs one primary-key lookup of its family. A family seen revoked
    is remembered here: revocation is final, so that memory can never be stale.
    """

    def __init__(self, pool: Any, tokens: TokenService) -> None:
        self._pool = pool
        self.tokens = tokens
        self._revoked: set[str] = set()
        self._pruned_at = 0.0

    @classmethod
    async def connect(cls, dsn: str, tokens: TokenService) -> PostgresLedger:
        """Connect to the migrated tables and return the ledger."""
        try:
            pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
        except (OSError, asyncpg.PostgresError) as exc:
            raise AuthError(
                "ledger_unavailable", f"cannot connect to PostgreSQL for token families: {exc}"
            ) from None
        try:
            async with pool.acquire() as conn:
                missing = [
                    t for t in _TABLES if await conn.fetchval("SELECT to_regclass($1)", t) is None
                ]
        except BaseException:
            await pool.close()  # nobody else holds the pool: do not leak its connections
            raise
        if missing:
            await pool.close()
            raise AuthError(
                "ledger_unavailable",
                f"table {missing[0]} does not exist; run `levibot db migrate` first",
            )
        return cls(pool, tokens)

    async def _insert_refresh(self, conn: Any, digest: str, family: str, sub: str,
                              scopes: tuple[str, ...]) -> None:  # fmt: skip
        await conn.execute(
            "INSERT INTO auth_refresh_tokens (digest, family, subject, scopes, expires_at)"
            " VALUES ($1, $2, $3, $4, $5)",
            digest, family, sub, list(scopes), _dt(self.tokens.now() + self.tokens.refresh_ttl_s),
        )  # fmt: skip

    async def issue(self, sub: str, scopes: Iterable[str]) -> TokenPair:
        scopes = tuple(scopes)
        family = uuid.uuid4().hex
        pair, digest = self.tokens.mint(sub, scopes, family)
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO auth_token_families (family, subject) VALUES ($1, $2)", family, sub
            )
            await self._insert_refresh(conn, digest, family, sub, scopes)
        await self._prune()
        return pair

    async def refresh(self, token: str) -> TokenPair:
        now = self.tokens.now()
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT r.family, r.subject, r.scopes, r.expires_at, r.used_at, f.revoked_at"
                " FROM auth_refresh_tokens r JOIN auth_token_families f USING (family)"
                " WHERE r.digest = $1 FOR UPDATE OF r",
                self.tokens.digest(token),
            )
            # The checks in TokenService.refresh's order; the reuse revocation must commit, so
            # it is decided inside the transaction and raised after it.
            if row is None:
                refused = AuthError("refresh_invalid", "unknown refresh token")
            elif row["revoked_at"] is not None:
                refused = AuthError("token_revoked", "this token family was revoked")
            elif row["used_at"] is not None:
                await self._revoke_family(conn, row["family"])
                refused = AuthError(
                    "refresh_reused", "refresh token already used; the token family is revoked"
                )
            elif row["expires_at"].timestamp() <= now:
                refused = AuthError("refresh_expired", "refresh token expired; get a new token")
            else:
                family, sub, scopes = row["family"], row["subject"], tuple(row["scopes"])
                await conn.execute(
                    "UPDATE auth_refresh_tokens SET used_at = now() WHERE digest = $1",
                    self.tokens.digest(token),
                )
                pair, digest = self.tokens.mint(sub, scopes, family)
                await self._insert_refresh(conn, digest, family, sub, scopes)
                return pair
        raise refused

    async def verify(self, token: str) -> Claims:
        claims = self.tokens.decode(token)
        if claims.family == MINIAPP_FAMILY:
            return claims
        if claims.family not in self._revoked:
            revoked = await self._pool.fetchval(
                "SELECT revoked_at IS NOT NULL FROM auth_token_families WHERE family = $1",
                claims.family,
            )
            if revoked is None:
                # Signed with our secret but never recorded (say, by an embedded-mode process).
                raise AuthError("token_invalid", "unknown token family; get a new token")
            if not revoked:
                return claims
            self._remember(claims.family)
        raise AuthError("token_revoked", "this token was revoked")

    async def revoke(self, token: str) -> bool:
        family = self.tokens.family_of(token)
        async with self._pool.acquire() as conn:
            if family is None:
                family = await conn.fetchval(
                    "SELECT family FROM auth_refresh_tokens WHERE digest = $1",
                    self.tokens.digest(token),
                )
            if family is None:
                return False
            return await self._revoke_family(conn, family)

    async def _revoke_family(self, conn: Any, family: str) -> bool:
        status = await conn.execute(
            "UPDATE auth_token_families SET revoked_at = coalesce(revoked_at, now())"
            " WHERE family = $1",
            family,
        )
        self._remember(family)
        return bool(status.endswith(" 1"))

    def _remember(self, family: str) -> None:
        if len(self._revoked) >= _REVOKED_CACHE:
            self._revoked.clear()  # only a cache: PostgreSQL still has every revocation
        self._revoked.add(family)

    async def _prune(self) -> None:
        # A used or revoked refresh token must still be recognised for a while after it expired
        # (reuse detection), as TokenService keeps it: one refresh lifetime past its expiry.
        # A family goes with its last refresh token; its access tokens expired long before.
        if time.monotonic() - self._pruned_at < _PRUNE_EVERY_S:
            return
        self._pruned_at = time.monotonic()
        horizon = _dt(self.tokens.now() - self.tokens.refresh_ttl_s)
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("DELETE FROM auth_refresh_tokens WHERE expires_at < $1", horizon)
            await conn.execute(
                "DELETE FROM auth_token_families f WHERE f.created_at < $1 AND NOT EXISTS"
                " (SELECT 1 FROM auth_refresh_tokens r WHERE r.family = f.family)",
                horizon,
            )

    async def close(self) -> None:
        await self._pool.close()
