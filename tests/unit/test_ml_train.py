"""Training end to end on a small seeded random walk: card, files, metrics, plots, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from levibot.cli import main
from levibot.features import SCHEMA
from levibot.ml.card import MODEL_GEMM, MODEL_ONNX, MODEL_TXT, ModelCard
from levibot.ml.registry import ModelRegistry
from levibot.ml.scorer import Scorer
from levibot.ml.train import TrainConfig, train_model
from tests.unit.test_ml_dataset import random_bars

SMALL = TrainConfig(n_estimators=15, num_leaves=7, folds=2, min_data_in_leaf=20, num_threads=1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelCard, ModelRegistry, Path]:
    root = tmp_path_factory.mktemp("train")
    registry = ModelRegistry(root / "models")
    card = train_model(
        bars=random_bars(3000, seed=4),
        config=SMALL,
        registry=registry,
        plots_dir=root / "plots",
        progress=False,
        activate=True,
        force=True,  # random data: the model cannot pass the promotion gate
    )
    return card, registry, root


def test_training_writes_a_complete_model_card(
    trained: tuple[ModelCard, ModelRegistry, Path],
) -> None:
    card, registry, _ = trained
    assert card.schema_hash == SCHEMA.hash and card.schema_size == len(SCHEMA.names)
    assert card.feature_indices == tuple(SCHEMA.index(n) for n in card.features)
    assert "ema_12" not in card.features and "close_ema_12_ratio" in card.features
    assert card.params["purge"] >= card.horizon and card.params["deterministic"] is True
    assert card.data["bars"] == 3000 and card.data["rows"] > 2500
    assert len(card.folds) == 2
    for fold in card.folds:
        assert fold["train_end"] < fold["test_start"]
        assert {"model", "shuffled", "always_long", "always_flat"} <= set(fold)
    for key in ("auc", "log_loss", "precision_long", "hit_rate", "net_return", "trades"):
        assert key in card.metrics["model"]
    assert card.baselines["always_flat"]["net_return"] == 0.0
    assert set(card.input_ranges) == set(card.features)
    assert all(r.min <= r.q01 <= r.q99 <= r.max for r in card.input_ranges.values())
    assert card.export["onnx_max_error"] <= 1e-5 and card.export["gemm_max_error"] <= 1e-5
    assert {"lightgbm", "onnxruntime", "numpy"} <= set(card.libraries)
    path = registry.path(card.model_id)
    for name in (MODEL_TXT, MODEL_ONNX, MODEL_GEMM):
        assert (path / name).stat().st_size > 0
    assert registry.active() == card


def test_the_registered_model_scores_like_lightgbm(
    trained: tuple[ModelCard, ModelRegistry, Path],
) -> None:
    import lightgbm as lgb

    card, registry, _ = trained
    booster = lgb.Booster(model_file=str(registry.path(card.model_id) / MODEL_TXT))
    rows = (
        np.random.default_rng(0).normal(scale=0.02, size=(64, card.schema_size)).astype(np.float32)
    )
    want = booster.predict(rows[:, list(card.feature_indices)].astype(np.float64))
    for graph in ("tree", "gemm"):
        got = Scorer.from_registry(registry, graph=graph).predict(rows)
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_training_saves_the_three_plots(trained: tuple[ModelCard, ModelRegistry, Path]) -> None:
    _, _, root = trained
    for name in ("importance.png", "calibration.png", "equity.png"):
        assert (root / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_train_and_models_commands_from_a_csv(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bars = random_bars(1500, seed=5)
    csv = tmp_path / "klines.csv"
    lines = ["timestamp,open,high,low,close,volume"] + [
        f"{t // 1_000_000},{o!r},{h!r},{lo!r},{c!r},{v!r}"
        for t, o, h, lo, c, v in zip(*(a.tolist() for a in bars.arrays()), strict=True)
    ]
    csv.write_text("\n".join(lines) + "\n")
    reg = str(tmp_path / "models")
    args = [
        "train",
        "--data",
        str(csv),
        "--trees",
        "5",
        "--folds",
        "2",
        "--threads",
        "1",
        "--registry",
        reg,
        "--no-progress",
        "--activate",
        "--force",  # random data: the model cannot pass the promotion gate
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "always_long" in out and "shuffled" in out and "AUC" in out
    assert main([*args, "--horizon", "2"]) == 0  # a second model
    capsys.readouterr()
    assert main(["models", "--registry", reg, "list"]) == 0
    listing = capsys.readouterr().out.strip().splitlines()
    assert len(listing) == 3 and sum(line.startswith("*") for line in listing) == 1
    assert main(["models", "--registry", reg, "rollback"]) == 0
    assert "rolled back to" in capsys.readouterr().out
    assert main(["models", "--registry", reg, "show", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["schema_hash"] == SCHEMA.hash
    assert main(["models", "--registry", reg, "activate", "no-such-model"]) == 2
