"""A manual order's price is a limit, never a sizing price (the price-bypass exploit).

The exploit: ``POST /orders`` with ``quantity=0`` and ``price=1.0`` used to be sized at the
caller's price. With the ``normal`` preset (``max_order_notional`` 1,000) and the market at
40,000, the engine approved 1,000 units (40M at market) and the paper venue filled what the
cash allowed. These tests replay it through the real risk and order actors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from levibot.actors.order import OrderActor, OrderConfig
from levibot.actors.risk import RiskActor, RiskConfig
from levibot.clock import ReplayClock
from levibot.execution import refusal
from levibot.messages import (
    Bar,
    Fill,
    Message,
    OrderClosed,
    OrderDenied,
    OrderIntent,
    Side,
    SubmitOrder,
)
from levibot.risk import PRESETS, RiskEngine, RiskLimits, SizingParams
from levibot.testing import RecordingContext

pytestmark = pytest.mark.anyio

S = 1_000_000_000
H = 3_600 * S
T0 = 1_700_006_400 * S
MARKET = 40_000.0


def bar(ts: int, close: float = MARKET, symbol: str = "BTCUSDT") -> Bar:
    return Bar(
        ts_event=ts,
        ts_init=ts,
        ts_ingress=ts,
        symbol=symbol,
        venue="binance",
        timeframe="1h",
        start=ts - H,
        open=close,
        high=close,
        low=close,
        close=close,
        volume=1.0,
        trades=1,
    )


def order(ts: int, side: str = "buy", quantity: float = 0.0, price: float = 0.0) -> SubmitOrder:
    return SubmitOrder(
        ts_event=ts,
        ts_init=ts,
        command_id=f"cmd{ts}",
        issued_by="gateway:attacker",
        symbol="BTCUSDT",
        side=side,
        quantity=quantity,
        price=price,
    )


class Execution:
    """The real risk and order actors, wired as the execution group wires them."""

    def __init__(self, tmp: Path, fill: str = "close", **risk: Any) -> None:
        self.clock = ReplayClock()
        self.risk_ctx = RecordingContext("risk", clock=self.clock)
        self.order_ctx = RecordingContext("order", clock=self.clock)
        risk.setdefault("preset", "normal")
        self.risk = RiskActor(self.risk_ctx, RiskConfig(state_dir=str(tmp), fsync=False, **risk))
        self.order = OrderActor(
            self.order_ctx,
            OrderConfig(state_dir=str(tmp), fsync=False, fill=fill, cash=100_000_000.0),
        )

    async def start(self) -> Execution:
        await self.risk.on_start()
        await self.order.on_start()
        return self

    async def send(self, msg: Message) -> None:
        """Deliver ``msg`` to whichever actor consumes it, then what that published, in order."""
        queue = [msg]
        while queue:
            m = queue.pop(0)
            self.clock.observe(m.ts_event)
            for actor, ctx in ((self.risk, self.risk_ctx), (self.order, self.order_ctx)):
                if isinstance(m, actor.consumes):
                    before = len(ctx.published)
                    await actor.handle(m)  # type: ignore[arg-type]
                    queue.extend(ctx.published[before:])

    def of(self, t: type[Any]) -> list[Any]:
        return self.risk_ctx.of_type(t) + self.order_ctx.of_type(t)


async def test_the_price_bypass_exploit_is_refused(tmp_path: Path) -> None:
    ex = await Execution(tmp_path).start()
    await ex.send(bar(T0))
    await ex.send(order(T0 + 1, quantity=0.0, price=1.0))
    (denied,) = ex.of(OrderDenied)
    assert denied.code == "PRICE_OFF_MARKET"
    assert "40000" in denied.reason and "1 " in denied.reason
    assert ex.of(OrderIntent) == [] and ex.of(Fill) == []


async def test_a_manual_order_is_sized_and_filled_at_the_market_price(tmp_path: Path) -> None:
    ex = await Execution(tmp_path).start()
    await ex.send(bar(T0))
    await ex.send(order(T0 + 1))  # no price: at market
    (intent,) = ex.of(OrderIntent)
    cap = PRESETS["normal"].max_order_notional
    assert intent.price == MARKET and intent.quantity == pytest.approx(cap / MARKET)
    assert intent.limit_price == 0.0
    (fill,) = ex.of(Fill)
    assert fill.quantity * fill.price <= cap * (1 + PRESETS["normal"].max_price_deviation_pct)


async def test_a_quantity_is_checked_at_the_market_price_not_the_callers(tmp_path: Path) -> None:
    ex = await Execution(tmp_path).start()
    await ex.send(bar(T0))
    # 1 BTC "at 990" would pass a 1,000 cap; at the market it is 40,000, and the limit is off.
    await ex.send(order(T0 + 1, quantity=1.0, price=990.0))
    await ex.send(order(T0 + 2, quantity=1.0))
    codes = [d.code for d in ex.of(OrderDenied)]
    assert codes == ["PRICE_OFF_MARKET", "MAX_NOTIONAL"]
    assert ex.of(Fill) == []


async def test_no_known_market_price_refuses_a_manual_order(tmp_path: Path) -> None:
    ex = await Execution(tmp_path).start()
    await ex.send(order(T0, quantity=0.01, price=40_000.0))
    (denied,) = ex.of(OrderDenied)
    assert denied.code == "NO_PRICE"


async def test_a_stale_market_price_refuses_a_manual_order(tmp_path: Path) -> None:
    ex = await Execution(tmp_path, max_price_age_s=60.0).start()
    await ex.send(bar(T0))
    await ex.send(order(T0 + 30 * S))
    await ex.send(order(T0 + 120 * S))
    assert len(ex.of(OrderIntent)) == 1
    (denied,) = ex.of(OrderDenied)
    assert denied.code == "NO_PRICE"


async def test_a_limit_within_the_band_is_honoured_by_the_venue(tmp_path: Path) -> None:
    ex = await Execution(tmp_path).start()
    await ex.send(bar(T0))
    # A buy limit above the market fills at the market; one below it is not marketable and
    # is closed unfilled (immediate-or-cancel), never filled above its limit.
    await ex.send(order(T0 + 1, quantity=0.01, price=MARKET * 1.01))
    await ex.send(order(T0 + 120 * S, quantity=0.01, price=MARKET * 0.99))
    fills = ex.of(Fill)
    assert len(fills) == 1 and fills[0].price <= MARKET * 1.01
    closed = [c for c in ex.of(OrderClosed) if c.reason == "rejected"]
    assert len(closed) == 1 and closed[0].client_order_id == f"manual-cmd{T0 + 120 * S}"


async def test_the_venue_rechecks_notional_at_its_fill_price(tmp_path: Path) -> None:
    # next_open: sized at the close, filled at the next open; a 20 % gap up breaches the cap.
    ex = await Execution(tmp_path, fill="next_open").start()
    await ex.send(bar(T0))
    await ex.send(order(T0 + 1))
    (intent,) = ex.of(OrderIntent)
    await ex.send(bar(T0 + 2 * H, close=MARKET * 1.2))  # the bar that opens after the order
    assert ex.of(Fill) == []
    (closed,) = ex.of(OrderClosed)
    assert closed.client_order_id == intent.client_order_id and closed.reason == "rejected"
    # ...the risk engine then forgets the pending order: the symbol is free again.
    assert ex.risk.engine.position("BTCUSDT") == 0.0


def intent(side: Side = Side.BUY, qty: float = 0.025, **kw: Any) -> OrderIntent:
    return OrderIntent(
        ts_event=T0,
        ts_init=T0,
        symbol="BTCUSDT",
        client_order_id="c1",
        strategy="manual",
        side=side,
        quantity=qty,
        price=MARKET,
        **kw,
    )


@pytest.mark.parametrize(
    ("kw", "price", "refused"),
    [
        ({}, 1e9, False),  # no limit, no bound: an exit or an old payload
        ({"max_notional": 1_050.0}, MARKET, False),
        ({"max_notional": 1_050.0}, MARKET * 1.06, True),
        ({"max_notional": 1_050.0}, float("nan"), True),
        ({"limit_price": MARKET}, MARKET, False),
        ({"limit_price": MARKET}, MARKET + 0.01, True),
        ({"limit_price": MARKET, "side": Side.SELL}, MARKET - 0.01, True),
        ({"limit_price": MARKET, "side": Side.SELL}, MARKET + 5.0, False),
    ],
)
def test_venue_refusal(kw: dict[str, Any], price: float, refused: bool) -> None:
    assert (refusal(intent(**kw), price) is not None) is refused


def test_the_engine_bounds_every_entry_intent_and_leaves_exits_unbounded() -> None:
    limits = PRESETS["normal"]
    eng = RiskEngine(limits, SizingParams(notional=500.0), initial_equity=10_000.0)
    eng.mark("BTCUSDT", MARKET, T0)
    buy = eng.decide_manual(order(T0), T0)
    assert isinstance(buy, OrderIntent)
    assert buy.max_notional == pytest.approx(1_000.0 * (1 + limits.max_price_deviation_pct))
    free = RiskEngine(RiskLimits(), SizingParams(), initial_equity=10_000.0)
    free.mark("BTCUSDT", MARKET, T0)
    # "off" has no notional limit, so no bound; a limit still travels to the venue.
    off = free.decide_manual(order(T0, quantity=0.01, price=1.0), T0)
    assert isinstance(off, OrderIntent) and off.max_notional == 0.0 and off.limit_price == 1.0
