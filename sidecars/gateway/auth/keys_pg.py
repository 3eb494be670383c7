"""API keys in PostgreSQL's ``api_keys`` table (migrations 0001 and 0004)."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import asyncpg

from sidecars.gateway.auth.keys import ApiKey, ApiKeyError

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")
_BASE = ("key_id", "hash", "scopes", "created_at", "revoked_at")
#: Added by migration 0004; a table from before it still serves keys without them.
_LATER = ("name", "expires_at", "replaced_by")


def _ts(value: dt.datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def _dt(value: float | None) -> dt.datetime | None:
    return None if value is None else dt.datetime.fromtimestamp(value, dt.UTC)


class PostgresKeyStore:
    """Keys in ``table`` (``key_id text pk, hash, scopes text[], created_at, revoked_at`` and,
    since migration 0004, ``name, expires_at, replaced_by``)."""

    def __init__(self, pool: Any, table: str, columns: frozenset[str]) -> None:
        self._pool = pool
        self._table = table
        self._later = tuple(c for c in _LATER if c in columns)
        self._select = ", ".join((*_BASE, *self._later))

    @classmethod
    async def connect(cls, dsn: str, *, table: str = "api_keys") -> PostgresKeyStore:
        """Connect to the migrated table and return the store."""
        if not _IDENT.match(table):
            raise ApiKeyError(f"invalid api key table name: {table!r}")
        try:
            pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
        except (OSError, asyncpg.PostgresError) as exc:
            raise ApiKeyError(f"cannot connect to PostgreSQL for API keys: {exc}") from None
        try:
            async with pool.acquire() as conn:
                # The table belongs to the store's migrations; never create it here, or a
                # later `levibot db migrate` would fail on it.
                exists = await conn.fetchval("SELECT to_regclass($1)", table) is not None
                schema, _, name = table.rpartition(".")
                rows = await conn.fetch(
                    "SELECT column_name FROM information_schema.columns WHERE table_name = $1"
                    " AND table_schema = coalesce(nullif($2, ''), current_schema())",
                    name,
                    schema,
                )
        except BaseException:
            await pool.close()  # nobody else holds the pool: do not leak its connections
            raise
        if not exists:
            await pool.close()
            raise ApiKeyError(f"table {table} does not exist; run `levibot db migrate` first")
        return cls(pool, table, frozenset(r["column_name"] for r in rows))

    def _needs(self, column: str) -> None:
        if column not in self._later:
            raise ApiKeyError(
                f"table {self._table} has no {column} column; run `levibot db migrate` first"
            )

    def _record(self, row: Any) -> ApiKey:
        return ApiKey(
            key_id=row["key_id"],
            hash=row["hash"],
            scopes=tuple(row["scopes"]),
            name=row["name"] if "name" in self._later else "",
            created_at=_ts(row["created_at"]) or 0.0,
            revoked_at=_ts(row["revoked_at"]),
            expires_at=_ts(row["expires_at"]) if "expires_at" in self._later else None,
            replaced_by=row["replaced_by"] if "replaced_by" in self._later else "",
        )

    async def add(self, record: ApiKey) -> None:
        await self._insert(self._pool, record)

    async def _insert(self, conn: Any, record: ApiKey) -> None:
        values: dict[str, Any] = {
            "key_id": record.key_id,
            "hash": record.hash,
            "scopes": list(record.scopes),
            "created_at": _dt(record.created_at),
        }
        if record.expires_at is not None:
            self._needs("expires_at")
        later = {"name": record.name, "expires_at": _dt(record.expires_at), "replaced_by": ""}
        values.update((c, later[c]) for c in self._later)
        marks = ", ".join(f"${i}" for i in range(1, len(values) + 1))
        await conn.execute(
            f"INSERT INTO {self._table} ({', '.join(values)}) VALUES ({marks})", *values.values()
        )

    async def get(self, key_id: str) -> ApiKey | None:
        row = await self._pool.fetchrow(
            f"SELECT {self._select} FROM {self._table} WHERE key_id = $1", key_id
        )
        return None if row is None else self._record(row)

    async def list(self) -> list[ApiKey]:
        rows = await self._pool.fetch(
            f"SELECT {self._select} FROM {self._table} ORDER BY created_at"
        )
        return [self._record(r) for r in rows]

    async def revoke(self, key_id: str) -> bool:
        status = await self._pool.execute(
            f"UPDATE {self._table} SET revoked_at = coalesce(revoked_at, now()) WHERE key_id = $1",
            key_id,
        )
        return bool(status.endswith(" 1"))

    async def retire(self, key_id: str, at: float) -> ApiKey | None:
        self._needs("expires_at")
        row = await self._pool.fetchrow(
            f"UPDATE {self._table} SET expires_at = $2 WHERE key_id = $1 RETURNING {self._select}",
            key_id,
            _dt(at),
        )
        return None if row is None else self._record(row)

    async def rotate(self, key_id: str, successor: ApiKey, at: float) -> ApiKey | None:
        self._needs("expires_at")
        self._needs("replaced_by")
        async with self._pool.acquire() as conn, conn.transaction():
            # The row lock of this UPDATE serialises concurrent rotations of one key.
            row = await conn.fetchrow(
                f"UPDATE {self._table} SET expires_at = $2, replaced_by = $3"
                f" WHERE key_id = $1 AND replaced_by = '' RETURNING {self._select}",
                key_id,
                _dt(at),
                successor.key_id,
            )
            if row is None:
                return None
            await self._insert(conn, successor)
        return self._record(row)

    async def close(self) -> None:
        await self._pool.close()
