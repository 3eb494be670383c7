"""GET /charts: the candles, signals, fills and equity history the Mini App's charts draw."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from levibot.messages import Bar, Fill, PortfolioSnapshot, Side, Signal, SignalSide
from sidecars.gateway.charts import ChartHistory
from tests.unit.test_gateway_support import Harness, running_gateway

pytestmark = pytest.mark.anyio

T0 = 1_700_000_000_000_000_000
HOUR = 3_600_000_000_000


def bar(i: int, symbol: str = "BTCUSDT", close: float = 100.0, timeframe: str = "1h") -> Bar:
    start = T0 + i * HOUR
    return Bar(
        ts_event=start + HOUR, ts_init=start + HOUR, symbol=symbol, venue="binance",
        timeframe=timeframe, start=start, open=close - 1, high=close + 2, low=close - 3,
        close=close, volume=10.0 + i,
    )  # fmt: skip


def signal(i: int, symbol: str = "BTCUSDT", side: SignalSide = SignalSide.LONG) -> Signal:
    ts = T0 + (i + 1) * HOUR
    return Signal(
        ts_event=ts, ts_init=ts, symbol=symbol, strategy="lgbm", side=side, probability=0.7,
        confidence=0.4, price=100.0 + i,
    )  # fmt: skip


def fill(i: int, symbol: str = "BTCUSDT") -> Fill:
    ts = T0 + (i + 1) * HOUR
    return Fill(
        ts_event=ts, ts_init=ts, symbol=symbol, fill_id=f"f{i}", client_order_id=f"c{i}",
        side=Side.BUY, quantity=0.5, price=100.0 + i, fee=0.1,
    )  # fmt: skip


def snapshot(i: int, equity: float) -> PortfolioSnapshot:
    ts = T0 + (i + 1) * HOUR
    return PortfolioSnapshot(
        ts_event=ts, ts_init=ts, cash=equity, equity=equity, realized_pnl=0.0,
        unrealized_pnl=0.0, fees=0.0, positions=(),
    )  # fmt: skip


async def get(g: Harness, query: str = "", scope: str = "read") -> tuple[int, Any]:
    async with g.session.get(f"{g.url}/charts{query}", headers=g.h(scope)) as r:
        return r.status, await r.json()


async def test_charts_hold_the_bars_signals_fills_and_equity_seen_on_the_bus(
    tmp_path: Path,
) -> None:
    async with running_gateway(tmp_path) as g:
        status, empty = await get(g)
        assert status == 200
        assert (empty["symbol"], empty["bars"], empty["equity"]) == (None, [], [])
        for i in range(5):
            await g.actor.handle(bar(i, close=100.0 + i))
            await g.actor.handle(snapshot(i, 10_000.0 + 10 * i))
        await g.actor.handle(bar(0, "ETHUSDT", close=2000.0))
        await g.actor.handle(signal(1))
        await g.actor.handle(signal(2, side=SignalSide.SHORT))
        await g.actor.handle(signal(2, "ETHUSDT"))
        await g.actor.handle(fill(3))
        await g.actor.handle(fill(0, "ETHUSDT"))

        status, chart = await get(g, "?symbol=BTCUSDT")
        assert status == 200, chart
        assert (chart["symbol"], chart["timeframe"]) == ("BTCUSDT", "1h")
        assert chart["symbols"] == ["BTCUSDT", "ETHUSDT"]
        assert [b["close"] for b in chart["bars"]] == [100.0, 101.0, 102.0, 103.0, 104.0]
        assert chart["bars"][0]["start"] == T0 and chart["bars"][0]["high"] == 102.0
        assert [(s["side"], s["price"]) for s in chart["signals"]] == [
            ("long", 101.0),
            ("short", 102.0),
        ]
        assert [f["fill_id"] for f in chart["fills"]] == ["f3"]  # only this symbol's
        assert chart["equity"] == [
            {"ts": T0 + (i + 1) * HOUR, "equity": 10_000.0 + 10 * i} for i in range(5)
        ]

        status, chart = await get(g, "?symbol=BTCUSDT&limit=2")
        assert [b["close"] for b in chart["bars"]] == [103.0, 104.0]
        assert chart["signals"] == []  # both before the first bar shown
        assert [f["fill_id"] for f in chart["fills"]] == ["f3"]
        # No symbol: the one whose bar is the latest (ETHUSDT's only bar closed first).
        status, chart = await get(g)
        assert chart["symbol"] == "BTCUSDT"
        status, chart = await get(g, "?symbol=ETHUSDT")
        assert [f["fill_id"] for f in chart["fills"]] == ["f0"]
        assert [b["close"] for b in chart["bars"]] == [2000.0]


async def test_charts_need_the_read_scope_and_valid_parameters(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as g:
        async with g.session.get(f"{g.url}/charts") as r:
            assert r.status == 401
        for query, code in (
            ("?limit=0", "invalid_limit"),
            ("?limit=501", "invalid_limit"),
            ("?limit=x", "invalid_limit"),
            ("?symbol=BTC/USDT", "invalid_symbol"),
            ("?timeframe=1h%20", "invalid_timeframe"),
            ("?symbol=", "invalid_symbol"),
        ):
            status, err = await get(g, query)
            assert (status, err["error"]["code"]) == (400, code), query
        status, chart = await get(g, "?symbol=NOPE")
        assert status == 200 and chart["bars"] == [] and chart["symbol"] == "NOPE"


def test_history_is_bounded_ordered_and_corrected_in_place() -> None:
    h = ChartHistory(max_bars=3, max_fills=2, max_equity=3)
    for i in range(5):
        h.bar(bar(i, close=float(i)))
    h.bar(bar(4, close=44.0))  # the same bar again, corrected: replaces the last one
    h.bar(bar(1, close=11.0))  # an old bar late: ignored (the time axis only goes forward)
    view = h.view("BTCUSDT", [])
    assert [b["close"] for b in view.bars] == [2.0, 3.0, 44.0]
    for i in range(4):
        h.fill(fill(i))
        h.portfolio(snapshot(i, float(i)))
    h.portfolio(snapshot(3, 33.0))  # the same instant: replaces
    h.portfolio(snapshot(0, -1.0))  # older than the last point: ignored
    assert [f.fill_id for f in h.fills] == ["f2", "f3"]
    assert [p.equity for p in h.equity] == [1.0, 2.0, 33.0]
    # Another timeframe of the same symbol is its own series; the default is the latest's.
    h.bar(bar(5, timeframe="1m", close=7.0))
    assert h.view("BTCUSDT", []).timeframe == "1m"
    assert [b["close"] for b in h.view("BTCUSDT", [], timeframe="1h").bars] == [2.0, 3.0, 44.0]
