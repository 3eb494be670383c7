"""The model registry in PostgreSQL: cards and files as rows, so every pod sees the same models.

Tables (in ``schema``, created by the migration ``0003_model_registry.sql``): ``ml_models``
(one row per model: the card as JSON), ``ml_model_files`` (its files as ``bytea``: the artifacts
live in the database) and ``ml_active`` (an append-only stack of activations: the top row is
the active model, ``rollback`` deletes it). Activation and rollback hold a transaction-scoped
advisory lock, so two processes moving the pointer at once leave one stack.
``path(model_id)`` materialises a model's files into a local cache folder (a ``ModelRegistry``
root), which is what ``Scorer`` reads. The API mirrors ``ModelRegistry`` with ``async`` methods.
"""

from __future__ import annotations

import builtins
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from levibot.ml.card import CARD_FILE, ModelCard, ModelError
from levibot.ml.registry import MODEL_FILES, ModelRegistry, check_schema, running_schema_hash

_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_POINTER_LOCK = 0x1E71B08  # pg_advisory_xact_lock key of the active-model pointer


class PgModelRegistry:
    """Models in PostgreSQL (asyncpg), cached as files under ``cache``."""

    def __init__(
        self, dsn: str, cache: Path | str, *, schema: str = "public", schema_hash: str | None = None
    ) -> None:
        if not _IDENT.match(schema):
            raise ModelError(f"invalid PostgreSQL schema name {schema!r}")
        self.dsn = dsn
        self.schema = schema
        self.cache = ModelRegistry(cache, schema_hash=schema_hash)
        self._schema_hash = schema_hash
        self._pool: Any = None

    async def __aenter__(self) -> PgModelRegistry:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        """Connect; apply the store's migrations when the registry's tables are missing.

        The tables belong to ``levibot/storage/migrations`` (``0003_model_registry.sql``), like
        every table; a process that finds them missing (a fresh database that no store or
        ``levibot db migrate`` has touched yet) applies the migrations itself, in ``schema``.
        """
        import asyncpg

        from levibot.storage.migrate import migrate

        if self._pool is not None:
            return
        self._pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=2)
        s = self.schema
        try:
            async with self._pool.acquire() as conn:
                if await conn.fetchval("SELECT to_regclass($1)", f"{s}.ml_active") is None:
                    await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {s}")
                    # Unqualified names in the migration files land in ``schema``.
                    await conn.execute(f"SET search_path TO {s}")
                    try:
                        await migrate(conn)
                    finally:
                        await conn.execute("RESET search_path")
        except BaseException:
            await self.close()  # nobody holds a registry that failed to open: no pool left behind
            raise

    async def close(self) -> None:
        """Close the connection pool."""
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    @property
    def _db(self) -> Any:
        if self._pool is None:
            raise ModelError("PgModelRegistry is not open: use `async with` or await open()")
        return self._pool

    @property
    def local(self) -> ModelRegistry:
        """The cache folder: where ``path`` puts a model's files and a trainer writes."""
        return self.cache

    def where(self) -> str:
        """Say where the models live (never the DSN: it may hold a password)."""
        return f"the PostgreSQL registry (schema {self.schema})"

    @property
    def schema_hash(self) -> str:
        """Return the feature schema hash activation requires."""
        if self._schema_hash is None:
            self._schema_hash = running_schema_hash()
        return self._schema_hash

    async def register(self, source: Path | str) -> ModelCard:
        """Store the model directory ``source`` (card and files) and return its card."""
        src = Path(source)
        card = ModelCard.load(src)
        files = {n: (src / n).read_bytes() for n in MODEL_FILES if (src / n).is_file()}
        s = self.schema
        async with self._db.acquire() as conn, conn.transaction():
            await conn.execute(
                f"INSERT INTO {s}.ml_models (model_id, schema_hash, card) VALUES ($1, $2, $3) "
                f"ON CONFLICT (model_id) DO UPDATE SET card = EXCLUDED.card",
                card.model_id,
                card.schema_hash,
                card.to_json().decode(),
            )
            await conn.execute(f"DELETE FROM {s}.ml_model_files WHERE model_id = $1", card.model_id)
            await conn.executemany(
                f"INSERT INTO {s}.ml_model_files (model_id, name, data) VALUES ($1, $2, $3)",
                [(card.model_id, n, d) for n, d in files.items()],
            )
        return card

    async def list(self) -> builtins.list[ModelCard]:
        """Return every model's card, oldest first."""
        rows = await self._db.fetch(f"SELECT card::text AS card FROM {self.schema}.ml_models")
        cards = [ModelCard.from_json(r["card"]) for r in rows]
        return sorted(cards, key=lambda c: (c.created_at_ns, c.model_id))

    async def get(self, model_id: str) -> ModelCard:
        """Return the card of ``model_id``."""
        return await self._card(self._db, model_id)

    async def _card(self, db: Any, model_id: str) -> ModelCard:
        """Return the card of ``model_id`` read through ``db`` (the pool or one connection)."""
        row = await db.fetchrow(
            f"SELECT card::text AS card FROM {self.schema}.ml_models WHERE model_id = $1", model_id
        )
        if row is None:
            raise ModelError(f"unknown model {model_id!r} in PostgreSQL schema {self.schema}")
        return ModelCard.from_json(row["card"])

    async def active(self) -> ModelCard | None:
        """Return the active model's card, or None."""
        row = await self._db.fetchrow(
            f"SELECT model_id FROM {self.schema}.ml_active ORDER BY seq DESC LIMIT 1"
        )
        return await self.get(row["model_id"]) if row else None

    async def history(self) -> builtins.list[str]:
        """Return the previously active model ids, oldest first."""
        rows = await self._db.fetch(f"SELECT model_id FROM {self.schema}.ml_active ORDER BY seq")
        return [r["model_id"] for r in rows[:-1]]

    async def activate(self, model_id: str) -> ModelCard:
        """Make ``model_id`` active; ``SchemaMismatchError`` when its schema differs."""
        card = await self.get(model_id)
        check_schema(card, self.schema_hash)
        s = self.schema
        async with self._db.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _POINTER_LOCK)
            top = await conn.fetchval(
                f"SELECT model_id FROM {s}.ml_active ORDER BY seq DESC LIMIT 1"
            )
            if top != model_id:
                await conn.execute(f"INSERT INTO {s}.ml_active (model_id) VALUES ($1)", model_id)
        return card

    async def rollback(self) -> ModelCard:
        """Drop the current activation and return the model active before it."""
        s = self.schema
        async with self._db.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _POINTER_LOCK)
            rows = await conn.fetch(
                f"SELECT seq, model_id FROM {s}.ml_active ORDER BY seq DESC LIMIT 2"
            )
            if len(rows) < 2:
                raise ModelError("nothing to roll back to: no previously active model")
            # Read on this connection: a second one from the pool (two at most) could be held
            # by another rollback of this process waiting for the lock, and neither would move.
            previous = await self._card(conn, rows[1]["model_id"])
            check_schema(previous, self.schema_hash)
            await conn.execute(f"DELETE FROM {s}.ml_active WHERE seq = $1", rows[0]["seq"])
        return previous

    async def path(self, model_id: str) -> Path:
        """Return a local directory holding ``model_id``'s files, fetching them when needed."""
        try:
            return self.cache.path(model_id)
        except ModelError:
            pass
        rows = await self._db.fetch(
            f"SELECT name, data FROM {self.schema}.ml_model_files WHERE model_id = $1", model_id
        )
        if not any(r["name"] == CARD_FILE for r in rows):
            raise ModelError(f"unknown model {model_id!r} in PostgreSQL schema {self.schema}")
        # A fetch folder of our own: another process sharing the cache may fetch it too.
        self.cache.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{model_id}.fetch.", dir=self.cache.root))
        try:
            for r in rows:
                (staging / r["name"]).write_bytes(bytes(r["data"]))
            self.cache.register(staging, replace=False)  # the same rows: a copy there stays
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return self.cache.path(model_id)
