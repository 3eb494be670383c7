"""The one portfolio: fee and slippage arithmetic, PnL, the equity identities, clamps."""

from __future__ import annotations

import pytest

from levibot.execution import PaperVenue, Portfolio
from levibot.messages import Side

FEE = 10.0 / 1e4  # 10 bps


def test_buy_pays_slippage_and_fee_and_sell_gets_less_by_both() -> None:
    venue = PaperVenue(fee_bps=10.0, slippage_bps=2.0, fill="close")
    p = Portfolio(10_000.0)
    buy_px = venue.price(Side.BUY, 100.0)
    assert buy_px == pytest.approx(100.02)  # 100 * (1 + 2 bps)
    a = p.apply("A", Side.BUY, 1.0, buy_px, venue.fee_rate, 1)
    assert a is not None and a.fee == pytest.approx(0.10002)  # notional 100.02 * 10 bps
    assert p.state.cash == pytest.approx(10_000 - 100.02 - 0.10002)
    sell_px = venue.price(Side.SELL, 110.0)
    assert sell_px == pytest.approx(109.978)  # 110 * (1 - 2 bps)
    b = p.apply("A", Side.SELL, 1.0, sell_px, venue.fee_rate, 2)
    assert b is not None and b.fee == pytest.approx(0.109978)
    # realised PnL is net of both fees of the round trip
    assert b.realized_pnl == pytest.approx(109.978 - 100.02 - 0.109978 - 0.10002)
    assert p.state.cash == pytest.approx(10_000 + b.realized_pnl)
    assert p.state.fees == pytest.approx(0.10002 + 0.109978)
    assert p.state.holdings == {} and b.position_after == 0.0


def test_average_price_and_partial_close() -> None:
    p = Portfolio(10_000.0)
    p.apply("A", Side.BUY, 2.0, 100.0, 0.0, 1)
    p.apply("A", Side.BUY, 2.0, 110.0, 0.0, 2)
    h = p.state.holdings["A"]
    assert h.avg_price == pytest.approx(105.0) and h.quantity == 4.0
    a = p.apply("A", Side.SELL, 1.0, 120.0, 0.0, 3)
    assert a is not None and a.realized_pnl == pytest.approx(15.0) and a.position_after == 3.0
    assert p.state.holdings["A"].avg_price == pytest.approx(105.0)


def test_equity_is_cash_plus_positions_at_last_price_and_matches_pnl() -> None:
    p = Portfolio(10_000.0)
    p.apply("A", Side.BUY, 10.0, 100.0, FEE, 1)
    p.apply("B", Side.BUY, 0.5, 2_000.0, FEE, 1)
    p.mark("A", 90.0)
    p.mark("B", 2_200.0)
    cash = 10_000 - 1_000 * (1 + FEE) - 1_000 * (1 + FEE)
    assert p.state.cash == pytest.approx(cash)
    assert p.equity == pytest.approx(cash + 10 * 90.0 + 0.5 * 2_200.0)
    p.apply("A", Side.SELL, 4.0, 95.0, FEE, 2)
    for _ in range(2):
        assert p.equity == pytest.approx(
            p.state.cash + sum(h.quantity * h.last_price for h in p.state.holdings.values())
        )
        assert p.equity == pytest.approx(10_000 + p.state.realized_pnl + p.unrealized)
        p.mark("B", 1_500.0)
    snap = p.snapshot(5, 6)
    assert snap.equity == pytest.approx(p.equity) and snap.cash == p.state.cash
    assert [x.symbol for x in snap.positions] == ["A", "B"]
    assert snap.unrealized_pnl == pytest.approx(p.unrealized)


def test_buy_is_clamped_to_the_cash_and_sell_to_the_position() -> None:
    p = Portfolio(1_000.0)
    a = p.apply("A", Side.BUY, 100.0, 100.0, FEE, 1)
    assert a is not None and a.quantity == 9.99000999  # 1_000 / (100 * 1.001), floored
    assert 0 <= p.state.cash < 1e-3
    b = p.apply("A", Side.SELL, 50.0, 100.0, FEE, 2)
    assert b is not None and b.quantity == 9.99000999 and b.position_after == 0.0
    assert p.apply("A", Side.SELL, 1.0, 100.0, FEE, 3) is None  # nothing to sell
    assert Portfolio(0.001).apply("A", Side.BUY, 1.0, 1e6, FEE, 3) is None  # not one step


def test_equity_curve_is_bounded_and_one_point_per_timestamp() -> None:
    p = Portfolio(100.0, curve_max=3)
    for ts in (1, 2, 2, 3, 4):
        p.record(ts)
    assert [t for t, _ in p.state.curve] == [2, 3, 4]


def test_seen_ids_are_bounded_oldest_first() -> None:
    p = Portfolio(100.0, seen_max=2)
    for coid in ("a", "b", "c"):
        p.remember(coid)
    assert not p.seen("a") and p.seen("b") and p.seen("c")
