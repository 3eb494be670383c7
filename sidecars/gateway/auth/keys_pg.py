"""API keys in PostgreSQL's ``api_keys`` table (created by the store's migration 0001)."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import asyncpg

from sidecars.gateway.auth.keys import ApiKey, ApiKeyError

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")


def _ts(value: dt.datetime | None) -> float | None:
    return None if value is None else value.timestamp()


class PostgresKeyStore:
    """Keys in ``table`` (``key_id text pk, hash text, scopes text[], created_at, revoked_at``)."""

    def __init__(self, pool: Any, table: str, has_name: bool) -> None:
        self._pool = pool
        self._table = table
        self._has_name = has_name

    @classmethod
    async def connect(cls, dsn: str, *, table: str = "api_keys") -> PostgresKeyStore:
        """Connect, create the table when it is missing and return the store."""
        if not _IDENT.match(table):
            raise ApiKeyError(f"invalid api key table name: {table!r}")
        try:
            pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
        except (OSError, asyncpg.PostgresError) as exc:
            raise ApiKeyError(f"cannot connect to PostgreSQL for API keys: {exc}") from None
        async with pool.acquire() as conn:
            # The table belongs to the store's migrations (0001_init.sql); never create it here,
            # or a later `levibot db migrate` would fail on it.
            exists = await conn.fetchval("SELECT to_regclass($1)", table) is not None
            schema, _, name = table.rpartition(".")
            has_name = await conn.fetchval(
                "SELECT count(*) > 0 FROM information_schema.columns"
                " WHERE table_name = $1 AND column_name = 'name'"
                " AND table_schema = coalesce(nullif($2, ''), current_schema())",
                name,
                schema,
            )
        if not exists:
            await pool.close()
            raise ApiKeyError(f"table {table} does not exist; run `levibot db migrate` first")
        return cls(pool, table, bool(has_name))

    def _record(self, row: Any) -> ApiKey:
        return ApiKey(
            key_id=row["key_id"],
            hash=row["hash"],
            scopes=tuple(row["scopes"]),
            name=row["name"] if self._has_name else "",
            created_at=_ts(row["created_at"]) or 0.0,
            revoked_at=_ts(row["revoked_at"]),
        )

    def _columns(self) -> str:
        return "key_id, hash, scopes, created_at, revoked_at" + (", name" if self._has_name else "")

    async def add(self, record: ApiKey) -> None:
        created = dt.datetime.fromtimestamp(record.created_at, dt.UTC)
        if self._has_name:
            await self._pool.execute(
                f"INSERT INTO {self._table} (key_id, hash, scopes, created_at, name)"
                " VALUES ($1, $2, $3, $4, $5)",
                record.key_id, record.hash, list(record.scopes), created, record.name,
            )  # fmt: skip
        else:
            await self._pool.execute(
                f"INSERT INTO {self._table} (key_id, hash, scopes, created_at)"
                " VALUES ($1, $2, $3, $4)",
                record.key_id, record.hash, list(record.scopes), created,
            )  # fmt: skip

    async def get(self, key_id: str) -> ApiKey | None:
        row = await self._pool.fetchrow(
            f"SELECT {self._columns()} FROM {self._table} WHERE key_id = $1", key_id
        )
        return None if row is None else self._record(row)

    async def list(self) -> list[ApiKey]:
        rows = await self._pool.fetch(
            f"SELECT {self._columns()} FROM {self._table} ORDER BY created_at"
        )
        return [self._record(r) for r in rows]

    async def revoke(self, key_id: str) -> bool:
        status = await self._pool.execute(
            f"UPDATE {self._table} SET revoked_at = coalesce(revoked_at, now()) WHERE key_id = $1",
            key_id,
        )
        return bool(status.endswith(" 1"))

    async def close(self) -> None:
        await self._pool.close()
