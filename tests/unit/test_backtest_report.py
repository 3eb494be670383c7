"""The backtest's report arithmetic and parameter mapping, on hand-made messages."""

from __future__ import annotations

import math

import pytest

from levibot.backtest import BacktestError, build_trades, equity_curve, strategy_overrides
from levibot.backtest.report import max_drawdown, sharpe
from levibot.messages import Bar, Fill, PortfolioSnapshot, Position, Side

H = 3_600_000_000_000


def bar(i: int, close: float, symbol: str = "BTCUSDT") -> Bar:
    return Bar(
        ts_event=(i + 1) * H, ts_init=(i + 1) * H, symbol=symbol, venue="X", timeframe="1h",
        start=i * H, open=close, high=close, low=close, close=close, volume=1.0,
    )  # fmt: skip


def fill(ts: int, side: Side, qty: float, price: float, fee: float, pnl: float = 0.0,
         after: float = 0.0, reason: str = "signal") -> Fill:  # fmt: skip
    return Fill(
        ts_event=ts, ts_init=ts, symbol="BTCUSDT", fill_id=f"f{ts}", client_order_id=f"o{ts}",
        side=side, quantity=qty, price=price, fee=fee, realized_pnl=pnl, reason=reason,
        position_after=after,
    )  # fmt: skip


def snap(ts: int, cash: float, qty: float = 0.0, last: float = 0.0) -> PortfolioSnapshot:
    positions = (
        (Position(symbol="BTCUSDT", quantity=qty, avg_price=last, last_price=last,
                  unrealized_pnl=0.0),) if qty else ()
    )  # fmt: skip
    return PortfolioSnapshot(
        ts_event=ts, ts_init=ts, cash=cash, equity=0.0, realized_pnl=0.0, unrealized_pnl=0.0,
        fees=0.0, positions=positions,
    )  # fmt: skip


def test_a_buy_and_its_sell_make_one_trade_whose_fee_includes_the_entry_fee() -> None:
    fills = [
        fill(H, Side.BUY, 2.0, 100.0, 0.2, after=2.0),
        fill(5 * H, Side.SELL, 2.0, 110.0, 0.22, pnl=19.58, after=0.0, reason="take_profit"),
    ]
    (t,) = build_trades(fills, {"BTCUSDT": 120.0})
    assert (t.entry_ns, t.exit_ns, t.qty, t.entry_price, t.exit_price) == (
        H,
        5 * H,
        2.0,
        100.0,
        110.0,
    )
    assert t.fee == pytest.approx(0.42)
    assert t.pnl == 19.58
    assert t.exit_reason == "take_profit"
    assert t.return_pct == pytest.approx(9.79)


def test_partial_sells_split_the_entry_fee_and_an_open_rest_is_marked_at_the_last_close() -> None:
    fills = [
        fill(H, Side.BUY, 4.0, 100.0, 0.4, after=4.0),
        fill(2 * H, Side.SELL, 1.0, 90.0, 0.09, pnl=-10.19, after=3.0),
    ]
    closed, still_open = build_trades(fills, {"BTCUSDT": 120.0})
    assert closed.fee == pytest.approx(0.1 + 0.09)
    assert still_open.exit_reason == "open"
    assert still_open.qty == 3.0
    assert still_open.pnl == pytest.approx(3.0 * 20.0 - 0.3)


def test_a_sell_with_no_recorded_entry_is_not_a_trade() -> None:
    assert build_trades([fill(H, Side.SELL, 1.0, 90.0, 0.09)], {}) == []


def test_equity_marks_positions_at_each_bars_close_after_that_bars_fills() -> None:
    bars = [bar(0, 100.0), bar(1, 110.0), bar(2, 90.0)]
    snaps = [
        snap(1 * H, 1000.0),
        snap(1 * H, 0.0, qty=10.0, last=100.3),  # filled at the close, with slippage: last wins
        snap(2 * H, 0.0, qty=10.0, last=110.0),
        snap(3 * H, 900.0),
    ]
    ts, equity, held = equity_curve(bars, snaps, 1000.0)
    assert ts == [H, 2 * H, 3 * H]
    assert equity == [1000.0, 1100.0, 900.0]  # marked at 100.0, not at the 100.3 fill price
    assert held == [True, True, False]


def test_equity_before_the_first_snapshot_is_the_starting_cash() -> None:
    _, equity, held = equity_curve([bar(0, 100.0)], [], 500.0)
    assert (equity, held) == ([500.0], [False])


def test_max_drawdown_is_measured_from_the_running_peak_and_profits_are_not_drawdown() -> None:
    assert max_drawdown([100.0, 120.0, 90.0, 130.0, 117.0]) == pytest.approx(0.25)
    assert max_drawdown([100.0, 110.0, 120.0]) == 0.0


def test_sharpe_annualises_per_bar_returns_and_is_zero_without_variance() -> None:
    eq = [100.0, 101.0, 100.0, 102.0]
    rets = [0.01, 100.0 / 101.0 - 1, 0.02]
    mean = sum(rets) / 3
    sd = math.sqrt(sum((r - mean) ** 2 for r in rets) / 2)
    assert sharpe(eq, 8760.0) == pytest.approx(mean / sd * math.sqrt(8760.0))
    assert sharpe([100.0, 100.0, 100.0], 8760.0) == 0.0


def test_ema_cross_params_are_the_strategys_own_at_any_span() -> None:
    out = strategy_overrides("ema_cross", {"fast": "10", "slow": "30", "long_threshold": "0.6"})
    assert out["scoring"] == {"ema_cross": {"fast": "10", "slow": "30"}, "long_threshold": "0.6"}


def test_section_params_reach_their_actor_section() -> None:
    out = strategy_overrides("rsi_macd", {"overbought": "75", "risk.notional": "500"})
    assert out["scoring"] == {"rsi_macd": {"overbought": "75"}}
    assert out["risk"] == {"notional": "500"}


@pytest.mark.parametrize(
    ("strategy", "params", "match"),
    [
        ("nope", {}, "unknown strategy"),
        ("rsi_macd", {"fast": "13", "speed": "1"}, "unknown parameter"),
        ("ema_cross", {"speed": "1"}, "unknown parameter"),
        ("ema_cross", {"gateway.port": "1"}, "unknown section"),
    ],
)
def test_bad_parameters_are_refused_with_a_clear_error(
    strategy: str, params: dict[str, str], match: str
) -> None:
    with pytest.raises(BacktestError, match=match):
        strategy_overrides(strategy, params)
