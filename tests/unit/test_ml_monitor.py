"""Model monitors: drift window with hysteresis, shadow statistics, canary buckets."""

from __future__ import annotations

import numpy as np

from levibot.ml.card import FeatureRange, ModelCard
from levibot.ml.monitor import DriftMonitor, ShadowStats, in_canary


def _card() -> ModelCard:
    return ModelCard(
        model_id="m",
        created_at="",
        created_at_ns=0,
        schema_hash="h",
        schema_version="1",
        features=("a", "b"),
        feature_indices=(0, 1),
        schema_size=2,
        horizon=1,
        fee_bps=0.0,
        input_ranges={"a": FeatureRange(min=0.0, max=1.0, q01=0.0, q99=1.0)},
    )


def test_drift_alerts_once_when_the_window_fills_and_rearms_after_recovery() -> None:
    mon = DriftMonitor(_card(), tolerance=0.5, window=10, max_fraction=0.2)
    inside = np.array([[1.4, 1e9]] * 5)  # within max + 0.5 × range; "b" has no bounds
    outside = np.array([[1.6, 0.0]] * 3)
    assert not mon.update(inside, ("a", "b"))
    assert not mon.update(outside, ("a", "b"))  # 3 of 8: window not full yet
    assert mon.update(inside[:2], ("a", "b"))  # full: 3 of 10 > 20 %
    assert mon.worst == "a"
    assert not mon.update(outside[:1], ("a", "b"))  # still alerting: no repeat
    assert not mon.update(inside, ("a", "b")) and mon.alerting  # 3 of 10: still out
    assert not mon.update(inside[:4], ("a", "b")) and not mon.alerting  # 1 of 10: re-armed
    assert mon.update(np.array([[-0.6, 0.0]] * 10), ("a", "b"))


def test_drift_fraction_is_the_window_mean_for_any_mix_of_batch_sizes() -> None:
    """The running count of flagged rows (one row a bar on the live path) matches a recount
    of the last ``window`` rows after every batch, one row, several, and more than a window."""
    mon = DriftMonitor(_card(), tolerance=0.0, window=7, max_fraction=0.5)
    rng = np.random.default_rng(3)
    seen: list[bool] = []
    for n in [1, 1, 3, 1, 6, 1, 9, 2, 1, 1, 7, 4, 1, 13, 1, 1, 5]:
        x = np.column_stack([rng.uniform(-0.5, 1.5, n), np.zeros(n)])
        mon.update(x, ("a", "b"))
        seen += [bool(v < 0.0 or v > 1.0) for v in x[:, 0]]
        last = seen[-7:]
        assert mon.fraction == sum(last) / len(last)


def test_shadow_stats_measure_agreement_and_mean_absolute_difference() -> None:
    s = ShadowStats()
    assert s.agreement == 1.0 and s.drift == 0.0
    s.update(np.array([1, 0, -1, 1]), np.array([1, 0, 1, 0]), np.array([0.1, -0.1, 0.3, 0.1]))
    assert s.agreement == 0.5 and abs(s.drift - 0.15) < 1e-12


def test_canary_buckets_are_stable_and_sized_by_the_fraction() -> None:
    symbols = [f"SYM{i}USDT" for i in range(2000)]
    picked = [s for s in symbols if in_canary(s, 0.1)]
    assert picked == [s for s in symbols if in_canary(s, 0.1)]
    assert 150 < len(picked) < 250
    assert set(picked) <= {s for s in symbols if in_canary(s, 0.3)}
    assert not any(in_canary(s, 0.0) for s in symbols)
