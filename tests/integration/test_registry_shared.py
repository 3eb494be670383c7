"""The shared model registry: its tables come from the migrations, its pointer is one stack
however many processes move it, and ``open_registry`` gives the folder and PostgreSQL the same
behaviour."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import asyncpg
import msgspec
import pytest

from levibot.errors import SchemaMismatchError
from levibot.ml.card import ModelCard, ModelError
from levibot.ml.governance import PromotionRefused
from levibot.ml.registries import FolderRegistry, ModelStore, open_registry, publish
from levibot.ml.registry_pg import PgModelRegistry
from levibot.ml.testing import make_model
from levibot.storage.migrate import discover, migrate
from levibot.storage.testing import temp_database

pytestmark = [pytest.mark.integration, pytest.mark.anyio]
HASH = "feedfacecafebeef"


@pytest.fixture
async def dsn() -> AsyncIterator[str]:
    async with temp_database() as url:
        yield url


def build(tmp: Path, model_id: str, *, schema_hash: str = HASH, created: int = 1) -> Path:
    out = tmp / "build" / model_id
    make_model(out, model_id=model_id, schema_hash=schema_hash, schema_size=6, columns=(0, 3),
               trees=3, rows=300, created_at_ns=created)  # fmt: skip
    return out


async def tables(url: str) -> set[str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    finally:
        await conn.close()
    return {r["tablename"] for r in rows}


async def applied(url: str) -> list[str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT name FROM schema_migrations ORDER BY version")
    finally:
        await conn.close()
    return [r["name"] for r in rows]


async def test_a_fresh_database_gets_the_registry_tables_from_the_migrations(
    dsn: str, tmp_path: Path
) -> None:
    assert "ml_models" not in await tables(dsn)
    async with PgModelRegistry(dsn, tmp_path / "cache", schema_hash=HASH) as reg:
        await reg.register(build(tmp_path, "m1"))
    # Applied through the migrator, every file recorded: `levibot db migrate` has nothing left.
    assert await applied(dsn) == [m.name for m in discover()]
    assert {"ml_models", "ml_model_files", "ml_active", "bars"} <= await tables(dsn)
    conn = await asyncpg.connect(dsn)
    try:
        assert await migrate(conn) == []
    finally:
        await conn.close()


async def test_tables_the_old_registry_created_itself_are_adopted_with_their_rows(
    dsn: str, tmp_path: Path
) -> None:
    # What PgModelRegistry.open() used to create, before the tables were in the migrations.
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("""
            CREATE TABLE ml_models (model_id text PRIMARY KEY,
                created_at timestamptz NOT NULL DEFAULT now(), schema_hash text NOT NULL,
                card jsonb NOT NULL);
            CREATE TABLE ml_model_files (model_id text NOT NULL REFERENCES ml_models
                ON DELETE CASCADE, name text NOT NULL, data bytea NOT NULL,
                PRIMARY KEY (model_id, name));
            CREATE TABLE ml_active (seq bigserial PRIMARY KEY,
                model_id text NOT NULL REFERENCES ml_models,
                activated_at timestamptz NOT NULL DEFAULT now());
        """)
        card = ModelCard.load(build(tmp_path, "old"))
        await conn.execute(
            "INSERT INTO ml_models (model_id, schema_hash, card) VALUES ('old', $1, $2)",
            HASH,
            card.to_json().decode(),
        )
        await conn.execute("INSERT INTO ml_active (model_id) VALUES ('old')")
        assert [m.name for m in await migrate(conn)] == [m.name for m in discover()]
    finally:
        await conn.close()
    async with PgModelRegistry(dsn, tmp_path / "cache", schema_hash=HASH) as reg:
        active = await reg.active()
        assert active is not None and active.model_id == "old"


async def test_concurrent_activations_from_many_processes_leave_one_stack(
    dsn: str, tmp_path: Path
) -> None:
    regs = [PgModelRegistry(dsn, tmp_path / f"c{i}", schema_hash=HASH) for i in range(4)]
    for reg in regs:
        await reg.open()
    try:
        for i, mid in enumerate(("a", "b")):
            await regs[0].register(build(tmp_path, mid, created=i))
        # Every replica activates "a" then "b" at once, twice over: without the lock two of
        # them would both read "a" on top and push "b" twice.
        for _ in range(2):
            for target in ("a", "b"):
                await asyncio.gather(*(reg.activate(target) for reg in regs))
        stack = [*await regs[1].history(), "b"]
        assert stack == ["a", "b", "a", "b"]
        assert (await regs[2].rollback()).model_id == "a"
        assert (await regs[3].active()).model_id == "a"  # type: ignore[union-attr]
    finally:
        for reg in regs:
            await reg.close()


async def test_a_registry_that_fails_to_open_leaves_no_connection_behind(
    dsn: str, tmp_path: Path
) -> None:
    async def connections() -> int:
        conn = await asyncpg.connect(dsn)
        try:
            return int(await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ))  # fmt: skip
        finally:
            await conn.close()

    # A valid name, but PostgreSQL keeps pg_ schemas for itself: creating it fails mid-open.
    with pytest.raises(asyncpg.PostgresError, match="pg_"):
        await open_registry(tmp_path / "cache", dsn=dsn, schema="pg_levibot", schema_hash=HASH)
    assert await connections() == 0


async def test_concurrent_rollbacks_in_one_process_each_take_one_step_back(
    dsn: str, tmp_path: Path
) -> None:
    async with PgModelRegistry(dsn, tmp_path / "cache", schema_hash=HASH) as reg:
        for i, mid in enumerate(("a", "b", "c")):
            await reg.register(build(tmp_path, mid, created=i))
            await reg.activate(mid)
        # Two admins roll back at once through one process (its pool holds two connections).
        with anyio.fail_after(20):
            back = await asyncio.gather(reg.rollback(), reg.rollback())
        assert sorted(c.model_id for c in back) == ["a", "b"]
        assert (await reg.active()).model_id == "a"  # type: ignore[union-attr]


@pytest.mark.parametrize("kind", ["folder", "postgres"])
async def test_folder_and_postgres_behave_alike_behind_open_registry(
    kind: str, dsn: str, tmp_path: Path
) -> None:
    store: ModelStore = await open_registry(
        tmp_path / "reg", dsn=dsn if kind == "postgres" else "", schema_hash=HASH
    )
    try:
        assert isinstance(store, FolderRegistry) == (kind == "folder")
        # Trained into the local folder first (as train_model does), then published.
        local = store.local
        local.register(build(tmp_path, "m1", created=1))
        card = await publish(store, local.path("m1"), activate=True)
        assert card.model_id == "m1" and (await store.active()).model_id == "m1"  # type: ignore[union-attr]
        # An unpromoted model is registered, and refused the pointer.
        unpromoted = build(tmp_path, "m2", created=2)
        doc = msgspec.json.decode((unpromoted / "card.json").read_bytes())
        doc["promotion"] = {"passed": False, "why": "worse than buy and hold"}
        (unpromoted / "card.json").write_bytes(msgspec.json.encode(doc))
        with pytest.raises(PromotionRefused, match="worse than buy and hold"):
            await publish(store, unpromoted, activate=True)
        assert [c.model_id for c in await store.list()] == ["m1", "m2"]
        assert (await store.active()).model_id == "m1"  # type: ignore[union-attr]
        await publish(store, unpromoted, activate=True, force=True)
        assert await store.history() == ["m1"]
        assert (await store.path("m2")).is_dir()
        with pytest.raises(SchemaMismatchError):
            await store.activate((await publish(store, build(tmp_path, "x", schema_hash="0" * 16,
                                                              created=3))).model_id)  # fmt: skip
        assert (await store.rollback()).model_id == "m1"
        with pytest.raises(ModelError, match="nothing to roll back"):
            await store.rollback()
        with pytest.raises(ModelError, match="unknown model"):
            await store.get("ghost")
    finally:
        await store.close()


@pytest.mark.parametrize("kind", ["folder", "postgres"])
def test_the_demo_looks_for_its_model_where_scoring_will_serve_from(
    kind: str, tmp_path: Path
) -> None:
    from levibot.commands.demo import ensure_model
    from levibot.storage.testing import database

    with database() as url:
        dsn = url if kind == "postgres" else ""
        assert ensure_model(tmp_path, train=False, dsn=dsn) is None

        async def activate_elsewhere() -> None:
            # Registered by another process: for PostgreSQL its cache is not the demo's.
            root = tmp_path / ("models" if kind == "folder" else "trainer")
            store = await open_registry(root, dsn=dsn, schema_hash=HASH)
            try:
                await publish(store, build(tmp_path, "m1"), activate=True, force=True)
            finally:
                await store.close()

        asyncio.run(activate_elsewhere())
        assert ensure_model(tmp_path, train=False, dsn=dsn) == "m1"
