"""API keys: ``lb_<key_id>_<secret>``, shown once, stored only as a (peppered) hash.

The secret has 256 bits of entropy, so one SHA-256 (HMAC-SHA256 with a server pepper when one is
configured) is enough: a slow KDF protects guessable passwords, not random keys, and would cost a
millisecond on every authenticated request. Storage is a JSON file (mode 0600) in the data dir, or
PostgreSQL's ``api_keys`` table when a DSN is configured (see ``keys_pg``).

A key may carry an expiry; from then on it is refused. Rotation (``rotate_key``) creates a
successor with the same name and scopes and sets the old key's expiry to a chosen time: until
then both keys work (the overlap), so clients can switch without an outage.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

import anyio
import msgspec

from levibot.errors import LevibotError

#: Every scope a key can carry. ``admin`` implies the others; ``trade`` implies ``read``.
SCOPES: tuple[str, ...] = ("read", "trade", "admin")
_IMPLIED = {"admin": {"read", "trade", "admin"}, "trade": {"read", "trade"}, "read": {"read"}}
PREFIX = "lb"


class ApiKeyError(LevibotError):
    """An API key operation failed (unknown key, bad scope, unreadable store)."""


class ApiKey(msgspec.Struct, frozen=True, kw_only=True):
    """One stored key: its id, the hash of its secret, its scopes and lifecycle times."""

    key_id: str
    hash: str
    scopes: tuple[str, ...]
    name: str = ""
    created_at: float = 0.0  # Unix seconds
    revoked_at: float | None = None
    expires_at: float | None = None  # Unix seconds; refused from then on (None: never)
    replaced_by: str = ""  # the key id of the successor a rotation created

    @property
    def revoked(self) -> bool:
        """True once the key was revoked."""
        return self.revoked_at is not None

    def expired(self, now: float) -> bool:
        """True from the key's expiry on."""
        return self.expires_at is not None and self.expires_at <= now


def effective_scopes(scopes: Iterable[str]) -> frozenset[str]:
    """Return ``scopes`` with the scopes they imply."""
    out: set[str] = set()
    for scope in scopes:
        out |= _IMPLIED.get(scope, set())
    return frozenset(out)


def check_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    """Return the scopes, validated and de-duplicated; raise ``ApiKeyError`` for unknown ones."""
    out = tuple(dict.fromkeys(s.strip() for s in scopes if s.strip()))
    bad = [s for s in out if s not in SCOPES]
    if bad or not out:
        raise ApiKeyError(
            f"scopes must be among {', '.join(SCOPES)}; got {', '.join(out) or 'none'}"
        )
    return out


def hash_secret(secret: str, pepper: str = "") -> str:
    """Return the stored form of ``secret``: ``hmac-sha256$hex`` (pepper) or ``sha256$hex``."""
    if pepper:
        digest = hmac.new(pepper.encode(), secret.encode(), hashlib.sha256).hexdigest()
        return f"hmac-sha256${digest}"
    return f"sha256${hashlib.sha256(secret.encode()).hexdigest()}"


def verify_secret(stored: str, secret: str, pepper: str = "") -> bool:
    """Return True when ``secret`` matches the stored hash (constant time)."""
    scheme = stored.split("$", 1)[0]
    if scheme == "hmac-sha256" and not pepper:
        return False
    return hmac.compare_digest(stored, hash_secret(secret, pepper if scheme != "sha256" else ""))


def parse_key(plaintext: str) -> tuple[str, str] | None:
    """Split ``lb_<key_id>_<secret>`` into ``(key_id, secret)``; None when it is not a key."""
    parts = plaintext.split("_", 2)
    if len(parts) != 3 or parts[0] != PREFIX or not parts[1] or len(parts[2]) < 16:
        return None
    if not all(c in "0123456789abcdef" for c in parts[1]):
        return None
    return parts[1], parts[2]


def new_key(
    name: str, scopes: Iterable[str], pepper: str = "", *, expires_at: float | None = None
) -> tuple[str, ApiKey]:
    """Return a fresh ``(plaintext, record)``; the plaintext is never stored."""
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    now = time.time()
    if expires_at is not None and expires_at <= now:
        raise ApiKeyError("a new key's expiry must lie in the future")
    record = ApiKey(
        key_id=key_id,
        hash=hash_secret(secret, pepper),
        scopes=check_scopes(scopes),
        name=name,
        created_at=now,
        expires_at=expires_at,
    )
    return f"{PREFIX}_{key_id}_{secret}", record


