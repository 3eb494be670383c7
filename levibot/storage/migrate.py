"""Versioned SQL migrations: ``NNNN_name.sql`` files, each applied once, in its transaction.

``schema_migrations`` records the version, name and SHA-256 of every applied file. A file whose
content changed after it was applied is checksum drift: ``migrate`` refuses to go on (fix it
with a new migration, never by editing an applied one). Concurrent migrators serialise on an
advisory lock. Other engineers add their own files here with higher numbers.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec

from levibot.errors import LevibotError
from levibot.storage.postgres import is_transient

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_LOCK_KEY = 0x1E71B07  # pg_advisory_lock key of the levibot migrator

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


class MigrationError(LevibotError):
    """The migrations on disk and those recorded in the database disagree."""


class Migration(msgspec.Struct, frozen=True):
    """One migration file."""

    version: int
    name: str
    sql: str
    checksum: str


class MigrationStatus(msgspec.Struct, frozen=True):
    """One migration as the database sees it."""

    version: int
    name: str
    applied_at: datetime | None
    state: str  # "applied" | "pending" | "drift" | "unknown" (in the database, not on disk)


def checksum(sql: str) -> str:
    """Return the checksum recorded for a migration's SQL."""
    return hashlib.sha256(sql.encode()).hexdigest()


def discover(directories: Iterable[str | Path] = (MIGRATIONS_DIR,)) -> list[Migration]:
    """Return the migrations found in ``directories``, ordered by version."""
    found: dict[int, Migration] = {}
    for directory in directories:
        for path in sorted(Path(directory).glob("*.sql")):
            m = _NAME.match(path.name)
            if m is None:
                raise MigrationError(f"{path}: migration files are named NNNN_name.sql")
            version = int(m.group(1))
            if version in found:
                raise MigrationError(f"{path}: version {version} is also {found[version].name}.sql")
            sql = path.read_text()
            found[version] = Migration(version, path.stem, sql, checksum(sql))
    return [found[v] for v in sorted(found)]


async def _applied(conn: Any, *, create: bool = True) -> dict[int, Any]:
    if create:
        await conn.execute(_CREATE_TABLE)
    elif await conn.fetchval("SELECT to_regclass('schema_migrations')") is None:
        return {}
    rows = await conn.fetch("SELECT version, name, checksum, applied_at FROM schema_migrations")
    return {r["version"]: r for r in rows}


def _drift(migrations: Sequence[Migration], applied: dict[int, Any]) -> list[str]:
    return [
        f"{m.name} (applied {applied[m.version]['checksum'][:12]}, file {m.checksum[:12]})"
        for m in migrations
        if m.version in applied and applied[m.version]["checksum"] != m.checksum
    ]


async def migrate(conn: Any, migrations: Sequence[Migration] | None = None) -> list[Migration]:
    """Apply the pending migrations in order on an asyncpg connection; return those applied.

    Raise ``MigrationError`` before applying anything when an applied file has changed.
    """
    migrations = discover() if migrations is None else list(migrations)
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        applied = await _applied(conn)
        drift = _drift(migrations, applied)
        if drift:
            raise MigrationError("checksum drift in applied migrations: " + ", ".join(drift))
        done: list[Migration] = []
        for m in migrations:
            if m.version in applied:
                continue
            try:
                async with conn.transaction():
                    await conn.execute(m.sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum) "
                        "VALUES ($1, $2, $3)",
                        m.version,
                        m.name,
                        m.checksum,
                    )
            except Exception as exc:
                # A lost connection is retried by the caller; a bad migration is the user's.
                if type(exc).__module__.startswith("asyncpg") and not is_transient(exc):
                    raise MigrationError(f"{m.name} failed: {exc}") from exc
                raise
            done.append(m)
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)


async def status(conn: Any, migrations: Sequence[Migration] | None = None) -> list[MigrationStatus]:
    """Return every migration known on disk or in the database, with its state."""
    migrations = discover() if migrations is None else list(migrations)
    applied = await _applied(conn, create=False)
    out: list[MigrationStatus] = []
    on_disk = {m.version for m in migrations}
    for m in migrations:
        row = applied.get(m.version)
        if row is None:
            out.append(MigrationStatus(m.version, m.name, None, "pending"))
        else:
            state = "applied" if row["checksum"] == m.checksum else "drift"
            out.append(MigrationStatus(m.version, m.name, row["applied_at"], state))
    for version, row in applied.items():
        if version not in on_disk:
            out.append(MigrationStatus(version, row["name"], row["applied_at"], "unknown"))
    return sorted(out, key=lambda s: s.version)
