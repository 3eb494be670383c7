"""``levibot db migrate`` and ``levibot db status``: the PostgreSQL schema."""

from __future__ import annotations

import argparse
import asyncio
import os
from typing import Any

from levibot.commands.run import add_common, config_path
from levibot.errors import LevibotError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``db`` command and its sub-commands."""
    parser = sub.add_parser("db", help="manage the PostgreSQL schema")
    db_sub = parser.add_subparsers(dest="db_command", metavar="ACTION")
    for name, func, help_ in (
        ("migrate", _migrate, "apply pending migrations"),
        ("status", _status, "list migrations and whether they are applied"),
    ):
        p = db_sub.add_parser(name, help=help_)
        p.add_argument(
            "--dsn", default="", help="PostgreSQL DSN (default: the config's postgres_dsn)"
        )
        add_common(p)
        p.set_defaults(func=func)
    parser.set_defaults(func=lambda args: parser.print_help() or 2)


def resolve_dsn(explicit: str, config: str | None = None, settings: Any = None) -> str:
    """Return ``--dsn``, else the config's DSN (``settings`` when the caller has them loaded,
    else ``config`` or ./config.toml with the environment applied: ``[storage]`` then
    ``[store]`` ``postgres_dsn``); raise when there is none."""
    from levibot.settings import load_settings

    if not explicit and settings is None:
        settings = load_settings(config, environ=os.environ)
    dsn = explicit or settings.postgres_dsn
    if not dsn:
        raise LevibotError(
            "no PostgreSQL DSN: pass --dsn, or set [storage] postgres_dsn "
            "(LEVIBOT__STORAGE__POSTGRES_DSN)"
        )
    return dsn


async def _connect(dsn: str) -> Any:
    import asyncpg

    try:
        return await asyncpg.connect(dsn, timeout=10)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        # The DSN may hold a password: name the error, not the DSN.
        raise LevibotError(f"cannot connect to PostgreSQL: {exc}") from None


async def _run_migrate(dsn: str) -> int:
    from levibot.storage.migrate import migrate

    conn = await _connect(dsn)
    try:
        applied = await migrate(conn)
        mode = await conn.fetchval("SELECT value FROM levibot_meta WHERE key = 'ticks_mode'")
    finally:
        await conn.close()
    for m in applied:
        print(f"applied {m.name}")
    print(f"{len(applied)} migration(s) applied; ticks partitioning: {mode}")
    return 0


async def _run_status(dsn: str) -> int:
    from levibot.storage.migrate import status

    conn = await _connect(dsn)
    try:
        rows = await status(conn)
    finally:
        await conn.close()
    for s in rows:
        when = s.applied_at.isoformat(timespec="seconds") if s.applied_at else "-"
        print(f"{s.version:04d}  {s.state:8}  {when:25}  {s.name}")
    return 1 if any(s.state in ("pending", "drift") for s in rows) else 0


def _migrate(args: argparse.Namespace) -> int:
    return asyncio.run(_run_migrate(resolve_dsn(args.dsn, config_path(args))))


def _status(args: argparse.Namespace) -> int:
    return asyncio.run(_run_status(resolve_dsn(args.dsn, config_path(args))))
