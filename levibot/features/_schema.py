"""The feature schema: names, their order, the parameters behind them, a version and a hash.

A model is trained on one schema and may only score vectors of the same schema: the hash rides
with every ``Features`` message and in the model card. Changing a name, the order or any
parameter changes the hash; bump ``VERSION`` when you do it on purpose.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import msgspec

VERSION = 1

#: Every window and period behind the feature set. Part of the hash.
EMA_SPANS: tuple[int, ...] = (5, 9, 12, 21, 26, 50, 100, 200)
RSI_PERIOD = 14
MACD_FAST, MACD_SLOW, MACD_SIGNAL = 12, 26, 9
ATR_PERIOD = 14
BB_PERIOD, BB_NBDEV = 20, 2.0
WINDOW = 20  # vol_20, z-scores, volume ratio and the rolling VWAP
RETURN_LAGS: tuple[int, ...] = (1, 3, 12, 24)

PARAMETERS: dict[str, Any] = {
    "ema_spans": list(EMA_SPANS),
    "ema_seed": "talib_sma",
    "rsi": {"period": RSI_PERIOD, "smoothing": "wilder", "flat": 50.0},
    "macd": {"fast": MACD_FAST, "slow": MACD_SLOW, "signal": MACD_SIGNAL, "align": "talib"},
    "atr": {"period": ATR_PERIOD, "smoothing": "wilder"},
    "bbands": {"period": BB_PERIOD, "nbdev": BB_NBDEV, "std": "population"},
    "vwap": {"anchor": "rolling", "bars": WINDOW, "price": "typical_hlc3", "empty": "sma_close"},
    "window": WINDOW,
    "return_lags": list(RETURN_LAGS),
    "returns": "log",
}

# (name, index of the first bar, counted from 0, at which the value is defined). The first
# index equals TA-Lib's lookback for the features TA-Lib has.
_EMA_FIRST = [(f"ema_{s}", s - 1) for s in EMA_SPANS]
_MACD_FIRST = MACD_SLOW + MACD_SIGNAL - 2  # 33, TA-Lib's MACD lookback
_DEFINITION: tuple[tuple[str, int], ...] = (
    *_EMA_FIRST,
    ("rsi_14", RSI_PERIOD),
    ("macd", _MACD_FIRST),
    ("macd_signal", _MACD_FIRST),
    ("macd_hist", _MACD_FIRST),
    ("atr_14", ATR_PERIOD),
    ("bb_upper", BB_PERIOD - 1),
    ("bb_middle", BB_PERIOD - 1),
    ("bb_lower", BB_PERIOD - 1),
    ("vwap", WINDOW - 1),
    ("vol_20", WINDOW),
    *((f"ret_{k}", k) for k in RETURN_LAGS),
    ("zscore_close_20", WINDOW - 1),
    ("zscore_volume_20", WINDOW - 1),
    ("volume_ratio_20", WINDOW - 1),
    *((f"close_{name}_ratio", first) for name, first in _EMA_FIRST),
    ("macd_pct", _MACD_FIRST),
    ("macd_signal_pct", _MACD_FIRST),
    ("macd_hist_pct", _MACD_FIRST),
    ("atr_pct", ATR_PERIOD),
    ("bb_pctb", BB_PERIOD - 1),
    ("bb_width", BB_PERIOD - 1),
    ("close_vwap_ratio", WINDOW - 1),
    ("hl_range_pct", 0),
)

NAMES: tuple[str, ...] = tuple(name for name, _ in _DEFINITION)
FIRST_VALID: tuple[int, ...] = tuple(first for _, first in _DEFINITION)
#: Bars a fresh state needs before every feature is defined.
WARMUP: int = max(FIRST_VALID) + 1


def schema_hash(version: int, names: tuple[str, ...], parameters: dict[str, Any]) -> str:
    """Return the first 16 hex digits of the sha256 of the canonical JSON of the schema."""
    doc = {"version": version, "names": list(names), "parameters": parameters}
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class FeatureSchema(msgspec.Struct, frozen=True, kw_only=True):
    """The names of a feature vector in order, the schema version and its stable hash."""

    names: tuple[str, ...]
    version: int
    hash: str
    warmup: int = 0

    def index(self, name: str) -> int:
        """Return the position of feature ``name`` in the vector; ``KeyError`` if unknown."""
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f"unknown feature {name!r}; see levibot.features.SCHEMA.names") from None

    def indices(self, names: tuple[str, ...] | list[str]) -> list[int]:
        """Return the positions of ``names`` (a model's chosen columns), in that order."""
        return [self.index(n) for n in names]


SCHEMA = FeatureSchema(
    names=NAMES,
    version=VERSION,
    hash=schema_hash(VERSION, NAMES, PARAMETERS),
    warmup=WARMUP,
)
