"""Risk limits, the presets that fill them and the ATR exit policies.

Every limit uses ``0`` for "disabled". Percentages are fractions (``0.15`` is 15 %).
"""

from __future__ import annotations

from typing import Any

import msgspec


class ExitPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """Stop-loss and take-profit distances in ATR multiples."""

    name: str
    sl_atr: float
    tp_atr: float


#: The exit policies ``SetRiskPolicy`` switches between.
EXIT_POLICIES: dict[str, ExitPolicy] = {
    "conservative": ExitPolicy(name="conservative", sl_atr=2.0, tp_atr=1.0),
    "moderate": ExitPolicy(name="moderate", sl_atr=1.5, tp_atr=1.5),
    "aggressive": ExitPolicy(name="aggressive", sl_atr=1.0, tp_atr=2.0),
}


class RiskLimits(msgspec.Struct, frozen=True, kw_only=True):
    """The fully resolved limits the engine checks (a preset with explicit overrides)."""

    min_confidence: float = 0.0
    max_orders_per_window: int = 0  # order submit rate: at most this many per window
    rate_window_s: float = 60.0
    max_order_notional: float = 0.0
    min_order_notional: float = 0.0
    max_position_notional: float = 0.0  # per symbol, after the order
    max_exposure_pct: float = 0.0  # Σ |position notional| / equity, after the order
    max_open_positions: int = 0
    max_trades_per_day: int = 0  # entries per UTC day
    max_daily_loss_pct: float = 0.0  # realised loss today / equity at the day's start
    max_drawdown_pct: float = 0.0  # (peak - equity) / peak
    cooldown_loss_s: float = 0.0  # per symbol, after a losing fill
    cooldown_loss_global_s: float = 0.0
    cooldown_stop_loss_s: float = 0.0  # per symbol, after a stop-loss fill
    cooldown_stop_loss_global_s: float = 0.0
    min_time_between_trades_s: float = 0.0  # per symbol, since its last approved order
    max_spread_bps: float = 0.0
    # How far a price may stray from the market: a manual order's limit from the last market
    # price when it is decided, and the venue's fill price from the price the order was sized
    # at (the intent's ``max_notional`` is ``max_order_notional`` widened by this much).
    max_price_deviation_pct: float = 0.0


#: Preset limits. "off" disables every limit (backtests against a reference library).
PRESETS: dict[str, RiskLimits] = {
    "safe": RiskLimits(
        min_confidence=0.3, max_orders_per_window=5, rate_window_s=60.0,
        max_order_notional=500.0, min_order_notional=10.0, max_position_notional=1_000.0,
        max_exposure_pct=0.5, max_open_positions=2, max_trades_per_day=10,
        max_daily_loss_pct=0.02, max_drawdown_pct=0.10,
        cooldown_loss_s=900.0, cooldown_loss_global_s=300.0,
        cooldown_stop_loss_s=3_600.0, cooldown_stop_loss_global_s=900.0,
        min_time_between_trades_s=300.0, max_spread_bps=10.0, max_price_deviation_pct=0.02,
    ),
    "normal": RiskLimits(
        min_confidence=0.2, max_orders_per_window=10, rate_window_s=60.0,
        max_order_notional=1_000.0, min_order_notional=10.0, max_position_notional=2_000.0,
        max_exposure_pct=1.0, max_open_positions=3, max_trades_per_day=20,
        max_daily_loss_pct=0.03, max_drawdown_pct=0.15,
        cooldown_loss_s=300.0, cooldown_loss_global_s=60.0,
        cooldown_stop_loss_s=1_800.0, cooldown_stop_loss_global_s=300.0,
        min_time_between_trades_s=60.0, max_spread_bps=20.0, max_price_deviation_pct=0.05,
    ),
    "aggressive": RiskLimits(
        min_confidence=0.1, max_orders_per_window=30, rate_window_s=60.0,
        max_order_notional=5_000.0, min_order_notional=10.0, max_position_notional=10_000.0,
        max_exposure_pct=1.0, max_open_positions=10, max_trades_per_day=100,
        max_daily_loss_pct=0.05, max_drawdown_pct=0.25,
        cooldown_loss_s=60.0, cooldown_loss_global_s=0.0,
        cooldown_stop_loss_s=600.0, cooldown_stop_loss_global_s=60.0,
        min_time_between_trades_s=10.0, max_spread_bps=50.0, max_price_deviation_pct=0.10,
    ),
    "off": RiskLimits(),
}  # fmt: skip


def resolve_limits(preset: str, overrides: dict[str, Any]) -> RiskLimits:
    """Return the ``preset`` limits with every non-None value of ``overrides`` applied."""
    try:
        base = PRESETS[preset]
    except KeyError:
        raise ValueError(f"unknown risk preset {preset!r}; one of {sorted(PRESETS)}") from None
    given = {k: v for k, v in overrides.items() if v is not None}
    return msgspec.structs.replace(base, **given)
