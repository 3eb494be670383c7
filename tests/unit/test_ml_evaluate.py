"""Out-of-sample metrics: AUC, log loss, thresholds and the cost-aware return."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from levibot.ml.evaluate import auc, baselines, log_loss, signal_metrics, trade_returns


def _brute_auc(y: np.ndarray, p: np.ndarray) -> float:
    pos, neg = p[y == 1], p[y == 0]
    wins = sum((a > b) + 0.5 * (a == b) for a, b in itertools.product(pos, neg))
    return float(wins / (len(pos) * len(neg)))


def test_auc_matches_the_pairwise_definition_with_ties() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p = np.round(rng.random(200) * 0.5 + y * 0.2, 1)  # coarse: many ties
    assert auc(y, p) == pytest.approx(_brute_auc(y, p))
    assert np.isnan(auc(np.ones(5), np.ones(5)))


def test_log_loss_of_a_coin_is_ln2() -> None:
    assert log_loss(np.array([0, 1, 1, 0]), np.full(4, 0.5)) == pytest.approx(np.log(2))


def test_trades_happen_every_horizon_bars_and_pay_the_round_trip() -> None:
    bar = np.arange(10)
    fwd = np.full(10, 0.01)
    pos = np.array([1, 1, 0, 0, -1, 0, 0, 0, 1, 1], float)
    net = trade_returns(pos, fwd, bar, horizon=4, cost=0.002)
    np.testing.assert_allclose(net, [0.008, -0.012, 0.008])


def test_signal_metrics_and_baselines_on_a_perfect_signal() -> None:
    fwd = np.array([0.02, -0.01, 0.03, -0.02] * 10)
    y = (fwd > 0.002).astype(int)
    bar = np.arange(len(y))
    m = signal_metrics(y, y * 0.9 + 0.05, fwd, bar, horizon=1, cost=0.002)
    assert m["auc"] == 1.0 and m["precision_long"] == 1.0 and m["hit_rate"] == 1.0
    assert m["trades"] == 20 and m["net_return"] == pytest.approx(20 * 0.025 - 20 * 0.002)
    b = baselines(y, fwd, bar, horizon=1, cost=0.002)
    assert b["always_flat"]["net_return"] == 0.0 and b["always_flat"]["trades"] == 0
    assert b["always_long"]["net_return"] == pytest.approx(fwd.sum() - 40 * 0.002)
    shorting = signal_metrics(y, y * 0.9 + 0.05, fwd, bar, horizon=1, cost=0.002, allow_short=True)
    assert shorting["net_return"] == pytest.approx(m["net_return"] + 20 * 0.015 - 20 * 0.002)
