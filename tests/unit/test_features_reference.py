"""The feature set against TA-Lib and against plain numpy, on the real BTCUSDT 1h klines.

Comparison rule: ``|ours - ref| <= 1e-9 * max(1, |ref|)`` at every bar where the reference is
defined (relative for prices, absolute for values below 1 such as returns and ratios), and
NaN exactly where the reference is NaN: the warm-up of every TA-Lib feature equals TA-Lib's
lookback, so "after warm-up" means from TA-Lib's first output on.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import talib
from numpy.lib.stride_tricks import sliding_window_view

from levibot.data import ensure_btcusdt, load_klines
from levibot.features import SCHEMA, compute_batch

F64 = npt.NDArray[np.float64]
TOLERANCE = 1e-9
SMA = talib.MA_Type.SMA  # type: ignore[attr-defined]  # talib's stubs do not re-export it


class Data:
    def __init__(self) -> None:
        k = load_klines(ensure_btcusdt(progress=False))
        self.o, self.h, self.l, self.c, self.v = k.open, k.high, k.low, k.close, k.volume
        self.x = compute_batch(self.o, self.h, self.l, self.c, self.v)

    def col(self, name: str) -> F64:
        return self.x[:, SCHEMA.index(name)]


@pytest.fixture(scope="module")
def data() -> Data:
    return Data()


def assert_close(ours: F64, ref: F64, name: str) -> None:
    assert ours.shape == ref.shape
    ours_nan, ref_nan = np.isnan(ours), np.isnan(ref)
    mismatch = np.flatnonzero(ours_nan != ref_nan)
    assert mismatch.size == 0, f"{name}: NaN pattern differs first at bar {mismatch[0]}"
    ok = ~ref_nan
    err = np.abs(ours[ok] - ref[ok]) / np.maximum(1.0, np.abs(ref[ok]))
    worst = int(np.argmax(err))
    assert err[worst] <= TOLERANCE, (
        f"{name}: error {err[worst]:.3g} at bar {np.flatnonzero(ok)[worst]}"
    )


def window(a: F64, n: int = 20) -> F64:
    """Return the trailing-window view of ``a``: row i holds a[i-n+1 .. i], i >= n-1."""
    return sliding_window_view(a, n)


def pad(values: F64, n: int) -> F64:
    return np.concatenate([np.full(n, np.nan), values])


def test_real_data_is_the_full_btcusdt_history(data: Data) -> None:
    assert data.x.shape == (55_765, len(SCHEMA.names))


@pytest.mark.parametrize("span", [5, 9, 12, 21, 26, 50, 100, 200])
def test_ema_matches_talib_with_its_sma_seed(data: Data, span: int) -> None:
    assert_close(data.col(f"ema_{span}"), talib.EMA(data.c, span), f"ema_{span}")


def test_rsi_matches_talib_wilder_rsi(data: Data) -> None:
    assert_close(data.col("rsi_14"), talib.RSI(data.c, 14), "rsi_14")


def test_macd_matches_talib_macd_with_aligned_fast_ema(data: Data) -> None:
    macd, signal, hist = talib.MACD(data.c, 12, 26, 9)
    assert_close(data.col("macd"), macd, "macd")
    assert_close(data.col("macd_signal"), signal, "macd_signal")
    assert_close(data.col("macd_hist"), hist, "macd_hist")
    # The aligned seed is what makes this pass: the standalone EMA(12) differs early on.
    early = slice(33, 60)
    assert not np.allclose(
        data.col("macd")[early], (data.col("ema_12") - data.col("ema_26"))[early]
    )


def test_atr_matches_talib_wilder_atr(data: Data) -> None:
    assert_close(data.col("atr_14"), talib.ATR(data.h, data.l, data.c, 14), "atr_14")


def test_bollinger_bands_match_talib_bbands(data: Data) -> None:
    upper, middle, lower = talib.BBANDS(data.c, 20, 2.0, 2.0, SMA)
    assert_close(data.col("bb_upper"), upper, "bb_upper")
    assert_close(data.col("bb_middle"), middle, "bb_middle")
    assert_close(data.col("bb_lower"), lower, "bb_lower")


def test_bollinger_std_is_accurate_not_just_close_to_the_price(data: Data) -> None:
    # The bands are compared relative to the price; the std itself must be good relative to
    # itself too (z-scores divide by it): compare with a two-pass numpy std.
    std = (data.col("bb_upper") - data.col("bb_middle")) / 2.0
    ref = pad(window(data.c).std(axis=1), 19)
    ok = ~np.isnan(ref)
    assert np.max(np.abs(std[ok] - ref[ok]) / ref[ok]) < 1e-9


def test_vol_20_matches_talib_stddev_of_log_returns(data: Data) -> None:
    returns = np.concatenate([[np.nan], np.diff(np.log(data.c))])
    assert_close(data.col("vol_20"), talib.STDDEV(returns, 20, 1.0), "vol_20")


def _log_return(c: F64, k: int) -> F64:
    return pad(np.log(c[k:] / c[:-k]), k)


def _close_over_ema(c: F64, span: int) -> F64:
    return c / talib.EMA(c, span)


def _zscore(x: F64, rows: F64) -> F64:
    mean, std = rows.mean(axis=1), rows.std(axis=1)
    z = np.divide(x[19:] - mean, std, out=np.zeros_like(mean), where=std > 0)
    return pad(z, 19)


def _build_references(d: Data) -> dict[str, Callable[[], F64]]:
    c, v = d.c, d.v
    tp = (d.h + d.l + c) / 3.0
    vsum = window(v).sum(axis=1)
    sma = window(c).mean(axis=1)
    vwap = pad(
        np.where(vsum > 0, window(tp * v).sum(axis=1) / np.where(vsum > 0, vsum, 1), sma), 19
    )
    vmean = window(v).mean(axis=1)
    middle = talib.BBANDS(c, 20, 2.0, 2.0, SMA)[1]
    std = pad(window(c).std(axis=1), 19)
    macd, signal, hist = talib.MACD(c, 12, 26, 9)
    refs: dict[str, Callable[[], F64]] = {
        "vwap": lambda: vwap,
        "zscore_close_20": lambda: _zscore(c, window(c)),
        "zscore_volume_20": lambda: _zscore(v, window(v)),
        "volume_ratio_20": lambda: pad(
            np.where(vmean > 0, v[19:] / np.where(vmean > 0, vmean, 1), 1.0), 19
        ),
        "macd_pct": lambda: macd / c,
        "macd_signal_pct": lambda: signal / c,
        "macd_hist_pct": lambda: hist / c,
        "atr_pct": lambda: talib.ATR(d.h, d.l, c, 14) / c,
        "bb_pctb": lambda: (c - (middle - 2 * std)) / (4 * std),
        "bb_width": lambda: 4 * std / middle,
        "close_vwap_ratio": lambda: c / vwap,
        "hl_range_pct": lambda: (d.h - d.l) / c,
    }
    for k in (1, 3, 12, 24):
        refs[f"ret_{k}"] = partial(_log_return, c, k)
    for span in (5, 9, 12, 21, 26, 50, 100, 200):
        refs[f"close_ema_{span}_ratio"] = partial(_close_over_ema, c, span)
    return refs


@pytest.fixture(scope="module")
def references(data: Data) -> dict[str, Callable[[], F64]]:
    return _build_references(data)


DERIVED = [
    "vwap", "zscore_close_20", "zscore_volume_20", "volume_ratio_20", "macd_pct",
    "macd_signal_pct", "macd_hist_pct", "atr_pct", "bb_pctb", "bb_width",
    "close_vwap_ratio", "hl_range_pct", "ret_1", "ret_3", "ret_12", "ret_24",
    *(f"close_ema_{s}_ratio" for s in (5, 9, 12, 21, 26, 50, 100, 200)),
]  # fmt: skip


@pytest.mark.parametrize("name", DERIVED)
def test_derived_feature_matches_numpy_reference(
    data: Data, references: dict[str, Callable[[], F64]], name: str
) -> None:
    assert_close(data.col(name), references[name](), name)


def test_every_feature_has_a_reference_test() -> None:
    talib_checked = {
        *(f"ema_{s}" for s in (5, 9, 12, 21, 26, 50, 100, 200)),
        "rsi_14", "macd", "macd_signal", "macd_hist", "atr_14",
        "bb_upper", "bb_middle", "bb_lower", "vol_20",
    }  # fmt: skip
    assert talib_checked | set(DERIVED) == set(SCHEMA.names)


def test_vector_is_finite_everywhere_after_warmup(data: Data) -> None:
    after: Any = data.x[SCHEMA.warmup - 1 :]
    assert np.isfinite(after).all()
    assert np.isnan(data.x[SCHEMA.warmup - 2]).any()
