"""The batch path equals the incremental path, bit for bit, on the real BTCUSDT history."""

from __future__ import annotations

import numpy as np
import pytest

from levibot.data import Klines, ensure_btcusdt, load_klines
from levibot.features import SCHEMA, FeatureState, compute_batch


@pytest.fixture(scope="module")
def k() -> Klines:
    return load_klines(ensure_btcusdt(progress=False))


def test_batch_equals_incremental_bit_for_bit_on_real_data(k: Klines) -> None:
    batch = compute_batch(k.open, k.high, k.low, k.close, k.volume, k.ts)
    state = FeatureState()
    rows = [
        state.update(o, h, lo, c, v)
        for o, h, lo, c, v in zip(
            k.open.tolist(), k.high.tolist(), k.low.tolist(), k.close.tolist(),
            k.volume.tolist(), strict=True,
        )
    ]  # fmt: skip
    incremental = np.array(rows)
    assert batch.shape == incremental.shape == (len(k), len(SCHEMA.names))
    # array_equal with equal_nan: same bits for every number, NaN exactly at the same places.
    assert np.array_equal(batch, incremental, equal_nan=True)
    assert state.rejected == 0 and state.ready


def test_state_resumed_from_a_prefix_continues_like_one_pass(k: Klines) -> None:
    # Feeding bars in two calls (a live state after a training backfill) changes nothing.
    n = 3_000
    state = FeatureState()
    first = [state.update(*b) for b in zip(k.open[:n].tolist(), k.high[:n].tolist(),
                                           k.low[:n].tolist(), k.close[:n].tolist(),
                                           k.volume[:n].tolist(), strict=True)]  # fmt: skip
    second = [state.update(*b) for b in zip(k.open[n:2 * n].tolist(), k.high[n:2 * n].tolist(),
                                            k.low[n:2 * n].tolist(), k.close[n:2 * n].tolist(),
                                            k.volume[n:2 * n].tolist(), strict=True)]  # fmt: skip
    whole = compute_batch(k.open[: 2 * n], k.high[: 2 * n], k.low[: 2 * n], k.close[: 2 * n],
                          k.volume[: 2 * n])  # fmt: skip
    assert np.array_equal(np.array(first + second), whole, equal_nan=True)


def test_features_of_a_bar_never_depend_on_later_bars(k: Klines) -> None:
    # No look-ahead: the rows of a prefix are the same whatever follows it.
    cols = (k.open[:2_000], k.high[:2_000], k.low[:2_000], k.close[:2_000], k.volume[:2_000])
    whole = compute_batch(*cols)
    for m in (1, 199, 200, 777):
        prefix = compute_batch(k.open[:m], k.high[:m], k.low[:m], k.close[:m], k.volume[:m])
        assert np.array_equal(prefix, whole[:m], equal_nan=True)


SCALE_FREE = (
    "rsi_14", "vol_20", "ret_1", "ret_3", "ret_12", "ret_24", "zscore_close_20",
    "zscore_volume_20", "volume_ratio_20", "macd_pct", "macd_signal_pct", "macd_hist_pct",
    "atr_pct", "bb_pctb", "bb_width", "close_vwap_ratio", "hl_range_pct",
    *(f"close_ema_{s}_ratio" for s in (5, 9, 12, 21, 26, 50, 100, 200)),
)  # fmt: skip


def test_scale_free_features_do_not_change_with_the_price_or_volume_unit(k: Klines) -> None:
    # A model trained on BTC must see the same values for a coin priced at 1e-6 (no absolute
    # thresholds anywhere: TA-Lib's RSI, for one, reads 0 below a 1e-8 average move).
    n = 3_000
    o, h, lo, c, v = k.open[:n], k.high[:n], k.low[:n], k.close[:n], k.volume[:n]
    base = compute_batch(o, h, lo, c, v)
    cols = [SCHEMA.index(name) for name in SCALE_FREE]
    for price_scale, volume_scale in ((1e-6, 1e3), (1e6, 1e-4)):
        ps = price_scale
        scaled = compute_batch(o * ps, h * ps, lo * ps, c * ps, v * volume_scale)
        a, b = base[:, cols], scaled[:, cols]
        assert np.array_equal(np.isnan(a), np.isnan(b))
        ok = ~np.isnan(a)
        assert np.max(np.abs(a[ok] - b[ok]) / np.maximum(1.0, np.abs(a[ok]))) < 1e-9
