"""The model registry in PostgreSQL: cards and files as rows, so every pod sees the same models.

Tables (in ``schema``): ``ml_models`` (one row per model: the card as JSON and its files as
``bytea``) and ``ml_active`` (an append-only stack of activations: the top row is the active
model, ``rollback`` deletes it). ``path(model_id)`` materialises a model's files into a local
cache folder (a ``ModelRegistry`` root), which is what ``Scorer`` reads. The API mirrors
``ModelRegistry`` with ``async`` methods.
"""

from __future__ import annotations

import builtins
import re
from pathlib import Path
from typing import Any

from levibot.ml.card import CARD_FILE, ModelCard, ModelError
from levibot.ml.registry import MODEL_FILES, ModelRegistry, check_schema, running_schema_hash

_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


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
        """Connect and create the tables when they do not exist."""
        import asyncpg

        if self._pool is not None:
            return
        self._pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=2)
        s = self.schema
        async with self._pool.acquire() as conn:
            await conn.execute(f"""
                CREATE SCHEMA IF NOT EXISTS {s};
                CREATE TABLE IF NOT EXISTS {s}.ml_models (
                    model_id text PRIMARY KEY,
                    created_at timestamptz NOT NULL DEFAULT now(),
                    schema_hash text NOT NULL,
                    card jsonb NOT NULL
                );
                CREATE TABLE IF NOT EXISTS {s}.ml_model_files (
                    model_id text NOT NULL REFERENCES {s}.ml_models ON DELETE CASCADE,
                    name text NOT NULL,
                    data bytea NOT NULL,
                    PRIMARY KEY (model_id, name)
                );
                CREATE TABLE IF NOT EXISTS {s}.ml_active (
                    seq bigserial PRIMARY KEY,
                    model_id text NOT NULL REFERENCES {s}.ml_models,
                    activated_at timestamptz NOT NULL DEFAULT now()
                );
            """)

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
        row = await self._db.fetchrow(
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

    async def activate(self, model_id: str) -> ModelCard:
        """Make ``model_id`` active; ``SchemaMismatchError`` when its schema differs."""
        card = await self.get(model_id)
        check_schema(card, self.schema_hash)
        current = await self.active()
        if current is None or current.model_id != model_id:
            await self._db.execute(
                f"INSERT INTO {self.schema}.ml_active (model_id) VALUES ($1)", model_id
            )
        return card

    async def rollback(self) -> ModelCard:
        """Drop the current activation and return the model active before it."""
        s = self.schema
        async with self._db.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                f"SELECT seq, model_id FROM {s}.ml_active ORDER BY seq DESC LIMIT 2 FOR UPDATE"
            )
            if len(rows) < 2:
                raise ModelError("nothing to roll back to: no previously active model")
            previous = await self.get(rows[1]["model_id"])
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
        staging = self.cache.root / f".{model_id}.fetch"
        staging.mkdir(parents=True, exist_ok=True)
        for r in rows:
            (staging / r["name"]).write_bytes(bytes(r["data"]))
        self.cache.register(staging)
        for f in staging.iterdir():
            f.unlink()
        staging.rmdir()
        return self.cache.path(model_id)
