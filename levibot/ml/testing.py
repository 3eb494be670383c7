"""Small real models for tests and benchmarks: trained on synthetic vectors of a schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from levibot.ml.card import FeatureRange, ModelCard
from levibot.ml.export import export_all


def synthetic_rows(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Return ``n`` random full feature vectors of ``size`` columns (float32, no NaN)."""
    return np.random.default_rng(seed).normal(size=(n, size)).astype(np.float32)


def make_model(
    out: Path,
    *,
    model_id: str,
    schema_hash: str,
    schema_size: int,
    columns: tuple[int, ...],
    names: tuple[str, ...] | None = None,
    trees: int = 20,
    num_leaves: int = 15,
    rows: int = 2000,
    seed: int = 0,
    sign: float = 1.0,
    created_at_ns: int = 1_700_000_000_000_000_000,
) -> tuple[ModelCard, Any]:
    """Train a small LightGBM model on synthetic rows, export it and write its card into
    ``out``; the label follows ``sign * (x[c0] + 0.5 x[c1])``, so two models of opposite sign
    score visibly differently. Return the card and the booster."""
    import lightgbm as lgb

    x_all = synthetic_rows(rows, schema_size, seed)
    x = x_all[:, list(columns)]
    noise = np.random.default_rng(seed + 1).normal(scale=0.5, size=rows)
    y = (sign * (x[:, 0] + 0.5 * x[:, 1 % x.shape[1]]) + noise > 0).astype(int)
    params = {
        "objective": "binary",
        "num_leaves": num_leaves,
        "learning_rate": 0.1,
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": 1,
        "seed": seed,
        "verbose": -1,
        "min_data_in_leaf": 20,
    }
    booster = lgb.train(params, lgb.Dataset(x, y), trees)
    booster, export = export_all(booster, len(columns), x, out)
    used = names if names is not None else tuple(f"f{c}" for c in columns)
    lo, hi = x.min(axis=0), x.max(axis=0)
    card = ModelCard(
        model_id=model_id,
        created_at="2023-11-14T22:13:20+00:00",
        created_at_ns=created_at_ns,
        schema_hash=schema_hash,
        schema_version="test",
        features=used,
        feature_indices=columns,
        schema_size=schema_size,
        horizon=4,
        fee_bps=10.0,
        params=params,
        input_ranges={
            n: FeatureRange(min=float(lo[j]), max=float(hi[j]), q01=float(lo[j]), q99=float(hi[j]))
            for j, n in enumerate(used)
        },
        export=export,
        # Made for tests, never evaluated out of sample: promoted by fiat so tests can
        # activate it; the promotion gate itself is tested with trained cards.
        promotion={"passed": True, "why": "test model (levibot.ml.testing)"},
    )
    card.save(out)
    return card, booster
