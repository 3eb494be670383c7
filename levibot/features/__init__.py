"""The one feature definition of levibot, used by training and by live scoring alike.

``SCHEMA`` names the vector; ``FeatureState`` computes it bar by bar in O(1); ``compute_batch``
computes it for whole arrays with the same kernel. Every name, its definition and its warm-up:

- ``ema_<span>`` (5, 9, 12, 21, 26, 50, 100, 200): EMA of the close, ``k = 2 / (span + 1)``,
  seeded with the SMA of the first ``span`` closes (TA-Lib's EMA), defined from bar ``span-1``.
- ``rsi_14``: Wilder's RSI as TA-Lib computes it, from bar 14. A window with no price
  movement at all gives 50 (TA-Lib gives 0).
- ``macd``, ``macd_signal``, ``macd_hist``: TA-Lib's MACD(12, 26, 9), whose fast EMA starts
  where the slow one does; all three from bar 33 (TA-Lib's lookback).
- ``atr_14``: Wilder's ATR as TA-Lib computes it, from bar 14.
- ``bb_upper``, ``bb_middle``, ``bb_lower``: TA-Lib's BBANDS(20, 2, 2, SMA) with the population
  std, from bar 19.
- ``vwap``: **rolling 20-bar** VWAP of the typical price ``(high + low + close) / 3``; it is
  not session-anchored, so it needs no calendar and means the same on any timeframe. When
  the 20 bars traded nothing it is the 20-bar SMA of the close. From bar 19.
- ``vol_20``: population std of the last 20 one-bar log returns, from bar 20.
- ``ret_<k>`` (1, 3, 12, 24): log return ``ln(close / close[k bars ago])``, from bar ``k``.
- ``zscore_close_20``: ``(close - bb_middle) / std``; ``zscore_volume_20`` the same for volume
  over 20 bars. 0 when the std is 0. From bar 19.
- ``volume_ratio_20``: ``volume / mean(volume, 20)``; 1 when the 20 bars traded nothing.
- Scale-free variants for models (price levels are not stationary):
  ``close_ema_<span>_ratio = close / ema_<span>``; ``macd_pct``, ``macd_signal_pct``,
  ``macd_hist_pct`` and ``atr_pct``: the value divided by the close; ``bb_pctb = (close -
  bb_lower) / (bb_upper - bb_lower)`` (0.5 when the bands touch); ``bb_width = (bb_upper -
  bb_lower) / bb_middle``; ``close_vwap_ratio = close / vwap``; ``hl_range_pct = (high - low) /
  close``.

Input rule (``FeatureState.update``): a bar is rejected, counted in ``rejected`` and answered
with the all-NaN vector, leaving the state untouched, unless its prices are finite, > 0 and
below 1e100 with ``low <= open, close <= high``, and its volume is finite, >= 0 and below
1e100. Zero volume is valid. Time is the caller's: the feature actor and ``compute_batch(...,
ts=...)`` drop a bar not newer than the last accepted one. Gaps in time are not filled: the
kernel sees bars in sequence, as TA-Lib does.

Numerics: EMA, RSI, MACD, ATR and the Bollinger middle band follow TA-Lib's C code step by
step (equal to it within 1e-12 relative on the real BTCUSDT history); rolling variances are
taken on values shifted near their mean and re-summed exactly once per window (and after a
volume spike leaves the window), so they do not drift on long-running live state.
"""

from __future__ import annotations

from levibot.features._batch import BatchResult, compute_batch, run_batch
from levibot.features._schema import NAMES, SCHEMA, WARMUP, FeatureSchema
from levibot.features._state import NAN_ROW, FeatureState

__all__ = [
    "NAMES",
    "NAN_ROW",
    "SCHEMA",
    "WARMUP",
    "BatchResult",
    "FeatureSchema",
    "FeatureState",
    "compute_batch",
    "run_batch",
]
