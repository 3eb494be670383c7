"""Versioned migrations against the shared PostgreSQL, each test in a database of its own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from levibot.cli import main
from levibot.storage.migrate import Migration, MigrationError, checksum, discover, migrate, status
from levibot.storage.testing import database

pytestmark = pytest.mark.integration


@pytest.fixture
def dsn() -> Iterator[str]:
    with database() as url:
        yield url


async def _tables(conn: asyncpg.Connection) -> set[str]:
    rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    return {r["tablename"] for r in rows}


@pytest.mark.anyio
async def test_migrate_applies_every_file_once_and_is_idempotent(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        first = await migrate(conn)
        assert [m.version for m in first] == [m.version for m in discover()]
        assert await migrate(conn) == []
        tables = await _tables(conn)
        assert {
            "ticks",
            "bars",
            "features",
            "signals",
            "orders",
            "fills",
            "equity",
            "events",
            "audit_log",
            "models",
            "api_keys",
            "schema_migrations",
        } <= tables
        assert await conn.fetchval("SELECT value FROM levibot_meta WHERE key='ticks_mode'") == (
            "native"
        )
        assert (
            await conn.fetchval("SELECT relkind::text FROM pg_class WHERE relname = 'ticks'") == "p"
        )  # a partitioned table: the native path
        rows = await conn.fetch("SELECT version, checksum FROM schema_migrations ORDER BY 1")
        assert [(r["version"], r["checksum"]) for r in rows] == [
            (m.version, m.checksum) for m in discover()
        ]
        assert {s.state for s in await status(conn)} == {"applied"}
    finally:
        await conn.close()


@pytest.mark.anyio
async def test_checksum_drift_is_detected_before_anything_is_applied(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
        edited = [
            Migration(m.version, m.name, m.sql + "\n-- edited", checksum(m.sql + "\n-- edited"))
            if m.version == 1
            else m
            for m in discover()
        ]
        later = Migration(9000, "9000_later", "CREATE TABLE later (x int)", checksum("x"))
        with pytest.raises(MigrationError, match=r"checksum drift.*0001_init"):
            await migrate(conn, [*edited, later])
        assert "later" not in await _tables(conn)
        states = {s.name: s.state for s in await status(conn, [*edited, later])}
        # Every other file on disk stays applied, however many later migrations exist.
        others = {m.name: "applied" for m in discover()}
        assert states == {**others, "0001_init": "drift", "9000_later": "pending"}
    finally:
        await conn.close()


@pytest.mark.anyio
async def test_failed_migration_rolls_back_and_is_not_recorded(dsn: str, tmp_path: Path) -> None:
    (tmp_path / "0500_good.sql").write_text("CREATE TABLE good (x int);")
    (tmp_path / "0501_bad.sql").write_text("CREATE TABLE half (x int); SELEC broken;")
    migrations = discover([Path(discover.__globals__["MIGRATIONS_DIR"]), tmp_path])
    conn = await asyncpg.connect(dsn)
    try:
        with pytest.raises(MigrationError, match="0501_bad"):
            await migrate(conn, migrations)
        tables = await _tables(conn)
        assert "good" in tables and "half" not in tables
        versions = [r[0] for r in await conn.fetch("SELECT version FROM schema_migrations")]
        assert 500 in versions and 501 not in versions
    finally:
        await conn.close()


def test_bad_migration_file_names_are_refused(tmp_path: Path) -> None:
    (tmp_path / "1_x.sql").write_text("")
    with pytest.raises(MigrationError, match="NNNN_name"):
        discover([tmp_path])
    (tmp_path / "1_x.sql").unlink()
    (tmp_path / "0001_dup.sql").write_text("")
    with pytest.raises(MigrationError, match="version 1"):
        discover([Path(discover.__globals__["MIGRATIONS_DIR"]), tmp_path])


def test_cli_db_migrate_then_status(dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "status", "--dsn", dsn]) == 1  # pending
    assert "pending" in capsys.readouterr().out
    assert main(["db", "migrate", "--dsn", dsn]) == 0
    out = capsys.readouterr().out
    assert "applied 0001_init" in out and "ticks partitioning: native" in out
    assert main(["db", "migrate", "--dsn", dsn]) == 0
    assert "0 migration(s) applied" in capsys.readouterr().out
    assert main(["db", "status", "--dsn", dsn]) == 0
    assert "pending" not in capsys.readouterr().out


def test_cli_db_without_a_dsn_or_server_fails_cleanly(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("LEVIBOT__STORAGE__POSTGRES_DSN", "LEVIBOT__STORE__POSTGRES_DSN", "DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    assert main(["db", "migrate"]) == 2
    assert "no PostgreSQL DSN" in capsys.readouterr().err
    assert main(["db", "status", "--dsn", "postgresql://postgres:secret@127.0.0.1:1/x"]) == 2
    err = capsys.readouterr().err
    assert "cannot connect" in err and "secret" not in err
