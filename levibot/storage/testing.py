"""Test helpers for persistence: a private PostgreSQL server and throwaway databases.

``TempPostgres`` runs its own server (``initdb`` + ``pg_ctl``) in a temp directory on a free
port, so a test may stop and restart it without touching the shared server. PostgreSQL refuses
to run as root: as root the binaries run as the ``postgres`` OS user via ``runuser``.
``temp_database`` creates a uniquely named database on a server (migrated, if asked) and drops
it afterwards.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from pathlib import Path
from typing import Any

from levibot.testenv import PG_DSN, free_port

PG_BIN = Path(os.environ.get("LEVIBOT_PG_BIN", "/usr/lib/postgresql/15/bin"))
SHARED_DSN = PG_DSN  # the shared server (levibot.testenv)


class TempPostgres:
    """A private PostgreSQL server: ``start``, ``stop(mode)``, ``restart``, ``cleanup``."""

    def __init__(self, os_user: str = "postgres") -> None:
        self.root = Path(tempfile.mkdtemp(prefix="levibot-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = free_port()
        self._prefix: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.root, user=os_user)
            self._prefix = ["runuser", "-u", os_user, "--"]

    @property
    def dsn(self) -> str:
        """Return the DSN of the server's ``postgres`` database."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        proc = subprocess.run(
            [*self._prefix, *args], capture_output=True, text=True, timeout=60, check=False
        )
        if proc.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(f"{args[0]} failed: {proc.stdout}{proc.stderr}\n{log[-2000:]}")

    def initdb(self) -> None:
        """Create the cluster (trust auth, no fsync: a test server)."""
        self._run(
            str(PG_BIN / "initdb"),
            "-D",
            str(self.data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-sync",
            "--no-instructions",
        )

    def start(self) -> None:
        """Start the server and wait until it accepts connections.

        ``fsync=off`` is safe for the crashes the tests make (a killed server, not a lost
        machine); ``synchronous_commit`` stays on, or a crash could lose acknowledged commits.
        """
        if not self.data.exists():
            self.initdb()
        opts = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c full_page_writes=off -c shared_buffers=32MB"
        )
        self._run(
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-o",
            opts,
            "-w",
            "-t",
            "60",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``immediate`` is a crash: no shutdown checkpoint)."""
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def cleanup(self) -> None:
        """Stop the server if it runs and delete its directory."""
        with suppress(RuntimeError):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


def unique_name(prefix: str = "levibot_test") -> str:
    """Return a database or key-prefix name no parallel test run shares."""
    return f"{prefix}_{secrets.token_hex(5)}"


def with_database(dsn: str, database: str) -> str:
    """Return ``dsn`` pointing at ``database``."""
    base, _, _ = dsn.rpartition("/")
    return f"{base}/{database}"


async def create_database(admin_dsn: str = SHARED_DSN) -> str:
    """Create a uniquely named database and return its DSN."""
    import asyncpg

    name = unique_name()
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return with_database(admin_dsn, name)


async def drop_database(dsn: str, admin_dsn: str = SHARED_DSN) -> None:
    """Drop the database ``dsn`` points at (closing its sessions)."""
    import asyncpg

    name = dsn.rpartition("/")[2]
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@contextmanager
def database(admin_dsn: str = SHARED_DSN) -> Iterator[str]:
    """Create a unique database for a synchronous fixture; yield its DSN; drop it after."""
    dsn = asyncio.run(create_database(admin_dsn))
    try:
        yield dsn
    finally:
        asyncio.run(drop_database(dsn, admin_dsn))


@asynccontextmanager
async def temp_database(
    admin_dsn: str = SHARED_DSN, *, migrated: bool = False
) -> AsyncIterator[str]:
    """Create a uniquely named database (with every migration applied when ``migrated``),
    yield its DSN, drop it afterwards."""
    dsn = await create_database(admin_dsn)
    try:
        if migrated:
            import asyncpg

            from levibot.storage.migrate import migrate

            conn = await asyncpg.connect(dsn)
            try:
                await migrate(conn)
            finally:
                await conn.close()
        yield dsn
    finally:
        await drop_database(dsn, admin_dsn)


async def tick_until(actor: Any, predicate: Callable[[], object], *, timeout: float = 30.0) -> None:
    """Call ``actor.on_tick()`` as the runtime would, until ``predicate()`` holds."""
    import anyio

    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {predicate}")
        await actor.on_tick()
        await anyio.sleep(actor.tick_interval_s)
