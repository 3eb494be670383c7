"""The PostgreSQL model registry against the real server, in a schema of its own."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from levibot.errors import SchemaMismatchError
from levibot.ml.card import ModelError
from levibot.ml.registry_pg import PgModelRegistry
from levibot.ml.scorer import Scorer
from levibot.ml.testing import make_model, synthetic_rows
from levibot.testenv import PG_DSN

pytestmark = [pytest.mark.integration, pytest.mark.anyio]
DSN = PG_DSN
HASH = "feedfacecafebeef"


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    import asyncpg

    name = f"lb_models_{uuid.uuid4().hex[:10]}"
    yield name
    conn = await asyncpg.connect(DSN)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
    finally:
        await conn.close()


def _build(tmp: Path, model_id: str, schema_hash: str = HASH, created: int = 1) -> Path:
    out = tmp / "build" / model_id
    make_model(
        out,
        model_id=model_id,
        schema_hash=schema_hash,
        schema_size=6,
        columns=(0, 4),
        trees=3,
        rows=300,
        created_at_ns=created,
    )
    return out


async def test_models_round_trip_through_postgres_to_another_pods_cache(
    tmp_path: Path, schema: str
) -> None:
    async with PgModelRegistry(DSN, tmp_path / "pod1", schema=schema, schema_hash=HASH) as reg:
        await reg.register(_build(tmp_path, "m1", created=1))
        await reg.register(_build(tmp_path, "m2", created=2))
        await reg.register(_build(tmp_path, "bad", schema_hash="0000000000000000", created=3))
        assert [c.model_id for c in await reg.list()] == ["m1", "m2", "bad"]
        assert await reg.active() is None
        await reg.activate("m1")
        await reg.activate("m2")
        with pytest.raises(SchemaMismatchError):
            await reg.activate("bad")
    # A second pod with an empty cache sees the same state and fetches the files.
    async with PgModelRegistry(DSN, tmp_path / "pod2", schema=schema, schema_hash=HASH) as other:
        active = await other.active()
        assert active is not None and active.model_id == "m2"
        path = await other.path("m2")
        assert path.parent == tmp_path / "pod2" and (path / "model.gemm.onnx").is_file()
        scorer = Scorer(active, path, graph="gemm")
        assert scorer.predict(synthetic_rows(5, 6)).shape == (5,)
        assert (await other.rollback()).model_id == "m1"
        with pytest.raises(ModelError, match="nothing to roll back"):
            await other.rollback()
        with pytest.raises(ModelError, match="unknown model"):
            await other.path("ghost")


async def test_an_invalid_schema_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="invalid PostgreSQL schema"):
        PgModelRegistry(DSN, tmp_path, schema="x; DROP TABLE y")


async def test_the_scoring_actor_swaps_to_a_model_fetched_from_postgres(
    tmp_path: Path, schema: str
) -> None:
    from levibot.actors.scoring import ScoringActor, ScoringConfig
    from levibot.features import SCHEMA
    from levibot.messages import ActivateModel, Features, Signal
    from levibot.testing import RecordingContext

    k = len(SCHEMA.names)
    cols = (SCHEMA.index("rsi_14"), SCHEMA.index("ret_1"))
    async with PgModelRegistry(
        DSN, tmp_path / "build-cache", schema=schema, schema_hash=SCHEMA.hash
    ) as reg:
        for mid, sign in (("p1", 1.0), ("p2", -1.0)):
            make_model(
                tmp_path / mid,
                model_id=mid,
                schema_hash=SCHEMA.hash,
                schema_size=k,
                columns=cols,
                names=("rsi_14", "ret_1"),
                sign=sign,
                trees=5,
                rows=400,
            )
            await reg.register(tmp_path / mid)
        await reg.activate("p1")
    ctx = RecordingContext("scoring")
    cfg = ScoringConfig(
        registry_dir=str(tmp_path / "pod-cache"),
        postgres_dsn=DSN,
        postgres_schema=schema,
        max_model_age_s=0,
    )
    actor = ScoringActor(ctx, cfg)
    await actor.on_start()
    try:
        row = tuple(float(v) for v in synthetic_rows(1, k)[0])
        feat = Features(
            ts_event=1, ts_init=1, symbol="BTCUSDT", schema_hash=SCHEMA.hash, values=row, price=1.0
        )
        await actor.handle_batch(
            [feat, ActivateModel(ts_event=2, ts_init=2, command_id="x", model_id="p2"), feat]
        )
    finally:
        await actor.on_stop()
    assert [s.model_id for s in ctx.of_type(Signal)] == ["p1", "p2"]
    assert (tmp_path / "pod-cache" / "p2" / "model.onnx").is_file()


def test_train_and_models_commands_use_postgres_when_given_a_dsn(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import asyncio

    import asyncpg

    from levibot.cli import main
    from tests.unit.test_ml_dataset import random_bars

    schema = f"lb_models_{uuid.uuid4().hex[:10]}"
    bars = random_bars(1200, seed=8)
    csv = tmp_path / "k.csv"
    rows = zip(*(a.tolist() for a in bars.arrays()), strict=True)
    csv.write_text(
        "timestamp,open,high,low,close,volume\n"
        + "".join(
            f"{t // 1_000_000},{o!r},{h!r},{lo!r},{c!r},{v!r}\n" for t, o, h, lo, c, v in rows
        )
    )
    pg = ["--dsn", DSN, "--pg-schema", schema]
    try:
        assert (
            main(
                [
                    "train",
                    "--data",
                    str(csv),
                    "--trees",
                    "3",
                    "--folds",
                    "2",
                    "--threads",
                    "1",
                    "--registry",
                    str(tmp_path / "m"),
                    "--no-progress",
                    "--activate",
                    "--force",  # a 3-tree model on a short CSV: past the promotion gate
                    *pg,
                ]
            )
            == 0
        )
        capsys.readouterr()
        assert main(["models", *pg, "--registry", str(tmp_path / "cache"), "list"]) == 0
        lines = capsys.readouterr().out.strip().splitlines()
        assert len(lines) == 2 and lines[1].startswith("* lgbm-h4-")
    finally:

        async def drop() -> None:
            conn = await asyncpg.connect(DSN)
            await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            await conn.close()

        asyncio.run(drop())


_FETCH = """
import asyncio, sys, time
from pathlib import Path
from levibot.ml.registry_pg import PgModelRegistry
from levibot.ml.scorer import Scorer

