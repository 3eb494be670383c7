"""The parameterised indicator kernels: bit for bit the feature kernel at the schema's
periods, and TA-Lib (1e-9) at any other period, on the real BTCUSDT 1h klines."""

from __future__ import annotations

from functools import cache

import numpy as np
import numpy.typing as npt
import pytest
import talib

from levibot.data import Klines, ensure_btcusdt, load_klines
from levibot.features import SCHEMA, compute_batch
from levibot.features.indicators import Atr, Ema, Macd, Rsi

F64 = npt.NDArray[np.float64]


@cache
def klines() -> Klines:
    return load_klines(ensure_btcusdt(progress=False))


@cache
def features() -> F64:
    k = klines()
    return compute_batch(k.open, k.high, k.low, k.close, k.volume)


def col(name: str) -> F64:
    return features()[:, SCHEMA.index(name)]


def run(kernel: Ema | Rsi, xs: F64) -> F64:
    return np.array([kernel.update(float(x)) for x in xs])


def macd(fast: int, slow: int, signal: int) -> tuple[F64, F64, F64]:
    m = Macd(fast, slow, signal)
    out = np.array([m.update(float(c)) for c in klines().close])
    return out[:, 0], out[:, 1], out[:, 2]


def atr(period: int) -> F64:
    a, k = Atr(period), klines()
    return np.array([a.update(float(h), float(lo), float(c)) for h, lo, c in zip(
        k.high, k.low, k.close, strict=True)])  # fmt: skip


def same_bits(ours: F64, theirs: F64) -> bool:
    """Equal values and NaN exactly where the other is NaN."""
    return bool(np.array_equal(ours, theirs, equal_nan=True))


@pytest.mark.parametrize("span", [5, 9, 12, 21, 26, 50, 100, 200])
def test_ema_kernel_is_the_feature_kernel_bit_for_bit(span: int) -> None:
    ours = run(Ema(span), klines().close)
    want = col(f"ema_{span}")
    defined = ~np.isnan(want)  # the feature vector masks every column until its first value
    assert np.isnan(ours[: span - 1]).all() and not np.isnan(ours[span - 1 :]).any()
    assert same_bits(ours[defined], want[defined])


def test_macd_rsi_atr_kernels_are_the_feature_kernel_bit_for_bit() -> None:
    line, signal, hist = macd(12, 26, 9)
    for ours, name in ((line, "macd"), (signal, "macd_signal"), (hist, "macd_hist")):
        want = col(name)
        defined = ~np.isnan(want)
        assert same_bits(ours[defined], want[defined]), name
    rsi = run(Rsi(14), klines().close)
    assert same_bits(rsi[~np.isnan(col("rsi_14"))], col("rsi_14")[~np.isnan(col("rsi_14"))])
    a = atr(14)
    assert same_bits(a[~np.isnan(col("atr_14"))], col("atr_14")[~np.isnan(col("atr_14"))])


def close_to(ours: F64, ref: F64) -> None:
    assert np.array_equal(np.isnan(ours), np.isnan(ref)), "NaN (warm-up) pattern differs"
    ok = ~np.isnan(ref)
    err = np.abs(ours[ok] - ref[ok]) / np.maximum(1.0, np.abs(ref[ok]))
    assert err.max() <= 1e-9


@pytest.mark.parametrize("span", [2, 7, 10, 30, 77, 333])
def test_ema_at_any_span_equals_talib(span: int) -> None:
    close_to(run(Ema(span), klines().close), talib.EMA(klines().close, span))


@pytest.mark.parametrize(("fast", "slow", "signal"), [(5, 35, 5), (8, 17, 9), (3, 10, 16)])
def test_macd_at_any_periods_equals_talib(fast: int, slow: int, signal: int) -> None:
    ours = macd(fast, slow, signal)
    ref = talib.MACD(klines().close, fast, slow, signal)
    # TA-Lib outputs all three lines from the signal line's first value on.
    start = slow + signal - 2
    for o, r in zip(ours, ref, strict=True):
        close_to(o[start:], r[start:])
    assert np.isnan(ours[2][:start]).all()


@pytest.mark.parametrize("period", [2, 7, 21, 50])
def test_rsi_and_atr_at_any_period_equal_talib(period: int) -> None:
    k = klines()
    rsi, ref = run(Rsi(period), k.close), talib.RSI(k.close, period)
    flat = ref == 0.0  # TA-Lib reads a window without movement as 0; ours as 50
    close_to(np.where(flat, 0.0, rsi), ref)
    close_to(atr(period), talib.ATR(k.high, k.low, k.close, period))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Ema(0), "EMA span must be an integer >= 1"),
        (lambda: Macd(26, 12, 9), "must be below the slow period"),
        (lambda: Rsi(True), "RSI period must be an integer"),
    ],
)
def test_bad_periods_are_refused_with_a_clear_error(make: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()  # type: ignore[operator]
