"""The training set has no look-ahead: features use the past, labels the future, folds purge."""

from __future__ import annotations

import numpy as np
import pytest

from levibot.features import SCHEMA
from levibot.ml.card import ModelError
from levibot.ml.dataset import (
    Bars,
    build_dataset,
    compute_features,
    forward_returns,
    scale_free_columns,
    walk_forward,
)

HOUR = 3_600_000_000_000


def random_bars(n: int = 1200, seed: int = 0) -> Bars:
    """Return a seeded random walk of hourly OHLCV bars."""
    rng = np.random.default_rng(seed)
    close = 20_000.0 * np.exp(np.cumsum(rng.normal(scale=0.01, size=n)))
    open_ = np.concatenate([[close[0]], close[:-1]])
    spread = np.abs(rng.normal(scale=0.004, size=n)) * close
    high = np.maximum(open_, close) + spread
    low = np.minimum(open_, close) - spread
    volume = rng.lognormal(mean=3.0, sigma=0.5, size=n)
    ts = 1_600_000_000_000_000_000 + np.arange(n, dtype=np.int64) * HOUR
    return Bars(ts, open_, high, low, close, volume, source="random")


def _perturb_after(bars: Bars, t: int, seed: int = 9) -> Bars:
    rng = np.random.default_rng(seed)
    scale = np.ones(len(bars))
    scale[t + 1 :] = np.exp(rng.normal(scale=0.05, size=len(bars) - t - 1))
    wider = np.where(np.arange(len(bars)) > t, 1.01, 1.0)
    return Bars(
        bars.ts,
        bars.open * scale,
        bars.high * scale * wider,
        bars.low * scale / wider,
        bars.close * scale,
        bars.volume * scale**2,
        source="perturbed",
    )


def test_a_feature_at_t_never_changes_when_data_after_t_changes() -> None:
    bars = random_bars()
    base = compute_features(bars)
    for t in (250, 600, 1100):
        changed = compute_features(_perturb_after(bars, t))
        np.testing.assert_array_equal(changed[: t + 1], base[: t + 1])
        assert not np.allclose(changed[t + 1 :], base[t + 1 :], equal_nan=True)


def test_the_label_reads_only_the_bars_after_t_up_to_the_horizon() -> None:
    bars = random_bars()
    h, t = 4, 500
    fwd = forward_returns(bars.close, bars.ts, h)
    assert fwd[t] == pytest.approx(np.log(bars.close[t + h] / bars.close[t]))
    later = bars.close.copy()
    later[t + h + 1 :] *= 3.0  # beyond the horizon: no effect
    assert forward_returns(later, bars.ts, h)[t] == fwd[t]
    at_horizon = bars.close.copy()
    at_horizon[t + h] *= 1.1  # the bar the label reads
    assert forward_returns(at_horizon, bars.ts, h)[t] != fwd[t]
    assert np.isnan(fwd[-h:]).all()


def test_a_label_whose_window_spans_a_gap_is_dropped() -> None:
    bars = random_bars(50)
    ts = bars.ts.copy()
    ts[30:] += 5 * HOUR  # 5 missing hours between bars 29 and 30
    fwd = forward_returns(bars.close, ts, 4)
    assert np.isnan(fwd[26:30]).all()
    assert np.isfinite(fwd[25]) and np.isfinite(fwd[30])


def test_the_label_is_true_only_when_the_move_beats_the_round_trip_fee() -> None:
    bars = random_bars()
    ds = build_dataset(
        bars, horizon=3, fee_bps=10.0, names=SCHEMA.names, columns=("rsi_14", "ret_1")
    )
    assert ds.cost == pytest.approx(0.002)
    np.testing.assert_array_equal(ds.y, (ds.fwd > 0.002).astype(np.int32))
    assert np.isfinite(ds.x).all()
    assert ds.indices == (SCHEMA.index("rsi_14"), SCHEMA.index("ret_1"))


def test_scale_free_columns_exclude_price_levels_and_keep_ratios() -> None:
    cols = scale_free_columns(random_bars(), SCHEMA.names)
    for level in ("ema_12", "ema_200", "atr_14", "bb_upper", "vwap", "macd"):
        assert level not in cols
    for ratio in ("close_ema_12_ratio", "bb_pctb", "atr_pct", "rsi_14", "ret_1", "macd_hist_pct"):
        assert ratio in cols


@pytest.mark.parametrize("horizon,purge", [(1, 0), (4, 0), (4, 10), (24, 3)])
def test_walk_forward_purges_so_no_training_label_reaches_its_test_fold(
    horizon: int, purge: int
) -> None:
    bar = np.concatenate([np.arange(0, 500), np.arange(520, 1000)])  # one gap
    folds = walk_forward(bar, folds=4, horizon=horizon, purge=purge)
    assert len(folds) == 4
    seen: set[int] = set()
    for fold in folds:
        first_test_bar = bar[fold.test[0]]
        last_label_bar = bar[fold.train].max() + horizon
        assert last_label_bar < first_test_bar
        assert bar[fold.train].max() + max(horizon, purge) < first_test_bar
        assert not seen & set(fold.test.tolist())
        seen |= set(fold.test.tolist())
    assert max(seen) == len(bar) - 1


def test_walk_forward_refuses_folds_without_training_rows() -> None:
    with pytest.raises(ModelError, match="no training rows"):
        walk_forward(np.arange(20), folds=2, horizon=15, test_fraction=0.9)
