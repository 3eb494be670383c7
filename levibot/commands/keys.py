"""``levibot keys create|list|revoke``: the gateway's API keys (shown once, stored hashed)."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from pathlib import Path
from typing import Any

import anyio

from levibot.commands.run import add_common


def _settings(args: argparse.Namespace) -> tuple[str, str, str]:
    """Return (postgres DSN, data dir, pepper): flags first, then the gateway's own settings."""
    from levibot.commands.run import config_path
    from levibot.settings import load_settings, with_storage

    settings = load_settings(config_path(args))
    gateway = with_storage(settings.actor_config("gateway"), settings.storage, data_dir="")
    dsn = args.dsn if args.dsn is not None else gateway.postgres_dsn
    return str(dsn), str(args.data_dir or gateway.data_dir), str(gateway.key_pepper)


class _Quiet:
    """A logger that drops everything: the CLI prints its own output."""

    def info(self, *args: Any, **kwargs: Any) -> None:
        pass


def _when(ts: float | None) -> str:
    return (
        "-" if ts is None else dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    )


async def _run(args: argparse.Namespace) -> int:
    from sidecars.gateway.auth import AuditLog, new_key, open_key_store

    dsn, data_dir, pepper = _settings(args)
    store = await open_key_store(dsn, data_dir)
    audit = AuditLog(Path(data_dir) / "audit.jsonl", _Quiet())
    who = f"cli:{os.environ.get('USER', 'unknown')}"
    try:
        if args.action == "create":
            plaintext, record = new_key(args.name, args.scopes.split(","), pepper)
            await store.add(record)
            audit.record(who, "", "key.create", key_id=record.key_id, scopes=list(record.scopes))
            print(f"key id:  {record.key_id}")
            print(f"scopes:  {','.join(record.scopes)}")
            print(f"api key: {plaintext}")
            print("Store it now: it is shown only once and cannot be recovered.", file=sys.stderr)
        elif args.action == "list":
            keys = await store.list()
            print(f"{'KEY ID':<14}{'NAME':<20}{'SCOPES':<20}{'CREATED':<22}REVOKED")
            for k in keys:
                print(f"{k.key_id:<14}{k.name[:19]:<20}{','.join(k.scopes):<20}"
                      f"{_when(k.created_at):<22}{_when(k.revoked_at)}")  # fmt: skip
        else:
            from sidecars.gateway.auth import ApiKeyError

            if not await store.revoke(args.key_id):
                raise ApiKeyError(f"no API key with id {args.key_id!r}")
            audit.record(who, "", "key.revoke", key_id=args.key_id)
            print(f"revoked {args.key_id}")
    finally:
        await store.close()
    return 0


def run(args: argparse.Namespace) -> int:
    """Run the ``keys`` sub-command."""
    return anyio.run(_run, args)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``levibot keys``."""
    parser = sub.add_parser("keys", help="manage the gateway's API keys")
    add_common(parser)
    parser.add_argument("--data-dir", default=None, help="where keys.json lives (no DSN)")
    parser.add_argument("--dsn", default=None, help="PostgreSQL DSN (api_keys table)")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = actions.add_parser("create", help="create a key and print it once")
    create.add_argument("--name", required=True, help="who or what the key is for")
    create.add_argument("--scopes", default="read", help="comma-separated: read,trade,admin")
    actions.add_parser("list", help="list keys (ids, scopes, created, revoked)")
    revoke = actions.add_parser("revoke", help="revoke a key")
    revoke.add_argument("key_id")
    parser.set_defaults(func=run)
