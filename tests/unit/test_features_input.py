"""Bad and odd input to the feature kernel: rejected by rule, counted, never a crash."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from levibot.features import NAN_ROW, SCHEMA, FeatureState, compute_batch, run_batch

W = SCHEMA.warmup


def walk(n: int, seed: int = 3) -> list[tuple[float, float, float, float, float]]:
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.concatenate([[close[0]], close[:-1]])
    high = np.maximum(open_, close) * 1.001
    low = np.minimum(open_, close) * 0.999
    volume = rng.gamma(2.0, 10.0, n)
    return [tuple(r) for r in np.column_stack([open_, high, low, close, volume]).tolist()]


BAD_BARS = [
    pytest.param((math.nan, 101.0, 99.0, 100.0, 1.0), id="nan-open"),
    pytest.param((100.0, math.inf, 99.0, 100.0, 1.0), id="inf-high"),
    pytest.param((100.0, 101.0, 99.0, -100.0, 1.0), id="negative-close"),
    pytest.param((100.0, 101.0, 0.0, 100.0, 1.0), id="zero-low"),
    pytest.param((-1.0, -0.5, -2.0, -1.0, 1.0), id="all-negative"),
    pytest.param((100.0, 99.0, 101.0, 100.0, 1.0), id="high-below-low"),
    pytest.param((100.0, 101.0, 99.0, 102.0, 1.0), id="close-above-high"),
    pytest.param((98.0, 101.0, 99.0, 100.0, 1.0), id="open-below-low"),
    pytest.param((100.0, 101.0, 99.0, 100.0, math.nan), id="nan-volume"),
    pytest.param((100.0, 101.0, 99.0, 100.0, math.inf), id="inf-volume"),
    pytest.param((100.0, 101.0, 99.0, 100.0, -1.0), id="negative-volume"),
    pytest.param((1e120, 1e120, 1e120, 1e120, 1.0), id="absurd-price"),
]


@pytest.mark.parametrize("bad", BAD_BARS)
def test_bad_bar_is_rejected_counted_and_leaves_state_untouched(
    bad: tuple[float, float, float, float, float],
) -> None:
    bars = walk(W + 30)
    clean, dirty = FeatureState(), FeatureState()
    expected = [clean.update(*b) for b in bars]
    got = []
    for i, b in enumerate(bars):
        if i in (0, 50, W - 1, W + 10):  # at the start, in warm-up, at the edge, when warm
            assert dirty.update(*bad) is NAN_ROW
        got.append(dirty.update(*b))
    assert dirty.rejected == 4 and clean.rejected == 0
    assert dirty.bars == clean.bars == len(bars)
    assert got == expected  # bit for bit: a rejected bar changed nothing


def test_zero_volume_bars_are_valid_and_every_volume_feature_stays_finite() -> None:
    bars = walk(W + 60)
    # 30 bars with no trades at all, so a whole 20-bar window traded nothing.
    bars[W + 5 : W + 35] = [(o, h, lo, c, 0.0) for o, h, lo, c, _ in bars[W + 5 : W + 35]]
    state = FeatureState()
    rows = [state.update(*b) for b in bars]
    assert state.rejected == 0
    assert np.isfinite(np.array(rows[W - 1 :])).all()
    quiet = rows[W + 34]  # the 20 bars up to here all have volume 0
    ix = SCHEMA.index
    assert quiet[ix("vwap")] == quiet[ix("bb_middle")]  # documented fallback: the SMA
    assert quiet[ix("volume_ratio_20")] == 1.0
    assert quiet[ix("zscore_volume_20")] == 0.0
    assert quiet[ix("close_vwap_ratio")] == bars[W + 34][3] / quiet[ix("bb_middle")]
    # The first trade after the silence is 20 times the window's mean volume, exactly:
    # the window's running sums were reset to exact zeros, not left with rounding residue.
    assert rows[W + 35][ix("volume_ratio_20")] == 20.0


def test_flat_market_gives_neutral_values_not_nan() -> None:
    state = FeatureState()
    rows = [state.update(50.0, 50.0, 50.0, 50.0, 3.0) for _ in range(W + 5)]
    last = dict(zip(SCHEMA.names, rows[-1], strict=True))
    assert last["rsi_14"] == 50.0  # TA-Lib would say 0 for no movement; we say neutral
    assert last["bb_pctb"] == 0.5
    assert last["zscore_close_20"] == 0.0 and last["zscore_volume_20"] == 0.0
    assert last["vol_20"] == 0.0 and last["atr_14"] == 0.0
    assert last["bb_upper"] == last["bb_lower"] == last["bb_middle"] == 50.0
    assert last["ret_24"] == 0.0 and last["volume_ratio_20"] == 1.0
    assert last["vwap"] == 50.0 and last["macd"] == 0.0


def test_quiet_window_after_a_huge_volume_spike_keeps_an_accurate_zscore() -> None:
    # A window of tiny volumes right after huge ones: running sums of squares would keep
    # rounding residue of ~1e-6 from the spike; the periodic re-summing must remove it.
    rng = np.random.default_rng(11)
    volumes = np.concatenate([rng.uniform(1e5, 2e5, 400), rng.uniform(0.01, 0.02, 400)])
    state = FeatureState()
    z = [state.update(100.0, 101.0, 99.0, 100.0, float(v))[SCHEMA.index("zscore_volume_20")]
         for v in volumes]  # fmt: skip
    win = np.lib.stride_tricks.sliding_window_view(volumes, 20)
    ref = (volumes[19:] - win.mean(axis=1)) / win.std(axis=1)
    got = np.array(z[19:])
    assert np.max(np.abs(got - ref) / np.maximum(1.0, np.abs(ref))) < 1e-9


def test_batch_with_times_drops_out_of_order_and_repeated_bars_like_the_actor() -> None:
    bars = walk(W + 20)
    ts = list(range(0, 1000 * len(bars), 1000))
    o, h, lo, c, v = (list(x) for x in zip(*bars, strict=True))
    # Insert an old bar and a repeat; each must give a NaN row and change nothing else.
    at = W + 5
    for seq, value in ((o, o[3]), (h, h[3]), (lo, lo[3]), (c, c[3]), (v, v[3])):
        seq.insert(at, value)
        seq.insert(at + 1, seq[at - 1])
    ts.insert(at, ts[3])
    ts.insert(at + 1, ts[at - 1])
    result = run_batch(o, h, lo, c, v, ts)
    assert result.out_of_order == 2 and result.rejected == 0
    assert np.isnan(result.values[at]).all() and np.isnan(result.values[at + 1]).all()
    clean = compute_batch(*(np.array(x) for x in zip(*bars, strict=True)))
    kept = np.delete(result.values, [at, at + 1], axis=0)
    np.testing.assert_array_equal(kept, clean)


def test_batch_refuses_arrays_of_different_lengths() -> None:
    with pytest.raises(ValueError, match="one length"):
        compute_batch([1.0, 2.0], [1.0], [1.0], [1.0], [1.0])
    with pytest.raises(ValueError, match="ts"):
        compute_batch([1.0], [1.0], [1.0], [1.0], [1.0], ts=[1, 2])
    assert compute_batch([], [], [], [], []).shape == (0, len(SCHEMA.names))


finite_or_not = st.one_of(
    st.floats(min_value=-10.0, max_value=1e6, allow_nan=False, allow_infinity=False),
    st.sampled_from([math.nan, math.inf, -math.inf, 0.0, 1e300]),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(finite_or_not, finite_or_not, finite_or_not, finite_or_not,
                          finite_or_not), min_size=0, max_size=260))  # fmt: skip
def test_any_input_gives_batch_equal_to_incremental_and_no_crash(
    bars: list[tuple[float, float, float, float, float]],
) -> None:
    state = FeatureState()
    incremental = [state.update(*b) for b in bars]
    batch = compute_batch(*(np.array(x, dtype=float) for x in zip(*bars, strict=True))) if bars \
        else compute_batch([], [], [], [], [])  # fmt: skip
    expected = np.array(incremental, dtype=float).reshape(len(bars), len(SCHEMA.names))
    np.testing.assert_array_equal(batch, expected)
    if state.ready:
        assert np.isfinite(incremental[-1]).all() or incremental[-1] is NAN_ROW
