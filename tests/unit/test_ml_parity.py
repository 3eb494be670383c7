"""The served model is the trained model: ONNX and GEMM equal LightGBM on every row.

On the repository's real BTCUSDT data, the tree converter's round-to-nearest float32
thresholds sent some rows down the other branch (up to 0.022 in probability with the default
model). ``snap_thresholds`` rounds every threshold down to float32, which decides float32
inputs exactly as LightGBM's double thresholds do; ``export_all`` checks every row.
Set ``LEVIBOT_PARITY_FULL=1`` for the whole grid (500 trees, 5 folds: minutes).
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from levibot.data import ensure_btcusdt
from levibot.features import SCHEMA
from levibot.ml.card import MODEL_TXT
from levibot.ml.dataset import Dataset, build_dataset, load_bars
from levibot.ml.export import MAX_EXPORT_ERROR, export_all, max_error, to_tree_onnx
from levibot.ml.gemm import round_down_f32
from levibot.ml.registry import ModelRegistry
from levibot.ml.train import TrainConfig, _fit, train_model

FULL = bool(os.environ.get("LEVIBOT_PARITY_FULL"))
GRID = [(5, 7), (50, 31), (200, 31)] + ([(500, 63)] if FULL else [])


@cache
def real() -> Dataset:
    bars = load_bars(ensure_btcusdt())
    cfg = TrainConfig()
    return build_dataset(bars, horizon=cfg.horizon, fee_bps=cfg.fee_bps, names=SCHEMA.names)


def test_round_down_f32_is_the_largest_float32_not_above() -> None:
    for v in (0.1, -0.1, 1 / 3, 1e-40, -1e300, 1e300, 0.0, 16777217.0):
        f = round_down_f32(v)
        assert float(f) <= v
        with np.errstate(over="ignore"):
            assert float(np.nextafter(f, np.float32(np.inf))) > v


@pytest.mark.slow
@pytest.mark.parametrize(("trees", "leaves"), GRID)
def test_onnx_and_gemm_equal_lightgbm_on_every_real_row(
    tmp_path: Path, trees: int, leaves: int
) -> None:
    ds = real()
    cfg = TrainConfig(n_estimators=trees, num_leaves=leaves)
    booster = _fit(ds.x, ds.y, cfg, lambda: None)
    served, report = export_all(booster, len(ds.names), ds.x, tmp_path)
    assert report["check_rows"] == len(ds.x) and report["snap_max_change"] == 0.0
    assert report["onnx_max_error"] <= MAX_EXPORT_ERROR
    assert report["gemm_max_error"] <= MAX_EXPORT_ERROR
    rows = ds.x.astype(np.float64)
    assert np.array_equal(served.predict(rows), booster.predict(rows))
    if trees == 200:  # the default model: the naive conversion really was off
        assert max_error(to_tree_onnx(booster, len(ds.names)), booster, ds.x) > 1e-3
    assert (tmp_path / MODEL_TXT).read_text() == served.model_to_string()


@pytest.mark.slow
@pytest.mark.parametrize("folds", [1, 2] + ([5] if FULL else []))
def test_training_checks_parity_on_every_row_whatever_the_folds(tmp_path: Path, folds: int) -> None:
    bars = load_bars(ensure_btcusdt())
    card = train_model(
        bars=bars,
        config=TrainConfig(folds=folds, n_estimators=10, shuffled_baseline=False),
        registry=ModelRegistry(tmp_path / "models"),
        plots_dir=None,
        progress=False,
    )
    assert card.export["check_rows"] > card.data["rows"]  # every row, plus rows with holes
    assert card.export["onnx_max_error"] <= MAX_EXPORT_ERROR
    assert card.export["gemm_max_error"] <= MAX_EXPORT_ERROR
