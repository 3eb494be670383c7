"""The pure risk engine: every denial code, the check order, signal mapping, drawdown."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pytest

from levibot.messages import (
    Fill,
    OrderDenied,
    OrderIntent,
    PortfolioSnapshot,
    Position,
    Side,
    Signal,
    SignalSide,
    SubmitOrder,
    TradingState,
)
from levibot.risk import DenyCode, RiskEngine, RiskLimits, SizingParams

S = 1_000_000_000
T0 = 1_700_006_400 * S  # 2023-11-15 00:00:00 UTC, a day boundary
DAY = 86_400 * S


def engine(halt_on_breach: bool = True, market: float | None = 100.0, **limits: Any) -> RiskEngine:
    """An engine that has seen BTCUSDT trade at ``market`` (manual orders size at it)."""
    eng = RiskEngine(
        RiskLimits(**limits),
        SizingParams(mode="fixed_notional", notional=1_000.0, fee_bps=10.0),
        initial_equity=10_000.0,
        halt_on_breach=halt_on_breach,
    )
    if market is not None:
        eng.mark("BTCUSDT", market, T0)
    return eng


def sig(
    side: SignalSide = SignalSide.LONG,
    ts: int = T0,
    symbol: str = "BTCUSDT",
    price: float = 100.0,
    confidence: float = 0.5,
    atr: float = 2.0,
    spread: float = 1.0,
) -> Signal:
    return Signal(
        ts_event=ts,
        ts_init=ts,
        ts_ingress=ts - 5,
        symbol=symbol,
        strategy="s",
        side=side,
        probability=0.5 + confidence / 2,
        confidence=confidence,
        price=price,
        atr=atr,
        spread_bps=spread,
    )


def fill(
    eng: RiskEngine,
    side: Side = Side.BUY,
    qty: float = 10.0,
    price: float = 100.0,
    ts: int = T0,
    symbol: str = "BTCUSDT",
    realized: float = 0.0,
    reason: str = "signal",
    coid: str = "",
) -> list[Any]:
    held = eng.state.positions.get(symbol)
    before = held.quantity if held else 0.0
    after = before + qty if side is Side.BUY else before - qty
    f = Fill(
        ts_event=ts,
        ts_init=ts,
        symbol=symbol,
        fill_id=f"{coid or ts}-{symbol}:f1",
        client_order_id=coid or f"c{ts}",
        side=side,
        quantity=qty,
        price=price,
        fee=0.0,
        realized_pnl=realized,
        reason=reason,
        position_after=after,
    )
    return eng.on_fill(f, ts)


def code(out: object) -> str:
    assert isinstance(out, OrderDenied), out
    return out.code


def manual(side: str = "buy", qty: float = 0.0, ts: int = T0, price: float = 100.0) -> SubmitOrder:
    return SubmitOrder(
        ts_event=ts,
        ts_init=ts,
        command_id=f"m{ts}{side}{qty}",
        symbol="BTCUSDT",
        side=side,
        quantity=qty,
        price=price,
    )


# ---- signal → intent ----------------------------------------------------------------------
def test_long_signal_with_no_position_buys_with_atr_exits_and_a_deterministic_id() -> None:
    eng = engine()
    out = eng.decide_signal(sig(), T0 + 7)
    assert isinstance(out, OrderIntent)
    assert out.client_order_id == f"s-BTCUSDT-{T0}"
    assert (out.side, out.quantity, out.reduce_only) == (Side.BUY, 10.0, False)
    assert out.stop_loss == pytest.approx(100 - 1.5 * 2) and out.take_profit == pytest.approx(103)
    assert (out.ts_event, out.ts_init, out.ts_ingress) == (T0, T0 + 7, T0 - 5)


def test_long_while_long_or_pending_does_nothing_no_pyramiding() -> None:
    eng = engine()
    assert isinstance(eng.decide_signal(sig(), T0), OrderIntent)
    assert eng.decide_signal(sig(ts=T0 + S), T0 + S) is None  # the buy is pending
    fill(eng, coid=f"s-BTCUSDT-{T0}")
    assert eng.decide_signal(sig(ts=T0 + 2 * S), T0 + 2 * S) is None  # filled and long


@pytest.mark.parametrize("side", [SignalSide.FLAT, SignalSide.SHORT])
def test_flat_or_short_with_a_long_position_sells_it_all_reduce_only(side: SignalSide) -> None:
    eng = engine()
    fill(eng, qty=3.5)
    out = eng.decide_signal(sig(side, ts=T0 + S, confidence=0.0), T0 + S)
    assert isinstance(out, OrderIntent)
    assert (out.side, out.quantity, out.reduce_only) == (Side.SELL, 3.5, True)
    assert out.stop_loss == 0.0 and out.take_profit == 0.0


def test_flat_or_short_with_no_position_does_nothing_spot_is_long_only() -> None:
    eng = engine()
    assert eng.decide_signal(sig(SignalSide.SHORT), T0) is None
    assert eng.decide_signal(sig(SignalSide.FLAT, ts=T0 + 1), T0) is None


def test_a_redelivered_signal_is_decided_once() -> None:
    eng = engine(min_confidence=0.9)
    assert code(eng.decide_signal(sig(), T0)) == "LOW_CONFIDENCE"
    assert eng.decide_signal(sig(), T0) is None


def test_policy_switch_changes_the_exit_prices() -> None:
    eng = engine()
    assert eng.set_policy("aggressive") and not eng.set_policy("yolo")
    out = eng.decide_signal(sig(), T0)
    assert isinstance(out, OrderIntent)
    assert out.stop_loss == pytest.approx(98.0) and out.take_profit == pytest.approx(104.0)
    eng2 = engine()
    eng2.set_policy("conservative")
    out2 = eng2.decide_signal(sig(), T0)
    assert isinstance(out2, OrderIntent)
    assert out2.stop_loss == pytest.approx(96.0) and out2.take_profit == pytest.approx(102.0)


# ---- every denial code ---------------------------------------------------------------------
def test_kill_switch_denies_everything_even_exits() -> None:
    eng = engine()
    fill(eng)
    eng.set_kill_switch(True)
    assert code(eng.decide_signal(sig(SignalSide.FLAT, ts=T0 + 1), T0)) == "KILL_SWITCH"
    assert code(eng.decide_signal(sig(symbol="ETHUSDT"), T0)) == "KILL_SWITCH"


def test_halted_denies_everything_and_reducing_allows_only_exits() -> None:
    eng = engine()
    fill(eng)
    eng.set_trading_state(TradingState.HALTED)
    assert code(eng.decide_signal(sig(SignalSide.FLAT, ts=T0 + 1), T0)) == "TRADING_HALTED"
    eng.set_trading_state(TradingState.REDUCING)
    assert code(eng.decide_signal(sig(symbol="ETHUSDT"), T0)) == "REDUCING_ONLY"
    out = eng.decide_signal(sig(SignalSide.FLAT, ts=T0 + 2), T0)
    assert isinstance(out, OrderIntent) and out.reduce_only


def test_checks_run_in_the_documented_order() -> None:
    eng = engine(min_confidence=0.9, max_spread_bps=1.0)
    eng.set_kill_switch(True)
    eng.set_trading_state(TradingState.HALTED)
    bad = sig(confidence=0.1, spread=50.0)
    assert code(eng.decide_signal(bad, T0)) == "KILL_SWITCH"
    eng.set_kill_switch(False)
    assert code(eng.decide_signal(sig(confidence=0.1, spread=50.0, ts=T0 + 1), T0)) == (
        "TRADING_HALTED"
    )
    eng.set_trading_state(TradingState.ACTIVE)
    assert code(eng.decide_signal(sig(confidence=0.1, spread=50.0, ts=T0 + 2), T0)) == (
        "LOW_CONFIDENCE"
    )
    assert code(eng.decide_signal(sig(confidence=0.95, spread=50.0, ts=T0 + 3), T0)) == (
        "MAX_SPREAD"
    )


def test_low_confidence_denies_entries_but_never_exits() -> None:
    eng = engine(min_confidence=0.3)
    assert code(eng.decide_signal(sig(confidence=0.2), T0)) == "LOW_CONFIDENCE"
    assert isinstance(eng.decide_signal(sig(confidence=0.3, ts=T0 + 1), T0), OrderIntent)
    fill(eng, coid=f"s-BTCUSDT-{T0 + 1}")
    out = eng.decide_signal(sig(SignalSide.FLAT, confidence=0.0, ts=T0 + 2), T0)
    assert isinstance(out, OrderIntent)


def test_rate_limit_is_a_sliding_window() -> None:
    eng = engine(max_orders_per_window=2, rate_window_s=60.0)
    assert isinstance(eng.decide_signal(sig(symbol="A"), T0), OrderIntent)
    assert isinstance(eng.decide_signal(sig(symbol="B"), T0 + 30 * S), OrderIntent)
    assert code(eng.decide_signal(sig(symbol="C"), T0 + 59 * S)) == "RATE_LIMIT"
    # the first order left the window at T0 + 60 s
    assert isinstance(eng.decide_signal(sig(symbol="D"), T0 + 61 * S), OrderIntent)


@pytest.mark.parametrize("price", [0.0, -1.0, math.nan, math.inf])
def test_no_usable_price_is_denied(price: float) -> None:
    assert code(engine().decide_signal(sig(price=price), T0)) == "NO_PRICE"


def test_manual_order_without_price_and_no_known_price_is_denied() -> None:
    assert code(engine(market=None).decide_manual(manual(price=0.0), T0)) == "NO_PRICE"


def test_bad_size_below_minimum_or_non_positive_quantity() -> None:
    eng = engine(min_order_notional=2_000.0)
    assert code(eng.decide_signal(sig(), T0)) == "BAD_SIZE"  # 1_000 < 2_000
    assert code(engine().decide_manual(manual(qty=-1.0), T0)) == "BAD_SIZE"
    assert code(engine().decide_manual(manual(qty=math.nan), T0)) == "BAD_SIZE"


def test_manual_garbage_side_and_short_sell_are_denied() -> None:
    assert code(engine().decide_manual(manual(side="hold"), T0)) == "BAD_ORDER"
    assert code(engine().decide_manual(manual(side="sell"), T0)) == "SHORT_NOT_ALLOWED"


def test_manual_orders_go_through_the_same_checks() -> None:
    eng = engine(max_order_notional=1_500.0)
    assert code(eng.decide_manual(manual(qty=20.0), T0)) == "MAX_NOTIONAL"  # 2_000 > 1_500
    out = eng.decide_manual(manual(qty=12.0, ts=T0 + 1), T0)
    assert isinstance(out, OrderIntent) and out.reason == "manual" and out.quantity == 12.0
    assert out.client_order_id.startswith("manual-")
    assert eng.decide_manual(manual(qty=12.0, ts=T0 + 1), T0) is None  # re-delivered command
    eng.set_kill_switch(True)
    assert code(eng.decide_manual(manual(qty=1.0, ts=T0 + 2), T0)) == "KILL_SWITCH"


def test_manual_sell_reduces_and_is_clamped_to_the_position() -> None:
    eng = engine()
    fill(eng, qty=2.0)
    out = eng.decide_manual(manual(side="sell", qty=5.0, ts=T0 + 1), T0)
    assert isinstance(out, OrderIntent)
    assert (out.side, out.quantity, out.reduce_only) == (Side.SELL, 2.0, True)


def test_max_position_per_symbol() -> None:
    eng = engine(max_position_notional=1_500.0)
    fill(eng, qty=10.0)  # 1_000 held
    assert code(eng.decide_manual(manual(qty=6.0), T0)) == "MAX_POSITION"  # 1_600 after
    assert isinstance(eng.decide_manual(manual(qty=5.0, ts=T0 + 1), T0), OrderIntent)


def test_max_total_exposure_counts_positions_and_pending_orders() -> None:
    eng = engine(max_exposure_pct=0.15)
    fill(eng, qty=10.0, symbol="A")  # 1_000 of 10_000 equity
    assert code(eng.decide_signal(sig(symbol="B"), T0)) == "MAX_EXPOSURE"  # 20 % > 15 %
    eng2 = engine(max_exposure_pct=0.15)
    assert isinstance(eng2.decide_signal(sig(symbol="A"), T0), OrderIntent)  # pending 10 %
    assert code(eng2.decide_signal(sig(symbol="B"), T0)) == "MAX_EXPOSURE"


def test_max_open_positions() -> None:
    eng = engine(max_open_positions=1)
    fill(eng, symbol="A")
    assert code(eng.decide_signal(sig(symbol="B"), T0)) == "MAX_OPEN_POSITIONS"


def test_max_trades_per_day_resets_at_the_utc_day_boundary() -> None:
    eng = engine(max_trades_per_day=2)
    for sym in ("A", "B"):
        assert isinstance(eng.decide_signal(sig(symbol=sym, ts=T0 + 1), T0 + S), OrderIntent)
    late = T0 + DAY - S  # 23:59:59 the same UTC day
    assert code(eng.decide_signal(sig(symbol="C", ts=late), late)) == "MAX_TRADES_PER_DAY"
    nxt = T0 + DAY  # 00:00:00 the next day
    assert isinstance(eng.decide_signal(sig(symbol="C", ts=nxt), nxt), OrderIntent)


def test_daily_realised_loss_limit_denies_entries() -> None:
    eng = engine(halt_on_breach=False, max_daily_loss_pct=0.01)  # 1 % of 10_000 = 100
    eng.roll_day(T0)
    fill(eng, Side.BUY, ts=T0 + 1)
    fill(eng, Side.SELL, ts=T0 + 2, price=90.0, realized=-100.0)
    assert code(eng.decide_signal(sig(ts=T0 + 3 * S), T0 + 3 * S)) == "DAILY_LOSS"
    nxt = T0 + DAY
    assert isinstance(eng.decide_signal(sig(ts=nxt), nxt), OrderIntent)


def test_daily_loss_breach_halts_trading_and_reports_it() -> None:
    eng = engine(max_daily_loss_pct=0.01)
    eng.roll_day(T0)
    fill(eng, Side.BUY, ts=T0 + 1)
    breaches = fill(eng, Side.SELL, ts=T0 + 2, price=80.0, realized=-200.0)
    assert [b.code for b in breaches] == [DenyCode.DAILY_LOSS]
    assert eng.state.trading_state is TradingState.HALTED
    assert code(eng.decide_signal(sig(ts=T0 + S), T0 + S)) == "TRADING_HALTED"


def snap(eng: RiskEngine, equity: float, ts: int) -> list[Any] | None:
    # all in cash: equity == cash
    return eng.on_snapshot(
        PortfolioSnapshot(
            ts_event=ts,
            ts_init=ts,
            cash=equity,
            equity=equity,
            realized_pnl=0.0,
            unrealized_pnl=0.0,
            fees=0.0,
        ),
        ts,
    )


def test_a_snapshot_with_a_number_not_finite_is_refused_and_a_stale_one_ignored() -> None:
    # None tells the caller the snapshot was bad input (the actor logs it); a stale one, overtaken
    # on the wire, is no error: no breach, and the book stays.
    eng = engine(max_drawdown_pct=0.10)
    assert snap(eng, 10_000.0, T0 + 2) == []
    assert snap(eng, math.nan, T0 + 3) is None
    assert snap(eng, math.inf, T0 + 3) is None
    assert snap(eng, 5_000.0, T0 + 1) == []  # stale: a 50 % fall it must not read as drawdown
    assert eng.state.cash == 10_000.0 and eng.state.snapshot_ts == T0 + 2


def test_drawdown_is_measured_from_the_peak_and_profits_are_never_drawdown() -> None:
    eng = engine(halt_on_breach=False, max_drawdown_pct=0.10)
    snap(eng, 15_000.0, T0)  # a 50 % profit
    assert eng.drawdown == 0.0 and eng.state.peak_equity == 15_000.0
    assert isinstance(eng.decide_signal(sig(), T0), OrderIntent)
    snap(eng, 14_000.0, T0 + 1)
    assert eng.drawdown == pytest.approx(1_000 / 15_000)
    assert isinstance(eng.decide_signal(sig(symbol="ETH"), T0 + 1), OrderIntent)  # 6.7 %
    snap(eng, 13_500.0, T0 + 2)  # exactly 10 % below the peak
    assert code(eng.decide_signal(sig(symbol="SOL"), T0 + 2)) == "MAX_DRAWDOWN"
    snap(eng, 16_000.0, T0 + 3)  # a new high: no drawdown at all
    assert eng.drawdown == 0.0 and eng.state.peak_equity == 16_000.0


def test_drawdown_breach_halts_and_resuming_rebases_the_peak() -> None:
    eng = engine(max_drawdown_pct=0.10)
    assert snap(eng, 10_000.0, T0 - 1) == []
    assert snap(eng, 9_500.0, T0) == []
    breaches = snap(eng, 8_900.0, T0 + 1)
    assert [b.code for b in breaches] == [DenyCode.MAX_DRAWDOWN]
    assert eng.state.trading_state is TradingState.HALTED
    assert snap(eng, 8_800.0, T0 + 2) == []  # already halted: one alert, not one per bar
    eng.set_trading_state(TradingState.ACTIVE)
    assert eng.state.peak_equity == 8_800.0
    assert isinstance(eng.decide_signal(sig(ts=T0 + 3), T0 + 3), OrderIntent)


def test_cooldown_after_a_loss_per_symbol_and_global() -> None:
    eng = engine(cooldown_loss_s=300.0, cooldown_loss_global_s=60.0)
    fill(eng, Side.BUY, symbol="A", ts=T0)
    fill(eng, Side.SELL, symbol="A", ts=T0 + S, realized=-5.0)
    assert code(eng.decide_signal(sig(symbol="B", ts=T0 + 30 * S), T0 + 30 * S)) == (
        "COOLDOWN_LOSS"
    )  # global
    assert isinstance(eng.decide_signal(sig(symbol="B", ts=T0 + 62 * S), T0 + 62 * S), OrderIntent)
    assert code(eng.decide_signal(sig(symbol="A", ts=T0 + 200 * S), T0 + 200 * S)) == (
        "COOLDOWN_LOSS"
    )  # per symbol
    assert isinstance(
        eng.decide_signal(sig(symbol="A", ts=T0 + 302 * S), T0 + 302 * S), OrderIntent
    )


def test_a_winning_exit_starts_no_loss_cooldown() -> None:
    eng = engine(cooldown_loss_s=300.0)
    fill(eng, Side.BUY, ts=T0)
    fill(eng, Side.SELL, ts=T0 + S, realized=+5.0)
    assert isinstance(eng.decide_signal(sig(ts=T0 + 2 * S), T0 + 2 * S), OrderIntent)


def test_cooldown_after_a_stop_loss_per_symbol_and_global() -> None:
    eng = engine(cooldown_stop_loss_s=600.0, cooldown_stop_loss_global_s=120.0)
    fill(eng, Side.BUY, symbol="A", ts=T0)
    fill(eng, Side.SELL, symbol="A", ts=T0 + S, realized=-1.0, reason="stop_loss")
    t = T0 + 100 * S
    assert code(eng.decide_signal(sig(symbol="B", ts=t), t)) == "COOLDOWN_STOP_LOSS"
    t = T0 + 200 * S
    assert isinstance(eng.decide_signal(sig(symbol="B", ts=t), t), OrderIntent)
    assert code(eng.decide_signal(sig(symbol="A", ts=t), t)) == "COOLDOWN_STOP_LOSS"
    t = T0 + 602 * S
    assert isinstance(eng.decide_signal(sig(symbol="A", ts=t), t), OrderIntent)


def test_minimum_time_between_trades_per_symbol() -> None:
    eng = engine(min_time_between_trades_s=60.0)
    assert isinstance(eng.decide_signal(sig(), T0), OrderIntent)
    fill(eng, coid=f"s-BTCUSDT-{T0}")
    # exits are never held back ...
    assert isinstance(
        eng.decide_signal(sig(SignalSide.FLAT, ts=T0 + 10 * S), T0 + 10 * S), OrderIntent
    )
    fill(eng, Side.SELL, ts=T0 + 10 * S, coid=f"s-BTCUSDT-{T0 + 10 * S}")
    # ... but the next entry waits 60 s from the last trade
    t = T0 + 20 * S
    assert code(eng.decide_signal(sig(ts=t), t)) == "MIN_TIME_BETWEEN_TRADES"
    assert isinstance(eng.decide_signal(sig(symbol="ETH", ts=t), t), OrderIntent)
    t = T0 + 71 * S
    assert isinstance(eng.decide_signal(sig(ts=t), t), OrderIntent)


def test_max_spread() -> None:
    eng = engine(max_spread_bps=5.0)
    assert code(eng.decide_signal(sig(spread=5.1), T0)) == "MAX_SPREAD"
    assert isinstance(eng.decide_signal(sig(spread=5.0, ts=T0 + 1), T0), OrderIntent)


def test_every_denial_code_is_reached_by_this_module() -> None:
    # keeps this file honest when a code is added: each must be asserted by a test above
    asserted = set(re.findall(r'== \(?\s*"([A-Z_]+)"', Path(__file__).read_text()))
    assert {c.value for c in DenyCode} - asserted == set()


# ---- the book -------------------------------------------------------------------------------
def test_book_is_the_last_snapshot_plus_the_fills_seen_since() -> None:
    eng = engine()
    eng.on_snapshot(
        PortfolioSnapshot(
            ts_event=T0,
            ts_init=T0,
            cash=9_000.0,
            equity=10_100.0,
            realized_pnl=0.0,
            unrealized_pnl=100.0,
            fees=0.0,
            positions=(
                Position(
                    symbol="A",
                    quantity=10.0,
                    avg_price=100.0,
                    last_price=110.0,
                    unrealized_pnl=100.0,
                ),
            ),
        ),
        T0,
    )
    assert eng.equity == pytest.approx(10_100.0)
    # a fill older than the snapshot is inside it already
    fill(eng, Side.BUY, qty=1.0, price=50.0, symbol="B", ts=T0 - 1)
    assert eng.equity == pytest.approx(10_100.0) and "B" not in eng.state.positions
    fill(eng, Side.BUY, qty=1.0, price=50.0, symbol="B", ts=T0 + 1)
    assert eng.state.cash == pytest.approx(8_950.0)
    assert eng.equity == pytest.approx(8_950.0 + 1_100.0 + 50.0)
    # the same fill re-delivered changes nothing
    fill(eng, Side.BUY, qty=1.0, price=50.0, symbol="B", ts=T0 + 1)
    assert eng.state.cash == pytest.approx(8_950.0)


def test_the_first_snapshot_sets_the_peak_so_a_smaller_account_is_no_drawdown() -> None:
    eng = engine(max_drawdown_pct=0.1)  # initial_equity 10_000 is only a placeholder
    assert snap(eng, 1_000.0, T0) == []
    assert eng.state.peak_equity == 1_000.0 and eng.drawdown == 0.0
    assert eng.state.trading_state is TradingState.ACTIVE
    assert [b.code for b in snap(eng, 850.0, T0 + 1)] == [DenyCode.MAX_DRAWDOWN]


def test_an_order_never_filled_stops_counting_after_the_pending_timeout() -> None:
    eng = RiskEngine(
        RiskLimits(), SizingParams(), initial_equity=10_000.0, pending_timeout_s=3_600.0
    )
    assert isinstance(eng.decide_signal(sig(), T0), OrderIntent)
    assert eng.decide_signal(sig(ts=T0 + 1_000 * S), T0 + 1_000 * S) is None  # still pending
    late = T0 + 3_600 * S
    out = eng.decide_signal(sig(ts=late), late)  # the lost intent no longer blocks the symbol
    assert isinstance(out, OrderIntent) and len(eng.state.pending) == 1


def test_entries_carry_the_time_exit_and_exits_do_not() -> None:
    eng = RiskEngine(RiskLimits(), SizingParams(), initial_equity=10_000.0, max_hold_s=7_200.0)
    entry = eng.decide_signal(sig(), T0)
    assert isinstance(entry, OrderIntent) and entry.max_hold_ns == 7_200 * S
    fill(eng, coid=entry.client_order_id)
    out = eng.decide_signal(sig(SignalSide.FLAT, ts=T0 + S), T0 + S)
    assert isinstance(out, OrderIntent) and out.max_hold_ns == 0


def test_a_malformed_manual_order_still_meets_the_kill_switch_first() -> None:
    eng = engine()
    eng.set_kill_switch(True)
    assert code(eng.decide_manual(manual(side="sell"), T0)) == "KILL_SWITCH"
    assert code(eng.decide_manual(manual(side="hold", ts=T0 + 1), T0)) == "KILL_SWITCH"


def test_atr_exits_can_be_turned_off() -> None:
    eng = RiskEngine(RiskLimits(), SizingParams(), initial_equity=10_000.0, atr_exits=False)
    out = eng.decide_signal(sig(atr=2.0), T0)
    assert isinstance(out, OrderIntent) and (out.stop_loss, out.take_profit) == (0.0, 0.0)


def test_a_manual_limit_far_from_the_market_is_denied() -> None:
    eng = engine(max_price_deviation_pct=0.05)  # the market is 100
    assert code(eng.decide_manual(manual(price=1.0), T0)) == "PRICE_OFF_MARKET"
    assert code(eng.decide_manual(manual(price=106.0, ts=T0 + 1), T0)) == "PRICE_OFF_MARKET"
    out = eng.decide_manual(manual(price=104.0, ts=T0 + 2), T0)
    assert isinstance(out, OrderIntent) and (out.price, out.limit_price) == (100.0, 104.0)
