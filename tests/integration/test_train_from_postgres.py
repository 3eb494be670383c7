"""``levibot train --source postgres``: training on the bars the store persisted."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from levibot.cli import main
from levibot.data import Klines, ensure_btcusdt, load_klines
from levibot.ml.bars_pg import load_bars_pg
from levibot.ml.card import ModelError
from levibot.ml.dataset import Bars
from levibot.ml.registry import ModelRegistry
from levibot.ml.train import TrainConfig, train_model
from levibot.storage.migrate import migrate
from levibot.storage.testing import database

pytestmark = pytest.mark.integration
H = 3_600_000_000_000
SPAN = slice(40_000, 44_000)


@pytest.fixture
def dsn() -> Iterator[str]:
    with database() as url:
        asyncio.run(fill(url))
        yield url


async def fill(url: str) -> None:
    """Migrate, then store the real bars around SPAN: BTCUSDT, and ETHUSDT from two venues."""
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
        k = load_klines(ensure_btcusdt(None, False))
        await conn.executemany(
            "INSERT INTO bars (symbol, venue, timeframe, start_ns, ts, ts_event, open, high,"
            " low, close, volume) VALUES ($1, $2, '1h', $3, $4, $5, $6, $7, $8, $9, $10)",
            [*rows(k, "BTCUSDT", "binance"), *rows(k, "ETHUSDT", "binance"),
             *rows(k, "ETHUSDT", "kraken")],
        )  # fmt: skip
    finally:
        await conn.close()


def rows(k: Klines, symbol: str, venue: str) -> list[tuple[object, ...]]:
    out = []
    for i in range(SPAN.start - 500, SPAN.stop + 500):
        start = int(k.ts[i])
        out.append((symbol, venue, start, datetime.fromtimestamp((start + H) / 1e9, UTC),
                    start + H, float(k.open[i]), float(k.high[i]), float(k.low[i]),
                    float(k.close[i]), float(k.volume[i])))  # fmt: skip
    return out


def csv_slice() -> Bars:
    k = load_klines(ensure_btcusdt(None, False))
    s = SPAN
    return Bars(ts=k.ts[s], open=k.open[s], high=k.high[s], low=k.low[s], close=k.close[s],
                volume=k.volume[s])  # fmt: skip


@pytest.mark.anyio
async def test_stored_bars_load_exactly_as_the_csv_gives_them(dsn: str) -> None:
    want = csv_slice()
    since, until = int(want.ts[0]), int(want.ts[-1]) + 1
    got = await load_bars_pg(dsn, symbol="BTCUSDT", timeframe="1h", since_ns=since,
                             until_ns=until)  # fmt: skip
    for name in ("ts", "open", "high", "low", "close", "volume"):
        assert np.array_equal(getattr(got, name), getattr(want, name)), name
    assert got.source == "postgres:BTCUSDT/1h"
    with pytest.raises(ModelError, match="venues"):
        await load_bars_pg(dsn, symbol="ETHUSDT", timeframe="1h")
    eth = await load_bars_pg(dsn, symbol="ETHUSDT", timeframe="1h", venue="kraken")
    assert len(eth) == len(want) + 1000
    with pytest.raises(ModelError, match="no stored 4h bars"):
        await load_bars_pg(dsn, symbol="BTCUSDT", timeframe="4h")


def test_train_from_postgres_is_the_model_trained_from_the_same_csv_bars(
    dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    want = csv_slice()
    since = datetime.fromtimestamp(want.ts[0] / 1e9, UTC).isoformat()
    until = str(int(want.ts[-1]) + 1)
    reg = tmp_path / "pg"
    args = ["train", "--source", "postgres", "--symbol", "BTCUSDT", "--timeframe", "1h",
            "--since", since, "--until", until, "--bars-dsn", dsn, "--trees", "5", "--folds",
            "2", "--threads", "1", "--registry", str(reg), "--no-progress"]  # fmt: skip
    assert main(args) == 0
    (card,) = ModelRegistry(reg).list()
    assert card.data["source"] == "postgres:BTCUSDT/1h" and card.data["bars"] == len(want)
    cfg = TrainConfig(n_estimators=5, folds=2, num_threads=1)
    ref = train_model(bars=want, config=cfg, registry=ModelRegistry(tmp_path / "csv"),
                      progress=False)  # fmt: skip
    assert card.metrics == ref.metrics and card.folds == ref.folds
    ours = (ModelRegistry(reg).path(card.model_id) / "model.txt").read_text()
    theirs = (ModelRegistry(tmp_path / "csv").path(ref.model_id) / "model.txt").read_text()
    assert ours == theirs
    capsys.readouterr()
    bad = ["train", "--source", "postgres", "--symbol", "NOPE", "--bars-dsn", dsn, "--no-progress"]
    assert main(bad) == 2
    assert "no stored 1h bars of NOPE" in capsys.readouterr().err


def test_retrain_trains_on_stored_bars_in_its_worker(dsn: str, tmp_path: Path) -> None:
    from levibot.ml.card import ModelError
    from sidecars.gateway.mlbridge import ModelBridge
    from sidecars.gateway.schemas import RetrainData

    want = csv_slice()
    bridge = ModelBridge(tmp_path / "models", postgres_dsn=dsn)
    data = bridge.check_data(RetrainData(source="postgres", since_ms=float(want.ts[0] // 10**6),
                                         until_ms=float(want.ts[-1] // 10**6 + 1)))  # fmt: skip
    assert data is not None
    options = {"n_estimators": 5, "folds": 2, "num_threads": 1}
    out = bridge.default_trainer()(options, data)
    assert out["data"]["source"] == "postgres:BTCUSDT/1h" and out["data"]["bars"] == len(want)
    assert bridge.check_data(RetrainData()) is None  # the default data
    with pytest.raises(ModelError, match="no \\[storage\\] postgres_dsn"):
        ModelBridge(tmp_path / "m2").default_trainer()(options, data)
