"""The pre-trade checks, in their fixed order (``codes.CHECK_ORDER``), as pure functions.

Each returns ``None`` (pass) or ``(code, reason)`` for the first check that fails. The sizing
step sits between ``gate_checks`` and ``entry_checks`` (the engine runs it); the entry checks
apply only to exposure-increasing orders.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass

from levibot import valuation
from levibot.messages import TradingState
from levibot.risk.codes import DenyCode
from levibot.risk.limits import RiskLimits
from levibot.risk.state import RiskState

NS_PER_S = 1_000_000_000
Denial = tuple[DenyCode, str]


@dataclass(frozen=True, slots=True)
class NsLimits:
    """The time limits of ``RiskLimits`` in integer nanoseconds, computed once."""

    rate_window: int
    cooldown_loss: int
    cooldown_loss_global: int
    cooldown_stop: int
    cooldown_stop_global: int
    min_between: int

    @classmethod
    def of(cls, lim: RiskLimits) -> NsLimits:
        """Return the nanosecond limits of ``lim``."""

        def ns(seconds: float) -> int:
            return int(seconds * NS_PER_S)

        return cls(
            ns(lim.rate_window_s),
            ns(lim.cooldown_loss_s),
            ns(lim.cooldown_loss_global_s),
            ns(lim.cooldown_stop_loss_s),
            ns(lim.cooldown_stop_loss_global_s),
            ns(lim.min_time_between_trades_s),
        )


def gate_checks(
    s: RiskState, lim: RiskLimits, ns: NsLimits, now: int, entry: bool, confidence: float | None
) -> Denial | None:
    """Run checks 1-4: kill switch, trading state, confidence (entries), submit rate."""
    if s.kill_switch:
        return DenyCode.KILL_SWITCH, "kill switch is on"
    if s.trading_state is TradingState.HALTED:
        return DenyCode.TRADING_HALTED, "trading is halted"
    if s.trading_state is TradingState.REDUCING and entry:
        return DenyCode.REDUCING_ONLY, "trading state REDUCING allows only exposure-reducing orders"
    low = confidence is not None and not confidence >= lim.min_confidence  # NaN is low too
    if entry and lim.min_confidence > 0 and low:
        return DenyCode.LOW_CONFIDENCE, f"confidence {confidence:.4f} < {lim.min_confidence}"
    if lim.max_orders_per_window > 0:
        times = s.order_times
        del times[: bisect_right(times, now - ns.rate_window)]
        if len(times) >= lim.max_orders_per_window:
            return DenyCode.RATE_LIMIT, f"{len(times)} orders in {lim.rate_window_s:g}s"
    return None


@dataclass(slots=True)
class Exposure:
    """What an entry would add to the book, and the book it adds to."""

    symbol: str
    notional: float  # of the order
    held: float  # expected position (filled + pending) before the order, in units
    price: float
    equity: float
    exposure: float  # Σ |notional| of positions and pending orders
    open_symbols: int  # symbols with a position or a pending entry, other than this one
    spread_bps: float | None


def entry_checks(
    s: RiskState, lim: RiskLimits, ns: NsLimits, now: int, e: Exposure
) -> Denial | None:
    """Run checks 6-16 on an entry of ``e.notional``; the first failure is the denial."""
    tol = 1 + 1e-9  # a sized order may equal a limit up to float noise
    if lim.max_order_notional > 0 and e.notional > lim.max_order_notional * tol:
        return DenyCode.MAX_NOTIONAL, f"notional {e.notional:.2f} > {lim.max_order_notional}"
    after = e.held * e.price + e.notional
    if lim.max_position_notional > 0 and after > lim.max_position_notional * tol:
        return DenyCode.MAX_POSITION, f"position {after:.2f} > {lim.max_position_notional}"
    if lim.max_exposure_pct > 0:
        pct = (e.exposure + e.notional) / e.equity if e.equity > 0 else math.inf
        if pct > lim.max_exposure_pct * tol:
            return DenyCode.MAX_EXPOSURE, f"exposure {pct:.2%} > {lim.max_exposure_pct:.2%}"
    if lim.max_open_positions > 0 and e.held <= 0 and e.open_symbols >= lim.max_open_positions:
        return DenyCode.MAX_OPEN_POSITIONS, f"{lim.max_open_positions} positions already open"
    if lim.max_trades_per_day > 0 and s.day_trades >= lim.max_trades_per_day:
        return DenyCode.MAX_TRADES_PER_DAY, f"{s.day_trades} trades today (UTC)"
    cap = lim.max_daily_loss_pct * s.day_start_equity
    if lim.max_daily_loss_pct > 0 and -s.day_realized >= cap > 0:
        return DenyCode.DAILY_LOSS, f"realised loss today {-s.day_realized:.2f} >= {cap:.2f}"
    drawdown = valuation.drawdown(s.peak_equity, e.equity)
    if lim.max_drawdown_pct > 0 and drawdown >= lim.max_drawdown_pct:
        return DenyCode.MAX_DRAWDOWN, f"drawdown {drawdown:.2%} >= {lim.max_drawdown_pct:.2%}"
    sym = e.symbol
    if _cooling(now, s.last_loss_ns.get(sym, 0), ns.cooldown_loss) or _cooling(
        now, s.last_loss_global_ns, ns.cooldown_loss_global
    ):
        return DenyCode.COOLDOWN_LOSS, "cooling down after a loss"
    if _cooling(now, s.last_stop_ns.get(sym, 0), ns.cooldown_stop) or _cooling(
        now, s.last_stop_global_ns, ns.cooldown_stop_global
    ):
        return DenyCode.COOLDOWN_STOP_LOSS, "cooling down after a stop-loss"
    if _cooling(now, s.last_trade_ns.get(sym, 0), ns.min_between):
        return DenyCode.MIN_TIME_BETWEEN_TRADES, (
            f"last {sym} trade less than {lim.min_time_between_trades_s:g}s ago"
        )
    wide = e.spread_bps is not None and not e.spread_bps <= lim.max_spread_bps  # NaN too
    if lim.max_spread_bps > 0 and wide:
        return DenyCode.MAX_SPREAD, f"spread {e.spread_bps:.2f} bps > {lim.max_spread_bps}"
    return None


def _cooling(now: int, since: int, window: int) -> bool:
    return window > 0 and since > 0 and now - since < window
