"""``levibot keys create|list|revoke|rotate|expire``: the gateway's API keys (shown once, stored
hashed).

``rotate`` creates a successor with the same name and scopes and retires the old key at a chosen
time (``--overlap`` from now, or ``--retire-at``): both keys work until then, so clients switch
without an outage. With a DSN every gateway replica sees the change at once.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
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


def _moment(at: str | None, after: str | None, at_flag: str, in_flag: str) -> float | None:
    """Return the Unix time of ``at`` (ISO-8601, UTC when no offset) or of ``after`` from now (a
    duration: 90s, 30m, 12h, 7d, 2w); None when neither is given. The flags name them in errors."""
    from levibot.marketdata.timeframe import TimeframeError, parse_timeframe
    from sidecars.gateway.auth import ApiKeyError

    if at is not None:
        try:
            moment = dt.datetime.fromisoformat(at)
        except ValueError:
            raise ApiKeyError(
                f"{at_flag} {at!r}: expected ISO-8601, e.g. 2027-01-31T12:00Z"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)
        return moment.timestamp()
    if after is not None:
        try:
            return time.time() + parse_timeframe(after) / 1e9
        except TimeframeError:
            raise ApiKeyError(f"{in_flag} {after!r}: expected a duration: 30m, 12h, 7d") from None
    return None


async def _run(args: argparse.Namespace) -> int:
    from sidecars.gateway.auth import ApiKeyError, AuditLog, new_key, open_key_store, rotate_key

    dsn, data_dir, pepper = _settings(args)
    store = await open_key_store(dsn, data_dir)
    audit = AuditLog(Path(data_dir) / "audit.jsonl", _Quiet())
    who = f"cli:{os.environ.get('USER', 'unknown')}"
    try:
        if args.action == "create":
            expires = _moment(args.expires_at, args.expires_in, "--expires-at", "--expires-in")
            plaintext, record = new_key(
                args.name, args.scopes.split(","), pepper, expires_at=expires
            )
            await store.add(record)
            audit.record(who, "", "key.create", key_id=record.key_id, scopes=list(record.scopes),
                         expires_at=record.expires_at)  # fmt: skip
            _show(plaintext, record)
        elif args.action == "list":
            keys = await store.list()
            print(f"{'KEY ID':<14}{'NAME':<20}{'SCOPES':<20}{'CREATED':<22}{'REVOKED':<22}"
                  f"{'EXPIRES':<22}REPLACED BY")  # fmt: skip
            for k in keys:
                print(f"{k.key_id:<14}{k.name[:19]:<20}{','.join(k.scopes):<20}"
                      f"{_when(k.created_at):<22}{_when(k.revoked_at):<22}"
                      f"{_when(k.expires_at):<22}{k.replaced_by or '-'}")  # fmt: skip
        elif args.action == "rotate":
            retire = _moment(args.retire_at, args.overlap, "--retire-at", "--overlap")
            assert retire is not None  # --overlap has a default
            expires = _moment(args.expires_at, args.expires_in, "--expires-at", "--expires-in")
            plaintext, record, old = await rotate_key(
                store, args.key_id, retire, pepper, expires_at=expires
            )
            audit.record(who, "", "key.rotate", key_id=old.key_id, successor=record.key_id,
                         retire_at=old.expires_at, expires_at=record.expires_at)  # fmt: skip
            _show(plaintext, record)
            print(f"old key {old.key_id} works until {_when(old.expires_at)}, then only this one.")
        elif args.action == "expire":
            at = _moment(args.at, args.after, "--at", "--in")
            at = time.time() if at is None else at
            record = await store.get(args.key_id)
            if record is None:
                raise ApiKeyError(f"no API key with id {args.key_id!r}")
            if record.expires_at is not None and at > record.expires_at:
                # Later would revive an expired key or stretch a rotation's overlap.
                raise ApiKeyError(
                    f"{args.key_id} already expires at {_when(record.expires_at)}; `keys expire` "
                    "only brings an expiry forward (for a longer life, create a new key)"
                )
            if await store.retire(args.key_id, at) is None:
                raise ApiKeyError(f"no API key with id {args.key_id!r}")
            audit.record(who, "", "key.expire", key_id=args.key_id, expires_at=at)
            print(f"{args.key_id} expires at {_when(at)}")
        else:
            if not await store.revoke(args.key_id):
                raise ApiKeyError(f"no API key with id {args.key_id!r}")
            audit.record(who, "", "key.revoke", key_id=args.key_id)
            print(f"revoked {args.key_id}")
    finally:
        await store.close()
    return 0


def _show(plaintext: str, record: Any) -> None:
    print(f"key id:  {record.key_id}")
    print(f"scopes:  {','.join(record.scopes)}")
    print(f"expires: {_when(record.expires_at)}")
    print(f"api key: {plaintext}")
    print("Store it now: it is shown only once and cannot be recovered.", file=sys.stderr)


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
    _expiry(create)
    actions.add_parser("list", help="list keys (ids, scopes, created, revoked, expiry)")
    revoke = actions.add_parser("revoke", help="revoke a key (refused at once, everywhere)")
    revoke.add_argument("key_id")
    rotate = actions.add_parser(
        "rotate", help="create a successor (same name, scopes) and retire the old key later"
    )
    rotate.add_argument("key_id")
    when = rotate.add_mutually_exclusive_group()
    when.add_argument("--overlap", default="24h", metavar="DURATION",
                      help="both keys work this long: 30m, 24h, 7d (default 24h)")  # fmt: skip
    when.add_argument("--retire-at", metavar="TIME", help="the old key's end (ISO-8601, UTC)")
    _expiry(rotate, "the successor ")
    expire = actions.add_parser("expire", help="set when a key stops working (default: now)")
    expire.add_argument("key_id")
    at = expire.add_mutually_exclusive_group()
    at.add_argument("--at", metavar="TIME", help="ISO-8601, UTC when no offset")
    at.add_argument("--in", dest="after", metavar="DURATION", help="from now: 30m, 12h, 7d")
    parser.set_defaults(func=run)


def _expiry(parser: argparse.ArgumentParser, whose: str = "") -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--expires-at", metavar="TIME", help=f"{whose}expiry (ISO-8601, UTC)")
    group.add_argument("--expires-in", metavar="DURATION",
                       help=f"{whose}expiry from now: 30m, 12h, 90d (default: never)")  # fmt: skip
