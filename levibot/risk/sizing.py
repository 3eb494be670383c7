"""Position sizing: how many units an approved entry buys.

Every mode yields a notional that is then clamped to ``max_order_notional`` and to what the
cash can pay (spot, no leverage: ``cash / (1 + fee)``); the quantity is floored to
``qty_step``. A result below ``min_order_notional`` is a ``BAD_SIZE`` denial, not a smaller order.
"""

from __future__ import annotations

import math
from typing import Literal

import msgspec

from levibot.execution.costs import FEE_BPS, QTY_STEP
from levibot.risk.limits import ExitPolicy

SizingMode = Literal["fixed_notional", "all_in", "atr_risk", "kelly"]


class SizingParams(msgspec.Struct, frozen=True, kw_only=True):
    """How entries are sized; see each mode in ``size_entry``."""

    mode: SizingMode = "fixed_notional"
    notional: float = 1_000.0  # fixed_notional
    equity_fraction: float = 1.0  # all_in: fraction of cash committed
    risk_fraction: float = 0.01  # atr_risk: fraction of equity lost if the ATR stop is hit
    kelly_fraction: float = 0.5  # kelly: fraction of the full Kelly bet
    vol_target: float = 0.02  # kelly: target per-bar volatility (atr / price)
    max_leverage: float = 1.0  # kelly: cap on the volatility scale factor
    fee_bps: float = FEE_BPS  # expected fee, so an entry leaves room to pay it
    qty_step: float = QTY_STEP


class Size(msgspec.Struct, frozen=True):
    """A sized quantity, or 0.0 with the reason why none could be sized."""

    quantity: float
    why: str = ""


def floor_step(quantity: float, step: float) -> float:
    """Return ``quantity`` floored to a multiple of ``step`` (robust to float noise)."""
    if quantity <= 0 or not math.isfinite(quantity):
        return 0.0
    n = math.floor(quantity / step + 1e-6)  # a millionth of a step absorbs float noise
    return round(n * step, 12)


def kelly_fraction(probability: float, policy: ExitPolicy) -> float:
    """Return the full Kelly fraction for a win probability and the TP/SL payoff ratio."""
    b = policy.tp_atr / policy.sl_atr
    return probability - (1.0 - probability) / b


def size_entry(
    params: SizingParams,
    *,
    price: float,
    equity: float,
    cash: float,
    atr: float,
    probability: float,
    policy: ExitPolicy,
    max_order_notional: float = 0.0,
) -> Size:
    """Return the quantity to buy at ``price`` under ``params.mode``.

    - ``fixed_notional``: ``notional / price``.
    - ``all_in``: ``equity_fraction * cash / (price * (1 + fee))``.
    - ``atr_risk``: ``equity * risk_fraction / (atr * sl_atr)``: losing the stop costs
      ``risk_fraction`` of equity.
    - ``kelly``: notional ``equity * kelly_fraction * f* * scale`` with
      ``f* = p - (1 - p) / (tp_atr / sl_atr)`` and ``scale = min(max_leverage,
      vol_target / (atr / price))`` (1 when there is no ATR); no edge (``f* <= 0``) sizes nothing.
    """
    fee = params.fee_bps / 1e4
    if params.mode == "fixed_notional":
        notional = params.notional
    elif params.mode == "all_in":
        notional = params.equity_fraction * cash / (1.0 + fee)
    elif params.mode == "atr_risk":
        if not atr > 0:
            return Size(0.0, "atr_risk sizing needs a positive ATR on the signal")
        notional = equity * params.risk_fraction / (atr * policy.sl_atr) * price
    elif params.mode == "kelly":
        edge = kelly_fraction(probability, policy)
        if not edge > 0:
            return Size(0.0, f"no Kelly edge at probability {probability:.4f}")
        vol = atr / price if atr > 0 else 0.0
        scale = min(params.max_leverage, params.vol_target / vol) if vol > 0 else 1.0
        notional = equity * params.kelly_fraction * edge * scale
    else:  # pragma: no cover - the config type rules it out
        return Size(0.0, f"unknown sizing mode {params.mode!r}")
    if max_order_notional > 0:
        notional = min(notional, max_order_notional)
    notional = min(notional, max(cash, 0.0) / (1.0 + fee))
    qty = floor_step(notional / price, params.qty_step)
    return Size(qty, "" if qty > 0 else "sized to zero (no cash or equity)")
