"""The order actor: paper fills, fees and slippage, SL/TP/time exits, idempotency, restart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from levibot.actors.order import OrderActor, OrderConfig
from levibot.clock import ReplayClock
from levibot.messages import (
    Alert,
    Bar,
    Fill,
    OrderAccepted,
    OrderClosed,
    OrderIntent,
    PortfolioSnapshot,
    Quote,
    Side,
    Tick,
)
from levibot.risk import StateFileError
from levibot.testing import RecordingContext

H = 3_600 * 1_000_000_000
T0 = 1_700_006_400 * 1_000_000_000
SLIP = 2.0 / 1e4
FEE = 10.0 / 1e4


class Harness:
    def __init__(self, tmp: Path, **cfg: Any) -> None:
        self.clock = ReplayClock()
        self.ctx = RecordingContext("order", clock=self.clock)
        cfg.setdefault("state_dir", str(tmp))
        cfg.setdefault("fsync", False)
        self.actor = OrderActor(self.ctx, OrderConfig(**cfg))

    async def send(self, msg: Any) -> None:
        self.clock.observe(msg.ts_event)
        await self.actor.handle(msg)

    def of(self, t: type[Any]) -> list[Any]:
        return self.ctx.of_type(t)


async def started(tmp: Path, **cfg: Any) -> Harness:
    h = Harness(tmp, **cfg)
    await h.actor.on_start()
    return h


def bar(i: int, o: float, hi: float, lo: float, c: float, symbol: str = "BTCUSDT") -> Bar:
    """Bar number ``i``: opens at T0 + i h, closes (ts_event) an hour later."""
    return Bar(
        ts_event=T0 + (i + 1) * H,
        ts_init=T0 + (i + 1) * H,
        ts_ingress=T0 + (i + 1) * H + 3,
        symbol=symbol,
        venue="binance",
        timeframe="1h",
        start=T0 + i * H,
        open=o,
        high=hi,
        low=lo,
        close=c,
        volume=1.0,
    )


def tick(ts: int, price: float, symbol: str = "BTCUSDT") -> Tick:
    return Tick(ts_event=ts, ts_init=ts, symbol=symbol, venue="binance", price=price, size=1.0)


def intent(
    ts: int,
    side: Side = Side.BUY,
    qty: float = 1.0,
    price: float = 100.0,
    sl: float = 0.0,
    tp: float = 0.0,
    hold: int = 0,
    coid: str = "",
    reduce_only: bool = False,
) -> OrderIntent:
    return OrderIntent(
        ts_event=ts,
        ts_init=ts,
        ts_ingress=ts - 9,
        symbol="BTCUSDT",
        client_order_id=coid or f"s-BTCUSDT-{ts}",
        strategy="s",
        side=side,
        quantity=qty,
        price=price,
        stop_loss=sl,
        take_profit=tp,
        max_hold_ns=hold,
        reduce_only=reduce_only,
    )


# ---- fill rules ---------------------------------------------------------------------------
@pytest.mark.anyio
async def test_close_mode_fills_at_the_signal_bars_close_with_slippage_and_fee(
    tmp_path: Path,
) -> None:
    h = await started(tmp_path, fill="close")
    await h.send(bar(0, 99.0, 101.0, 98.0, 100.0))
    await h.send(intent(T0 + H, qty=2.0, price=100.0))
    [acc] = h.of(OrderAccepted)
    [f] = h.of(Fill)
    assert acc.client_order_id == f.client_order_id == f"s-BTCUSDT-{T0 + H}"
    assert f.fill_id == f"s-BTCUSDT-{T0 + H}:f1"
    assert f.price == pytest.approx(100.0 * (1 + SLIP))
    assert f.fee == pytest.approx(2.0 * 100.0 * (1 + SLIP) * FEE)
    assert (f.ts_event, f.ts_ingress, f.position_after) == (T0 + H, T0 + H - 9, 2.0)
    snap = h.of(PortfolioSnapshot)[-1]
    assert snap.cash == pytest.approx(10_000 - 2 * f.price - f.fee)
    assert snap.equity == pytest.approx(snap.cash + 2.0 * f.price)


@pytest.mark.anyio
async def test_next_open_mode_fills_at_the_next_bars_open(tmp_path: Path) -> None:
    h = await started(tmp_path, fill="next_open")
    await h.send(bar(0, 99.0, 101.0, 98.0, 100.0))
    await h.send(intent(T0 + H))
    assert h.of(Fill) == [] and len(h.of(OrderAccepted)) == 1
    await h.send(bar(1, 102.0, 103.0, 101.0, 102.5))
    [f] = h.of(Fill)
    assert f.price == pytest.approx(102.0 * (1 + SLIP)) and f.ts_event == T0 + H
    # marked at the bar's close afterwards
    assert h.of(PortfolioSnapshot)[-1].positions[0].last_price == 102.5


@pytest.mark.anyio
async def test_next_open_fills_at_once_when_the_next_bar_already_went_by(tmp_path: Path) -> None:
    h = await started(tmp_path, fill="next_open")
    await h.send(bar(0, 99.0, 101.0, 98.0, 100.0))
    await h.send(bar(1, 104.0, 105.0, 103.0, 104.5))  # overtook the intent of bar 0
    await h.send(intent(T0 + H))
    [f] = h.of(Fill)
    assert f.price == pytest.approx(104.0 * (1 + SLIP))


@pytest.mark.anyio
async def test_ticks_fill_at_the_next_ticks_price(tmp_path: Path) -> None:
    h = await started(tmp_path, fill="close", slippage_bps=0.0)
    await h.send(tick(T0, 100.0))
    await h.send(intent(T0, side=Side.BUY))
    assert h.of(Fill) == []
    await h.send(tick(T0 + 5, 100.7))
    [f] = h.of(Fill)
    assert (f.price, f.ts_event) == (100.7, T0 + 5)


# ---- idempotency ---------------------------------------------------------------------------
@pytest.mark.anyio
async def test_the_same_intent_twice_fills_once_even_across_a_restart(tmp_path: Path) -> None:
    h = await started(tmp_path, fill="close")
    i = intent(T0)
    await h.send(i)
    await h.send(i)
    assert len(h.of(Fill)) == 1 and len(h.of(OrderAccepted)) == 1
    assert h.ctx.metrics.value("levibot_order_duplicates_total") == 1
    again = await started(tmp_path, fill="close")
    # At start it re-publishes the outputs it saved (the outbox: the same messages, same ids)...
    assert again.of(Fill) == h.of(Fill) and again.of(OrderAccepted) == h.of(OrderAccepted)
    again.ctx.published.clear()
    await again.send(i)
    # ...and the redelivered intent fills nothing new.
    assert again.of(Fill) == [] and again.of(OrderAccepted) == []
    assert again.actor.portfolio.state.holdings["BTCUSDT"].quantity == 1.0


@pytest.mark.anyio
async def test_a_restarted_actor_continues_the_portfolio_and_its_pending_orders(
    tmp_path: Path,
) -> None:
    h = await started(tmp_path, fill="next_open")
    await h.send(bar(0, 99.0, 101.0, 98.0, 100.0))
    await h.send(intent(T0 + H, coid="first"))
    await h.send(bar(1, 100.0, 101.0, 99.0, 100.0))
    await h.send(intent(T0 + 2 * H, side=Side.SELL, qty=0.5, coid="second", reduce_only=True))
    cash = h.actor.portfolio.state.cash
    # killed here: no on_stop. A new process picks up from the file.
    r = await started(tmp_path, fill="next_open")
    r.ctx.published.clear()  # what it re-published at start (its outbox) is not a new fill
    assert r.actor.portfolio.state.cash == cash
    assert [i.client_order_id for i in r.actor.venue.pending()] == ["second"]
    await r.send(bar(2, 110.0, 111.0, 109.0, 110.0))
    [f] = r.of(Fill)
    assert (f.client_order_id, f.quantity, f.position_after) == ("second", 0.5, 0.5)
    assert f.realized_pnl > 0


@pytest.mark.anyio
async def test_a_corrupt_portfolio_file_refuses_to_start(tmp_path: Path) -> None:
    (tmp_path / "portfolio.json").write_text("{not json")
    with pytest.raises(StateFileError, match=r"portfolio\.json"):
        await started(tmp_path)


# ---- exits ---------------------------------------------------------------------------------
async def long_at_100(tmp_path: Path, **kw: Any) -> Harness:
    h = await started(tmp_path, fill="close", slippage_bps=0.0, fee_bps=0.0)
    await h.send(bar(0, 100.0, 100.0, 100.0, 100.0))
    await h.send(intent(T0 + H, qty=1.0, price=100.0, coid="entry", **kw))
    return h


@pytest.mark.anyio
async def test_bar_touching_the_stop_exits_at_the_stop(tmp_path: Path) -> None:
    h = await long_at_100(tmp_path, sl=95.0, tp=110.0)
    await h.send(bar(1, 99.0, 104.0, 94.0, 97.0))
    exit_fill = h.of(Fill)[-1]
    assert (exit_fill.reason, exit_fill.price, exit_fill.position_after) == ("stop_loss", 95.0, 0)
    assert exit_fill.client_order_id == "entry:stop_loss"
    [closed] = h.of(OrderClosed)
    assert (closed.client_order_id, closed.reason, closed.realized_pnl) == (
        "entry",
        "stop_loss",
        -5.0,
    )


@pytest.mark.anyio
async def test_bar_gapping_through_the_stop_exits_at_the_open(tmp_path: Path) -> None:
    h = await long_at_100(tmp_path, sl=95.0, tp=110.0)
    await h.send(bar(1, 90.0, 92.0, 88.0, 91.0))
    assert h.of(Fill)[-1].price == 90.0


@pytest.mark.anyio
async def test_bar_touching_the_take_profit_exits_at_it(tmp_path: Path) -> None:
    h = await long_at_100(tmp_path, sl=95.0, tp=110.0)
    await h.send(bar(1, 101.0, 111.0, 99.0, 108.0))
    f = h.of(Fill)[-1]
    assert (f.reason, f.price, f.realized_pnl) == ("take_profit", 110.0, 10.0)


@pytest.mark.anyio
async def test_bar_touching_both_stop_and_take_profit_takes_the_stop(tmp_path: Path) -> None:
    h = await long_at_100(tmp_path, sl=95.0, tp=110.0)
    await h.send(bar(1, 100.0, 112.0, 94.0, 111.0))
    f = h.of(Fill)[-1]
    assert (f.reason, f.price) == ("stop_loss", 95.0)
    assert [c.reason for c in h.of(OrderClosed)] == ["stop_loss"]


@pytest.mark.anyio
async def test_ticks_exit_at_the_tick_price_for_stop_and_take_profit(tmp_path: Path) -> None:
    h = await long_at_100(tmp_path, sl=95.0, tp=110.0)
    await h.send(tick(T0 + H + 1, 96.0))
    assert len(h.of(Fill)) == 1
    await h.send(tick(T0 + H + 2, 94.5))
    assert (h.of(Fill)[-1].reason, h.of(Fill)[-1].price) == ("stop_loss", 94.5)
    h2 = await long_at_100(tmp_path / "b", sl=95.0, tp=110.0)
    await h2.send(tick(T0 + H + 1, 110.2))
    assert (h2.of(Fill)[-1].reason, h2.of(Fill)[-1].price) == ("take_profit", 110.2)


@pytest.mark.anyio
async def test_a_position_held_past_max_hold_exits_at_the_close(tmp_path: Path) -> None:
    h = await long_at_100(tmp_path, hold=2 * H)
    await h.send(bar(1, 100.0, 101.0, 99.0, 100.5))
    assert len(h.of(Fill)) == 1
    await h.send(bar(2, 100.5, 102.0, 100.0, 101.0))  # closes 2 h after the entry
    f = h.of(Fill)[-1]
    assert (f.reason, f.price) == ("time_exit", 101.0)
    assert h.actor.portfolio.state.holdings == {}


# ---- bad input and the rest ----------------------------------------------------------------
@pytest.mark.anyio
async def test_reduce_only_with_nothing_to_sell_is_rejected_not_crashed(tmp_path: Path) -> None:
    h = await started(tmp_path, fill="close")
    await h.send(intent(T0, side=Side.SELL, reduce_only=True, coid="x"))
    [closed] = h.of(OrderClosed)
    assert (closed.client_order_id, closed.reason) == ("x", "rejected")
    assert h.of(Alert) == [] and h.of(Fill) == []  # routine: an exit closed it first
    await h.send(intent(T0 + 1, qty=1e9, coid="y"))  # clamped to what the cash pays
    assert h.of(Fill)[0].quantity == pytest.approx(10_000 / (100 * (1 + SLIP) * (1 + FEE)))
    await h.send(intent(T0 + 2, price=100.0, qty=1.0, coid="z"))  # no cash left at all
    assert [a.code for a in h.of(Alert)] == ["ORDER_REJECTED"]
    assert [c.client_order_id for c in h.of(OrderClosed)] == ["x", "z"]


@pytest.mark.anyio
async def test_garbage_market_data_is_ignored(tmp_path: Path) -> None:
    h = await long_at_100(tmp_path, sl=95.0)
    await h.send(bar(1, float("nan"), float("nan"), float("nan"), float("nan")))
    await h.send(tick(T0 + 2 * H, -1.0))
    assert len(h.of(Fill)) == 1
    assert h.actor.portfolio.state.holdings["BTCUSDT"].last_price == 100.0


@pytest.mark.anyio
async def test_snapshots_every_n_bars_and_after_fills_and_a_curve_point_per_bar(
    tmp_path: Path,
) -> None:
    h = await started(tmp_path, fill="close", snapshot_every_bars=3)
    for i in range(6):
        await h.send(bar(i, 100.0, 101.0, 99.0, 100.0 + i))
    assert len(h.of(PortfolioSnapshot)) == 2
    await h.send(intent(T0 + 6 * H, qty=1.0, price=105.0))
    assert len(h.of(PortfolioSnapshot)) == 3
    await h.send(
        Quote(
            ts_event=T0 + 6 * H + 1,
            ts_init=0,
            symbol="BTCUSDT",
            venue="b",
            bid=109.0,
            bid_size=1.0,
            ask=111.0,
            ask_size=1.0,
        )
    )
    assert h.actor.portfolio.state.holdings["BTCUSDT"].last_price == 110.0
    assert [t for t, _ in h.actor.portfolio.state.curve] == [T0 + (i + 1) * H for i in range(6)]
    await h.actor.on_stop()
    saved = json.loads((tmp_path / "portfolio.json").read_text())
    assert len(saved["curve"]) == 6 and saved["seen_ids"] == [f"s-BTCUSDT-{T0 + 6 * H}"]


@pytest.mark.anyio
@pytest.mark.parametrize(("qty", "price"), [(0.0, 100.0), (float("nan"), 100.0), (1.0, 0.0)])
async def test_an_intent_with_a_bad_quantity_or_price_is_rejected(
    tmp_path: Path, qty: float, price: float
) -> None:
    h = await started(tmp_path, fill="close")
    await h.send(intent(T0, qty=qty, price=price, coid="bad"))
    assert [c.reason for c in h.of(OrderClosed)] == ["rejected"] and h.of(Fill) == []
    assert h.actor.portfolio.state.cash == 10_000.0


def test_an_older_bar_arriving_late_never_fills_a_newer_order() -> None:
    from levibot.execution.venue import PaperVenue
    from levibot.messages import Bar, OrderIntent, Side

    venue = PaperVenue(fee_bps=0.0, slippage_bps=0.0, fill="next_open")
    hour = 3_600_000_000_000
    intent = OrderIntent(
        ts_event=10 * hour, ts_init=10 * hour, symbol="BTC", client_order_id="c",
        strategy="s", side=Side.BUY, quantity=1.0, price=100.0,
    )  # fmt: skip

    def bar(start: int, open_: float) -> Bar:
        return Bar(
            ts_event=start + hour, ts_init=start + hour, symbol="BTC", venue="x",
            timeframe="1h", start=start, open=open_, high=open_, low=open_, close=open_,
            volume=1.0,
        )  # fmt: skip

    from levibot.execution.venue import MarketView

    assert venue.submit(intent, MarketView()) == []
    assert venue.on_market(bar(9 * hour, 90.0)) == []  # re-delivered: before the order
    (fill,) = venue.on_market(bar(10 * hour, 101.0))  # the next bar: fills at its open
    assert (fill.price, fill.ts) == (101.0, 10 * hour)
    assert venue.pending() == []
