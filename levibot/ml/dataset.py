"""The training set: features from the one feature module, a fee-aware forward label, and
walk-forward splits in time with a purge gap.

Timing: the features of bar ``t`` use bars ``<= t`` only (the feature module's contract, tested
here too); the label of bar ``t`` is ``log(close[t+H] / close[t]) > 2 · fee`` (a round trip),
so it uses bars ``t+1 .. t+H`` only. A label whose window spans a gap in the data is dropped.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from levibot.ml.card import ModelError


@dataclass(frozen=True)
class Bars:
    """OHLCV arrays of one symbol; ``ts`` is the bar open time in ns."""

    ts: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    source: str = ""

    def __len__(self) -> int:
        return len(self.close)

    def slice(self, stop: int) -> Bars:
        """Return the first ``stop`` bars."""
        return Bars(
            self.ts[:stop],
            self.open[:stop],
            self.high[:stop],
            self.low[:stop],
            self.close[:stop],
            self.volume[:stop],
            source=self.source,
        )

    def arrays(self) -> tuple[np.ndarray, ...]:
        """Return (ts, open, high, low, close, volume)."""
        return (self.ts, self.open, self.high, self.low, self.close, self.volume)


def load_bars(path: Path | str) -> Bars:
    """Read a kline CSV with the data module's loader."""
    from levibot.data import load_klines

    k: Any = load_klines(Path(path))
    return Bars(
        ts=np.asarray(k.ts, np.int64),
        open=np.asarray(k.open, np.float64),
        high=np.asarray(k.high, np.float64),
        low=np.asarray(k.low, np.float64),
        close=np.asarray(k.close, np.float64),
        volume=np.asarray(k.volume, np.float64),
        source=str(path),
    )


def compute_features(bars: Bars) -> np.ndarray:
    """Return the full feature matrix (n, k) of ``bars`` from the one feature module."""
    from levibot.features import compute_batch

    return np.asarray(
        compute_batch(bars.open, bars.high, bars.low, bars.close, bars.volume, bars.ts), np.float64
    )


def scale_free_columns(bars: Bars, names: Sequence[str], probe: int = 1500) -> list[str]:
    """Return the columns unchanged when prices and volumes are rescaled.

    Raw levels (EMAs, ATR, VWAP, MACD in price units) drift with the price and do not carry
    from 2017 to 2024; ratios, z-scores, returns and oscillators do. Measured, not listed by
    name, so a new feature is classified without touching this module.
    """
    b = bars.slice(min(probe, len(bars)))
    base = compute_features(b)
    scaled = compute_features(
        Bars(b.ts, b.open * 7.31, b.high * 7.31, b.low * 7.31, b.close * 7.31, b.volume * 3.7)
    )
    keep = []
    for j, name in enumerate(names):
        a, s = base[:, j], scaled[:, j]
        if not np.array_equal(np.isnan(a), np.isnan(s)):
            continue
        ok = ~np.isnan(a)
        if ok.any() and np.allclose(a[ok], s[ok], rtol=1e-6, atol=1e-9):
            keep.append(name)
    return keep


@dataclass(frozen=True)
class Dataset:
    """Rows with finite features and a label; ``bar`` is each row's index in the bars."""

    x: np.ndarray  # (n, m) float32, used columns only
    y: np.ndarray  # (n,) int 0/1
    fwd: np.ndarray  # (n,) forward log return over the horizon
    ts: np.ndarray  # (n,) bar open time, ns
    bar: np.ndarray  # (n,) int64
    names: tuple[str, ...]
    indices: tuple[int, ...]  # positions of ``names`` in the full feature vector
    horizon: int
    cost: float  # round-trip cost as a log return


def forward_returns(close: np.ndarray, ts: np.ndarray, horizon: int) -> np.ndarray:
    """Return log(close[t+H]/close[t]); NaN at the end and where the window spans a gap."""
    n = len(close)
    fwd = np.full(n, np.nan)
    if n <= horizon:
        return fwd
    fwd[: n - horizon] = np.log(close[horizon:] / close[: n - horizon])
    step = np.median(np.diff(ts)) if n > 1 else 0
    span = np.full(n, -1, np.int64)
    span[: n - horizon] = ts[horizon:] - ts[: n - horizon]
    fwd[span != horizon * step] = np.nan
    return fwd


def build_dataset(
    bars: Bars,
    *,
    horizon: int,
    fee_bps: float,
    names: Sequence[str],
    columns: Sequence[str] | None = None,
) -> Dataset:
    """Return the labelled rows of ``bars``; ``columns`` defaults to the scale-free ones."""
    if horizon < 1:
        raise ModelError("the horizon must be at least 1 bar")
    used = list(columns) if columns else scale_free_columns(bars, names)
    unknown = [c for c in used if c not in names]
    if unknown or not used:
        raise ModelError(f"unknown or no feature columns: {unknown or used}")
    idx = [list(names).index(c) for c in used]
    full = compute_features(bars)
    x = full[:, idx]
    cost = 2.0 * fee_bps / 1e4
    fwd = forward_returns(bars.close, bars.ts, horizon)
    ok = np.isfinite(x).all(axis=1) & np.isfinite(fwd)
    rows = np.flatnonzero(ok)
    if len(rows) < 100:
        raise ModelError(f"only {len(rows)} usable rows: need more data")
    return Dataset(
        x=x[rows].astype(np.float32),
        y=(fwd[rows] > cost).astype(np.int32),
        fwd=fwd[rows],
        ts=bars.ts[rows],
        bar=rows.astype(np.int64),
        names=tuple(used),
        indices=tuple(idx),
        horizon=horizon,
        cost=cost,
    )


@dataclass(frozen=True)
class Fold:
    """Row positions (into a ``Dataset``) to train and test on."""

    train: np.ndarray
    test: np.ndarray


def walk_forward(
    bar: np.ndarray, *, folds: int, horizon: int, purge: int = 0, test_fraction: float = 0.5
) -> list[Fold]:
    """Return expanding-window folds over the last ``test_fraction`` of the rows.

    Train rows precede their test fold and are purged: a train row at bar ``t`` is kept only
    when ``t + max(purge, horizon) < first test bar``, so no training label (which reads bars
    ``t+1 .. t+H``) overlaps the fold it is tested on.
    """
    gap = max(purge, horizon)
    n = len(bar)
    start = int(n * (1.0 - test_fraction))
    edges = np.linspace(start, n, folds + 1).astype(int)
    out = []
    for lo, hi in itertools.pairwise(edges):
        if hi <= lo:
            continue
        train = np.flatnonzero(bar + gap < bar[lo])
        if len(train) == 0:
            raise ModelError("a fold has no training rows: use fewer folds or more data")
        out.append(Fold(train=train, test=np.arange(lo, hi)))
    return out