class KeyStore(Protocol):
    """Where API keys live."""

    async def add(self, record: ApiKey) -> None:
        """Store a new key."""
        ...

    async def get(self, key_id: str) -> ApiKey | None:
        """Return the key with ``key_id``, or None."""
        ...

    async def list(self) -> list[ApiKey]:
        """Return every key, oldest first."""
        ...

    async def revoke(self, key_id: str) -> bool:
        """Mark a key revoked; return False when it does not exist."""
        ...

    async def retire(self, key_id: str, at: float) -> ApiKey | None:
        """Set a key's expiry to ``at``; return the key, None when it does not exist."""
        ...

    async def rotate(self, key_id: str, successor: ApiKey, at: float) -> ApiKey | None:
        """Store ``successor`` and retire ``key_id`` at ``at``, naming it, in one step; return
        the old key, None (storing nothing) when it does not exist or was already rotated."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class FileKeyStore:
    """Keys in a JSON file (mode 0600), re-read when another process (the CLI) changed it."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._mtime: int | None = None
        self._keys: dict[str, ApiKey] = {}

    def _load(self) -> dict[str, ApiKey]:
        try:
            mtime = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            self._keys, self._mtime = {}, None
            return self._keys
        if mtime != self._mtime:
            try:
                raw = msgspec.json.decode(self.path.read_bytes(), type=list[ApiKey])
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise ApiKeyError(f"{self.path}: unreadable key store: {exc}") from None
            self._keys, self._mtime = {k.key_id: k for k in raw}, mtime
        return self._keys

    def _save(self, keys: dict[str, ApiKey]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        data = json.dumps(msgspec.to_builtins(list(keys.values())), indent=1).encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)
        self._mtime = None  # re-read (and re-stat) next time

    async def add(self, record: ApiKey) -> None:
        keys = dict(self._load())
        keys[record.key_id] = record
        await anyio.to_thread.run_sync(self._save, keys)

    async def get(self, key_id: str) -> ApiKey | None:
        return self._load().get(key_id)

    async def list(self) -> list[ApiKey]:
        return sorted(self._load().values(), key=lambda k: k.created_at)

    async def revoke(self, key_id: str) -> bool:
        keys = dict(self._load())
        record = keys.get(key_id)
        if record is None:
            return False
        if record.revoked_at is None:
            keys[key_id] = msgspec.structs.replace(record, revoked_at=time.time())
            await anyio.to_thread.run_sync(self._save, keys)
        return True

    async def retire(self, key_id: str, at: float) -> ApiKey | None:
        keys = dict(self._load())
        record = keys.get(key_id)
        if record is None:
            return None
        keys[key_id] = record = msgspec.structs.replace(record, expires_at=at)
        await anyio.to_thread.run_sync(self._save, keys)
        return record

    async def rotate(self, key_id: str, successor: ApiKey, at: float) -> ApiKey | None:
        keys = dict(self._load())
        record = keys.get(key_id)
        if record is None or record.replaced_by:
            return None
        keys[successor.key_id] = successor
        keys[key_id] = record = msgspec.structs.replace(
            record, expires_at=at, replaced_by=successor.key_id
        )
        await anyio.to_thread.run_sync(self._save, keys)  # one write: both or neither
        return record

    async def close(self) -> None:
        pass


async def rotate_key(
    store: KeyStore,
    key_id: str,
    retire_at: float,
    pepper: str = "",
    *,
    expires_at: float | None = None,
) -> tuple[str, ApiKey, ApiKey]:
    """Create the successor of ``key_id`` and retire the old key at ``retire_at``.

    The successor has the old key's name and scopes and expires at ``expires_at`` (None: never).
    Both keys work until ``retire_at``, never later than an expiry the old key already had.
    Return ``(plaintext, successor, old key as retired)``.
    """
    old = await store.get(key_id)
    now = time.time()
    if old is None:
        raise ApiKeyError(f"no API key with id {key_id!r}")
    if old.revoked:
        raise ApiKeyError(f"API key {key_id} is revoked; create a new key instead")
    if old.expired(now):
        raise ApiKeyError(f"API key {key_id} has expired; create a new key instead")
    if old.replaced_by:
        raise ApiKeyError(f"API key {key_id} was already rotated to {old.replaced_by}")
    if retire_at < now:
        raise ApiKeyError("the old key's retirement time must not lie in the past")
    if old.expires_at is not None:
        retire_at = min(retire_at, old.expires_at)
    plaintext, successor = new_key(old.name, old.scopes, pepper, expires_at=expires_at)
    retired = await store.rotate(key_id, successor, retire_at)
    if retired is None:  # another rotation won the race
        raise ApiKeyError(f"API key {key_id} was rotated meanwhile; see `levibot keys list`")
    return plaintext, successor, retired


async def open_key_store(
    postgres_dsn: str, data_dir: str | Path, table: str = "api_keys"
) -> KeyStore:
    """Return the PostgreSQL store when a DSN is given, else ``<data_dir>/keys.json``."""
    if postgres_dsn:
        from sidecars.gateway.auth.keys_pg import PostgresKeyStore

        return await PostgresKeyStore.connect(postgres_dsn, table=table)
    return FileKeyStore(Path(data_dir) / "keys.json")
