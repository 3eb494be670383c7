"""The feature schema: names, order, version, hash and warm-up."""

from __future__ import annotations

import math

import pytest

from levibot.features import NAN_ROW, SCHEMA, WARMUP, FeatureSchema, FeatureState
from levibot.features._schema import FIRST_VALID, NAMES, PARAMETERS, VERSION, schema_hash

REQUIRED = (
    *(f"ema_{s}" for s in (5, 9, 12, 21, 26, 50, 100, 200)),
    "rsi_14", "macd", "macd_signal", "macd_hist", "atr_14", "bb_upper", "bb_middle", "bb_lower",
    "vwap", "vol_20", "ret_1", "ret_3", "ret_12", "ret_24", "zscore_close_20",
    "zscore_volume_20", "volume_ratio_20", "close_ema_12_ratio", "bb_pctb", "atr_pct",
)  # fmt: skip

#: The hash of schema version 1. It changes only with names, order or parameters; when it
#: does, bump VERSION and retrain: models carry the hash they were trained on.
GOLDEN_HASH = "6dbcad536efce0f5"


def test_schema_names_every_required_feature_once() -> None:
    assert set(REQUIRED) <= set(SCHEMA.names)
    assert len(set(SCHEMA.names)) == len(SCHEMA.names) == 41
    assert SCHEMA.version == VERSION == 1


def test_schema_hash_is_stable_and_pinned() -> None:
    assert SCHEMA.hash == schema_hash(SCHEMA.version, SCHEMA.names, PARAMETERS) == GOLDEN_HASH
    assert len(SCHEMA.hash) == 16 and int(SCHEMA.hash, 16) >= 0


def test_schema_hash_changes_with_names_order_version_or_parameters() -> None:
    swapped = (NAMES[1], NAMES[0], *NAMES[2:])
    other_params = {**PARAMETERS, "window": 21}
    variants = {
        schema_hash(VERSION, swapped, PARAMETERS),
        schema_hash(VERSION + 1, NAMES, PARAMETERS),
        schema_hash(VERSION, NAMES, other_params),
        schema_hash(VERSION, NAMES[:-1], PARAMETERS),
    }
    assert len(variants) == 4 and SCHEMA.hash not in variants


def test_schema_index_finds_names_and_refuses_unknown_ones() -> None:
    assert SCHEMA.index("ema_5") == 0
    assert SCHEMA.names[SCHEMA.index("rsi_14")] == "rsi_14"
    assert SCHEMA.indices(["macd", "ema_5"]) == [SCHEMA.index("macd"), 0]
    with pytest.raises(KeyError, match="no_such"):
        SCHEMA.index("no_such")


def test_schema_is_frozen() -> None:
    assert isinstance(SCHEMA, FeatureSchema)
    with pytest.raises(AttributeError):
        SCHEMA.version = 2  # type: ignore[misc]


def test_state_becomes_ready_exactly_after_warmup_bars() -> None:
    assert WARMUP == SCHEMA.warmup == FeatureState.warmup == 200
    state = FeatureState()
    for i in range(WARMUP):
        assert not state.ready
        price = 100.0 + math.sin(i / 5.0)
        row = state.update(price, price + 1.0, price - 1.0, price + 0.5, 10.0 + i % 7)
        assert len(row) == len(SCHEMA.names)
        defined = [not math.isnan(x) for x in row]
        # Each feature turns on at its documented first bar and stays on.
        assert defined == [i >= first for first in FIRST_VALID]
    assert state.ready and state.bars == WARMUP


def test_nan_row_is_the_width_of_the_schema() -> None:
    assert len(NAN_ROW) == len(SCHEMA.names)
    assert all(math.isnan(x) for x in NAN_ROW)


def test_kernel_constants_are_the_schema_parameters() -> None:
    # The kernel writes its periods in as constants for speed; the hash is computed from
    # _schema's parameters. They must be the same numbers.
    from levibot.features import _schema, _state

    assert _schema.EMA_SPANS == (5, 9, 12, 21, 26, 50, 100, 200)
    kernel_ks = (_state._K5, _state._K9, _state._K12, _state._K21,
                 _state._K26, _state._K50, _state._K100, _state._K200)  # fmt: skip
    assert kernel_ks == tuple(2.0 / (s + 1) for s in _schema.EMA_SPANS)
    assert _state._W == _schema.WINDOW == _schema.BB_PERIOD == 20
    assert (_schema.RSI_PERIOD, _schema.ATR_PERIOD) == (14, 14)
    assert (_schema.MACD_FAST, _schema.MACD_SLOW, _schema.MACD_SIGNAL) == (12, 26, 9)
    assert _schema.RETURN_LAGS == (1, 3, 12, 24) and _schema.BB_NBDEV == 2.0