async def main(dsn, cache, schema, start):
    async with PgModelRegistry(dsn, cache, schema=schema, schema_hash="{hash}") as reg:
        card = await reg.get("m1")
        while time.time() < start:  # every process fetches at the same moment
            pass
        path = await reg.path("m1")
        Scorer(card, path)  # the files are all there, whole

asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])))
"""


def _fetch_at_once(cache: Path, schema: str, processes: int) -> list[str]:
    """Start ``processes`` fetches of m1 into ``cache`` at one moment; return their errors."""
    import subprocess
    import sys
    import time

    start = time.time() + 2.0
    argv = [sys.executable, "-c", _FETCH.format(hash=HASH), DSN, str(cache), schema, str(start)]
    procs = [subprocess.Popen(argv, stderr=subprocess.PIPE, text=True) for _ in range(processes)]
    outcomes = [(p.communicate(timeout=60)[1], p.returncode) for p in procs]
    return [err[-2000:] or f"exit {code}" for err, code in outcomes if code]


async def test_processes_sharing_one_cache_fetch_a_model_at_once(
    tmp_path: Path, schema: str
) -> None:
    import anyio.to_thread

    async with PgModelRegistry(DSN, tmp_path / "trainer", schema=schema, schema_hash=HASH) as reg:
        await reg.register(_build(tmp_path, "m1"))
    for round_ in range(4):  # before: a card read truncated, or a folder gone, in 1 run of 2
        cache = tmp_path / f"shared{round_}"
        errors = await anyio.to_thread.run_sync(_fetch_at_once, cache, schema, 6)
        assert not errors, errors[0]
        # One model folder, whole; no staging or fetch folder left behind.
        assert sorted(p.name for p in cache.iterdir()) == ["m1"]
