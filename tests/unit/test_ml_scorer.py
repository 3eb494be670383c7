"""The scorer: selects its columns, picks its graph, reports the provider it really uses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from levibot.ml.card import ModelError
from levibot.ml.registry import ModelRegistry
from levibot.ml.scorer import Scorer, resolve_providers
from levibot.ml.testing import make_model, synthetic_rows

HASH = "feedfacecafebeef"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> ModelRegistry:
    root = tmp_path_factory.mktemp("scorer")
    reg = ModelRegistry(root / "models", schema_hash=HASH)
    make_model(root / "m", model_id="m", schema_hash=HASH, schema_size=10, columns=(7, 2, 5))
    reg.register(root / "m")
    reg.activate("m")
    return reg


def test_predict_selects_the_card_columns_from_full_vectors(registry: ModelRegistry) -> None:
    import lightgbm as lgb

    booster = lgb.Booster(model_file=str(registry.path("m") / "model.txt"))
    rows = synthetic_rows(100, 10, seed=3)
    want = booster.predict(rows[:, [7, 2, 5]].astype(np.float64))
    for graph in ("tree", "gemm", "auto"):
        scorer = Scorer.from_registry(registry, graph=graph)
        np.testing.assert_allclose(scorer.predict(rows), want, atol=1e-5)
        assert scorer.predict(rows[0]).shape == (1,)
    assert Scorer.from_registry(registry, "m", graph="auto").graph == "tree"  # CPU: tree


def test_cuda_requested_without_a_gpu_falls_back_to_the_cpu(registry: ModelRegistry) -> None:
    scorer = Scorer.from_registry(registry, providers=("cuda", "cpu"), intra_op_num_threads=2)
    assert scorer.provider == scorer.session.get_providers()[0]
    assert resolve_providers(["cuda"])[-1] == "CPUExecutionProvider"
    assert resolve_providers(["nonsense"]) == ["CPUExecutionProvider"]


def test_bad_rows_and_options_are_clear_errors(registry: ModelRegistry, tmp_path: Path) -> None:
    scorer = Scorer.from_registry(registry)
    with pytest.raises(ModelError, match="expected 10 features"):
        scorer.predict(np.zeros((2, 9), np.float32))
    with pytest.raises(ModelError, match="unknown graph"):
        Scorer.from_registry(registry, graph="forest")
    with pytest.raises(ModelError, match="no active model"):
        Scorer.from_registry(ModelRegistry(tmp_path, schema_hash=HASH))
