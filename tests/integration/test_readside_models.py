"""The gateway's read models restored from the event log, and heard again without harm.

Real PostgreSQL: the store's own writer (``PgWriter``) logs an order's lifecycle, portfolio
snapshots, signals, alerts and risk commands; ``restore`` loads them into fresh read models;
the same messages delivered again by the bus (a JetStream redelivery after a restart) change
nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
import structlog

from levibot.messages import (
    Alert,
    AlertLevel,
    Bar,
    Fill,
    Message,
    OrderAccepted,
    OrderClosed,
    OrderIntent,
    PortfolioSnapshot,
    SetKillSwitch,
    SetRiskPolicy,
    Side,
    Signal,
    SignalSide,
    SubmitOrder,
)
from levibot.storage.postgres import Batch, PgWriter
from levibot.storage.testing import temp_database
from sidecars.gateway.errors import ApiError
from sidecars.gateway.readmodels import ReadModels
from sidecars.gateway.restore import OrderLookup, restore

pytestmark = [pytest.mark.anyio, pytest.mark.integration]
T = 1_700_000_000_000_000_000
S = 1_000_000_000


def lifecycle() -> list[Message]:
    """One order opened, filled in two parts and closed by its stop; snapshots; commands."""
    coid = "ema-BTCUSDT-1"
    base: dict[str, Any] = {"symbol": "BTCUSDT", "client_order_id": coid}
    fill: dict[str, Any] = {**base, "side": Side.BUY, "quantity": 0.5, "fee": 0.1}
    return [
        Signal(ts_event=T, ts_init=T, symbol="BTCUSDT", strategy="ema", side=SignalSide.LONG,
               probability=0.7, confidence=0.7, price=100.0),
        OrderIntent(ts_event=T, ts_init=T, **base, strategy="ema", side=Side.BUY, quantity=1.0,
                    price=100.0),
        OrderAccepted(ts_event=T, ts_init=T + 1, **base, side=Side.BUY, quantity=1.0),
        Fill(ts_event=T + S, ts_init=T + S, fill_id=f"{coid}:f1", price=100.0, **fill),
        Fill(ts_event=T + S, ts_init=T + S, fill_id=f"{coid}:f2", price=102.0, **fill),
        PortfolioSnapshot(ts_event=T + S, ts_init=T + S, cash=9_899.8, equity=10_000.0,
                          realized_pnl=0.0, unrealized_pnl=0.0, fees=0.2),
        Alert(ts_event=T + 2 * S, ts_init=T + 2 * S, alert_id="a1", level=AlertLevel.WARNING,
              source="risk", text="careful", code="X"),
        OrderClosed(ts_event=T + 3 * S, ts_init=T + 3 * S, **base, reason="stop_loss",
                    exit_price=95.0, realized_pnl=-6.2),
        PortfolioSnapshot(ts_event=T + 3 * S, ts_init=T + 3 * S, cash=9_993.6, equity=9_993.6,
                          realized_pnl=-6.2, unrealized_pnl=0.0, fees=0.3),
        SubmitOrder(ts_event=T + 4 * S, ts_init=T + 4 * S, command_id="c9", symbol="BTCUSDT",
                    side="buy", quantity=0.1),
        SetKillSwitch(ts_event=T + 5 * S, ts_init=T + 5 * S, command_id="k1", on=True),
        SetRiskPolicy(ts_event=T + 6 * S, ts_init=T + 6 * S, command_id="p1", policy="moderate"),
    ]  # fmt: skip


@pytest.fixture
async def dsn() -> AsyncIterator[str]:
    async with temp_database(migrated=True) as url:
        yield url


async def store(dsn: str, msgs: list[Message]) -> None:
    writer = PgWriter(dsn)
    try:
        await writer.write(Batch(msgs))
    finally:
        await writer.close()


def live(msgs: list[Message]) -> ReadModels:
    """The views a gateway that heard ``msgs`` on the bus holds (commands via REST)."""
    models = ReadModels()
    for msg in msgs:
        if isinstance(msg, SubmitOrder):
            models.submitted(msg)
        elif not isinstance(msg, SetKillSwitch | SetRiskPolicy):
            models.apply(msg)
    return models


def point(p: Any) -> tuple[int, float]:
    """Return an equity point (``{"ts", "equity"}`` or ``[ts, equity]``) as a pair."""
    return (p["ts"], p["equity"]) if isinstance(p, dict) else (p[0], p[1])


def shown(models: ReadModels) -> dict[str, Any]:
    out: dict[str, Any] = msgspec.to_builtins(
        {
            "orders": list(models.orders.values()),
            "portfolio": models.portfolio,
            "signals": list(models.signals),
            "alerts": list(models.alerts),
            "equity": list(models.charts.equity),
            "fills": list(models.charts.fills),
        }
    )
    return out


async def test_restore_loads_what_a_gateway_that_heard_it_all_shows(dsn: str) -> None:
    msgs = lifecycle()
    await store(dsn, msgs)
    models = ReadModels()
    done = await restore(models, dsn, structlog.get_logger())
    assert done.events == len(msgs) and done.bad_rows == 0 and done.orders == 2
    assert shown(models) == shown(live(msgs))
    order = models.orders["ema-BTCUSDT-1"]
    assert (order.status, order.filled_quantity, order.avg_fill_price) == ("closed", 1.0, 101.0)
    assert models.orders["manual-c9"].status == "submitted"
    assert (models.risk.kill_switch, models.risk.policy) == (True, "moderate")
    assert point(msgspec.to_builtins(models.charts.equity[-1])) == (T + 3 * S, 9_993.6)


async def test_messages_heard_again_after_a_restore_change_nothing(dsn: str) -> None:
    msgs = lifecycle()
    await store(dsn, msgs)
    models = ReadModels()
    await restore(models, dsn, structlog.get_logger())
    before = shown(models)
    for msg in msgs:  # JetStream redelivers what the stopped gateway had not acked
        models.apply(msg)
    assert shown(models) == before


async def test_restore_keeps_only_what_each_view_holds(dsn: str) -> None:
    signals = [
        Signal(ts_event=T + i, ts_init=T + i, symbol="BTCUSDT", strategy="ema",
               side=SignalSide.LONG, probability=0.6, confidence=0.6, price=100.0 + i)
        for i in range(50)
    ]  # fmt: skip
    await store(dsn, [*lifecycle(), *signals])
    models = ReadModels(recent_signals=10)
    await restore(models, dsn, structlog.get_logger())
    assert [s.price for s in models.signals] == [100.0 + i for i in range(40, 50)]
    assert "ema-BTCUSDT-1" in models.orders  # older than the signals, in its own family


async def test_a_store_that_is_down_or_unmigrated_leaves_the_views_empty() -> None:
    events: list[tuple[str, dict[str, Any]]] = []

    class Log:
        def warning(self, event: str, **kw: Any) -> None:
            events.append((event, kw))

    models = ReadModels()
    down = "postgresql://postgres:secret@127.0.0.1:1/none"
    done = await restore(models, down, Log(), timeout_s=2.0)
    assert done.events == 0 and not models.orders
    assert events and events[0][0] == "gateway.restore_failed"
    assert "secret" not in repr(events)
    async with temp_database() as bare:  # no migrations: no events table
        done = await restore(models, bare, Log(), timeout_s=5.0)
    assert done.events == 0 and len(events) == 2


async def test_an_order_the_views_do_not_hold_is_looked_up_in_postgres(dsn: str) -> None:
    msgs = lifecycle()
    await store(dsn, msgs)
    lookup = OrderLookup(dsn)
    try:
        got = await lookup.get("ema-BTCUSDT-1")
        assert got == live(msgs).orders["ema-BTCUSDT-1"]  # the same fold as the bus's
        assert await lookup.get("never-seen") is None
    finally:
        await lookup.close()
    down = OrderLookup("postgresql://postgres@127.0.0.1:1/none", timeout_s=2.0)
    with pytest.raises(ApiError) as err:
        await down.get("ema-BTCUSDT-1")
    assert (err.value.status, err.value.code) == (503, "store_unavailable")
    await down.close()


async def test_the_charts_candles_come_back_from_the_bars_table(dsn: str) -> None:
    def bar(symbol: str, tf: str, i: int, step: int) -> Bar:
        start = T + i * step
        return Bar(ts_event=start + step, ts_init=start + step, ts_ingress=start + step,
                   symbol=symbol, venue="BINANCE",
                   timeframe=tf, start=start, open=1.0 + i, high=2.0 + i, low=0.5 + i,
                   close=1.5 + i, volume=10.0)  # fmt: skip

    hourly = [bar("BTCUSDT", "1h", i, 3600 * S) for i in range(520)]
    minutes = [bar("ETHUSDT", "1m", i, 60 * S) for i in range(7)]
    await store(dsn, [*hourly, *minutes])
    models = ReadModels()
    done = await restore(models, dsn, structlog.get_logger())
    keep = models.charts.max_bars
    assert done.bars == keep + 7
    assert list(models.charts.bars[("BTCUSDT", "1h")]) == hourly[-keep:]
    assert list(models.charts.bars[("ETHUSDT", "1m")]) == minutes
    assert models.bars["BTCUSDT"] == hourly[-1]
