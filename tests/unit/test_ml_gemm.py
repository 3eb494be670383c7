"""The GEMM compile of LightGBM trees equals LightGBM, including its missing-value rules."""

from __future__ import annotations

from typing import Any

import lightgbm as lgb
import numpy as np
import onnxruntime as ort
import pytest

from levibot.ml.export import max_error
from levibot.ml.gemm import GemmCompileError, compile_gemm


def _train(params: dict[str, Any], x: np.ndarray, y: np.ndarray, rounds: int = 30) -> Any:
    base = {
        "objective": "binary",
        "num_leaves": 15,
        "verbose": -1,
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": 1,
        "min_data_in_leaf": 10,
    }
    return lgb.train({**base, **params}, lgb.Dataset(x, y), rounds)


def _data(seed: int = 0, n: int = 2000, k: int = 6) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, k)).astype(np.float32)
    x[rng.random(x.shape) < 0.05] = np.nan
    x[::9, 2] = 0.0
    signal = np.nan_to_num(x[:, 0]) - np.nan_to_num(x[:, 1]) + np.isnan(x[:, 3]) * 1.5
    y = (signal + rng.normal(scale=0.5, size=n) > 0).astype(int)
    return x, y


def _hard_rows(k: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(3000, k)).astype(np.float32)
    x[rng.random(x.shape) < 0.15] = np.nan
    x[::4, 2] = 0.0
    x[::7, 1] = -0.0
    x[::11, 0] = np.inf
    x[::13, 4] = -np.inf
    x[::17, 5] = 1e-38  # below LightGBM's zero threshold
    return x


@pytest.mark.parametrize(
    "params",
    [{}, {"zero_as_missing": True}, {"use_missing": False}, {"num_leaves": 2}],
    ids=["nan-missing", "zero-missing", "no-missing", "stumps"],
)
def test_gemm_graph_equals_lightgbm_on_nan_zero_and_inf_rows(params: dict[str, Any]) -> None:
    x, y = _data()
    booster = _train(params, x, y)
    rows = _hard_rows(x.shape[1])
    assert max_error(compile_gemm(booster), booster, rows) <= 1e-5
    assert max_error(compile_gemm(booster, fp16=True), booster, rows) <= 1e-5


def test_gemm_thresholds_round_down_so_values_at_a_split_go_left() -> None:
    x, y = _data(seed=3)
    booster = _train({}, x, y, rounds=5)
    split_values = [
        float(node["threshold"])
        for tree in booster.dump_model()["tree_info"]
        for node in [tree["tree_structure"]]
        if "threshold" in node
    ]
    feats = [tree["tree_structure"]["split_feature"] for tree in booster.dump_model()["tree_info"]]
    rows = np.zeros((len(split_values) * 3, x.shape[1]), np.float32)
    for i, (t, f) in enumerate(zip(split_values, feats, strict=True)):
        for j, v in enumerate(
            (
                np.float32(t),
                np.nextafter(np.float32(t), np.float32(np.inf)),
                np.nextafter(np.float32(t), np.float32(-np.inf)),
            )
        ):
            rows[3 * i + j, f] = v
    assert max_error(compile_gemm(booster), booster, rows) <= 1e-5


def test_gemm_graph_runs_on_the_cpu_provider_with_a_probability_vector() -> None:
    x, y = _data()
    booster = _train({}, x, y)
    session = ort.InferenceSession(
        compile_gemm(booster).SerializeToString(), providers=["CPUExecutionProvider"]
    )
    out = session.run(None, {"input": x[:7]})[0]
    assert out.shape == (7,)
    assert session.get_providers()[0] == "CPUExecutionProvider"
    np.testing.assert_allclose(out, booster.predict(x[:7].astype(np.float64)), atol=1e-5)


def test_gemm_refuses_categorical_splits_clearly() -> None:
    rng = np.random.default_rng(0)
    x = np.column_stack([rng.integers(0, 8, 2000), rng.normal(size=2000)]).astype(np.float32)
    y = (np.isin(x[:, 0], [1, 3, 5]) ^ (x[:, 1] > 1)).astype(int)
    booster = lgb.train(
        {
            "objective": "binary",
            "verbose": -1,
            "num_leaves": 7,
            "min_data_per_group": 5,
            "cat_smooth": 1,
            "force_row_wise": True,
        },
        lgb.Dataset(x, y, categorical_feature=[0]),
        5,
    )
    with pytest.raises(GemmCompileError, match="categorical"):
        compile_gemm(booster)


def test_gemm_refuses_multiclass_models() -> None:
    x, _ = _data()
    y = np.arange(len(x)) % 3
    booster = lgb.train(
        {"objective": "multiclass", "num_class": 3, "verbose": -1, "force_row_wise": True},
        lgb.Dataset(x, y),
        2,
    )
    with pytest.raises(GemmCompileError, match="binary"):
        compile_gemm(booster)
