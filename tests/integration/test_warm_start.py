"""Warm start: a restarted feature actor rebuilds each symbol's state from its past bars.

The past comes from the bars the store persisted in PostgreSQL, or else from Binance's public
REST klines (a local stand-in over real HTTP). Either way the first live bar after the
restart already yields features, equal to what a run that never stopped computed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from functools import cache
from typing import Any

import numpy as np
import pytest
from aiohttp import web

from levibot.actors.feature import FeatureActor, FeatureConfig
from levibot.clock import LiveClock
from levibot.data import Klines, ensure_btcusdt, load_klines
from levibot.features import SCHEMA, FeatureState
from levibot.marketdata.history import BinanceKlines, HistoryError
from levibot.messages import Bar, Features
from levibot.settings import StorageConfig
from levibot.storage.migrate import migrate
from levibot.storage.testing import database
from levibot.testing import RecordingContext
from tests.fakes.binance_rest import BinanceRest, Series

pytestmark = [pytest.mark.integration, pytest.mark.anyio]
H = 3_600_000_000_000
LIVE = 50  # live bars after the restart


@cache
def klines() -> Klines:
    return load_klines(ensure_btcusdt(None, False))


def bar(i: int, symbol: str = "BTCUSDT") -> Bar:
    k = klines()
    start = int(k.ts[i])
    return Bar(
        ts_event=start + H, ts_init=start + H, ts_ingress=start + H, symbol=symbol,
        venue="binance", timeframe="1h", start=start, open=float(k.open[i]),
        high=float(k.high[i]), low=float(k.low[i]), close=float(k.close[i]),
        volume=float(k.volume[i]),
    )  # fmt: skip


def uninterrupted(first: int, restart: int) -> list[tuple[float, ...]]:
    """The vectors a run over bars ``first..`` computes for the ``LIVE`` bars from ``restart``."""
    state, out = FeatureState(), []
    for i in range(first, restart + LIVE):
        b = bar(i)
        row = state.update(b.open, b.high, b.low, b.close, b.volume)
        if i >= restart:
            out.append(row)
    return out


async def restarted(storage: StorageConfig, restart: int, **cfg: Any) -> list[Features]:
    """A fresh actor (live clock, as after a restart) fed the live bars from ``restart``."""
    ctx = RecordingContext("feature", clock=LiveClock(), storage=storage)
    actor = FeatureActor(ctx, FeatureConfig(**cfg))
    await actor.on_start()
    try:
        for i in range(restart, restart + LIVE):
            await actor.handle(bar(i))
    finally:
        await actor.on_stop()
    return ctx.of_type(Features)


async def store(url: str, first: int, stop: int, symbol: str = "BTCUSDT") -> None:
    """Persist bars ``first..stop-1`` into the ``bars`` table, as the store does."""
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)  # idempotent
        rows = []
        for i in range(first, stop):
            b = bar(i, symbol)
            ts = datetime.fromtimestamp(b.ts_event / 1e9, UTC)
            rows.append((b.symbol, b.venue, b.timeframe, b.start, ts, b.ts_event, b.open,
                         b.high, b.low, b.close, b.volume))  # fmt: skip
        await conn.executemany(
            "INSERT INTO bars (symbol, venue, timeframe, start_ns, ts, ts_event, open, high,"
            " low, close, volume) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            rows,
        )
    finally:
        await conn.close()


@pytest.fixture
def dsn() -> Iterator[str]:
    with database() as url:
        yield url


@pytest.fixture
async def rest() -> AsyncIterator[tuple[BinanceRest, str]]:
    k = klines()
    fake = BinanceRest(series={"BTCUSDT": Series(k.ts, k.open, k.high, k.low, k.close, k.volume)})
    runner = web.AppRunner(fake.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield fake, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_from_postgres_the_first_live_bar_yields_the_uninterrupted_features(
    dsn: str,
) -> None:
    first, restart = 30_000, 31_500  # 1,500 stored bars: all of the run's history
    await store(dsn, first, restart)
    got = await restarted(StorageConfig(postgres_dsn=dsn), restart)
    assert len(got) == LIVE and got[0].ts_event == bar(restart).ts_event
    want = uninterrupted(first, restart)
    assert [f.values for f in got] == want  # bit for bit


async def test_a_longer_history_is_cut_to_warm_bars_and_stays_within_the_seed_decay(
    dsn: str,
) -> None:
    first, restart = 30_000, 33_000
    await store(dsn, first, restart)
    got = await restarted(StorageConfig(postgres_dsn=dsn), restart, warm_bars=2_000)
    want = np.array(uninterrupted(first, restart))
    ours = np.array([f.values for f in got])
    assert ours.shape == want.shape
    np.testing.assert_allclose(ours, want, rtol=1e-7, atol=1e-9)


async def test_without_a_database_the_rest_klines_warm_it_paged_and_weight_aware(
    rest: tuple[BinanceRest, str],
) -> None:
    fake, url = rest
    first, restart = 40_000, 41_500
    fake.refuse, fake.retry_after = 1, "0"  # one 429 first: waited out and retried
    got = await restarted(StorageConfig(), restart, warm_bars=restart - first, binance_rest_url=url)
    assert [f.values for f in got] == uninterrupted(first, restart)
    assert len(fake.requests) == 3  # the refused one, then 1,000 + 500 klines
    assert [int(p["limit"]) for p in fake.requests[1:]] == [1000, 500]
    assert all(int(p["endTime"]) < bar(restart).start // 1_000_000 for p in fake.requests)


async def test_postgres_first_then_the_exchange_for_a_symbol_none_are_stored_of(
    dsn: str, rest: tuple[BinanceRest, str]
) -> None:
    fake, url = rest
    first, restart = 20_000, 20_300
    await store(dsn, first, restart, symbol="ETHUSDT")  # another symbol's bars only
    storage = StorageConfig(postgres_dsn=dsn)
    got = await restarted(storage, restart, warm_bars=300, binance_rest_url=url)
    assert [f.values for f in got] == uninterrupted(first, restart)
    assert len(fake.requests) == 1  # BTCUSDT came from the exchange
    await store(dsn, first, restart)
    fake.requests.clear()
    got = await restarted(storage, restart, warm_bars=300, binance_rest_url=url)
    assert [f.values for f in got] == uninterrupted(first, restart)
    assert fake.requests == []  # now PostgreSQL has them


async def test_garbage_from_the_exchange_starts_the_symbol_cold_and_is_counted(
    rest: tuple[BinanceRest, str],
) -> None:
    fake, url = rest
    fake.garbage = 1
    ctx = RecordingContext("feature", clock=LiveClock(), storage=StorageConfig())
    actor = FeatureActor(ctx, FeatureConfig(binance_rest_url=url))
    await actor.on_start()
    await actor.handle(bar(45_000))
    await actor.on_stop()
    assert ctx.of_type(Features) == []  # cold: nothing before the schema's warm-up
    assert ctx.metrics.value("feature_warm_failures_total") == 1


async def test_the_kline_parser_reads_the_documented_example_row() -> None:
    # The example row of Binance's spot REST documentation for GET /api/v3/klines.
    row = [1499040000000, "0.01634790", "0.80000000", "0.01575800", "0.01577100",
           "148976.11427815", 1499644799999, "2434.19055334", 308, "1756.87402397",
           "28.46694368", "0"]  # fmt: skip
    b = BinanceKlines._bar(row, "LTCBTC", "binance", "1h", H)
    assert (b.start, b.ts_event) == (1499040000000 * 1_000_000, 1499040000000 * 1_000_000 + H)
    assert (b.open, b.high, b.low, b.close, b.volume, b.trades) == (
        0.0163479, 0.8, 0.015758, 0.015771, 148976.11427815, 308)  # fmt: skip
    with pytest.raises(HistoryError, match="malformed kline"):
        BinanceKlines._bar([1, "x"], "LTCBTC", "binance", "1h", H)
    assert SCHEMA.warmup == 200
