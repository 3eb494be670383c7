"""The pipeline benchmark's model and market data: a small LightGBM model trained once on the
real BTCUSDT 1h klines (cached in a bench-owned registry), and those klines replayed as bars.

The model is a real one (200 trees, the engine's export to ONNX), so the scoring stage does the
work it does in production. The bars fed to the pipeline are the real klines too, rotated per
symbol (symbol ``i`` starts ``i * stride`` bars into the history), so feature values stay in the
model's training range and the drift monitor stays quiet, as it would live.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
REGISTRY = ROOT / "var" / "bench" / "models"


@dataclass(frozen=True)
class Klines:
    """OHLCV arrays of the real history (float64)."""

    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray

    def __len__(self) -> int:
        return len(self.close)


def load_real_klines() -> Klines:
    """Return the real BTCUSDT 1h klines (fetched and cached by ``levibot.data`` once)."""
    from levibot.data import ensure_btcusdt, load_klines

    k = load_klines(ensure_btcusdt())
    return Klines(
        open=np.asarray(k.open, dtype=np.float64),
        high=np.asarray(k.high, dtype=np.float64),
        low=np.asarray(k.low, dtype=np.float64),
        close=np.asarray(k.close, dtype=np.float64),
        volume=np.asarray(k.volume, dtype=np.float64),
    )


def ensure_model(registry: Path = REGISTRY, *, trees: int = 200) -> str:
    """Return the id of the bench model in ``registry``, training it on first use (~1 min)."""
    from levibot.ml.registry import ModelRegistry
    from levibot.ml.train import TrainConfig, train_model

    reg = ModelRegistry(registry)
    for card in reversed(reg.list()):
        if card.schema_hash == reg.schema_hash and card.params.get("n_estimators") == trees:
            return card.model_id
    print(f"training the bench model ({trees} trees) into {registry} (once)...", flush=True)
    threads = max(1, min(2, os.cpu_count() or 1))
    # The default walk-forward (5 folds): the export check failed on 1- and 2-fold fits here.
    cfg = TrainConfig(n_estimators=trees, num_threads=threads)
    card = train_model(config=cfg, registry=reg, activate=True, force=True, progress=False)
    return card.model_id


def median_probability(registry: Path, model_id: str, klines: Klines, rows: int = 3000) -> float:
    """Return the model's median P on the first ``rows`` real bars (after warm-up).

    Used as both thresholds (long at or above, flat below), so the signal side flips about
    every other bar and risk has a decision to make on about half of them.
    """
    from levibot.features import FeatureState
    from levibot.ml.registry import ModelRegistry
    from levibot.ml.scorer import Scorer

    scorer = Scorer.from_registry(ModelRegistry(registry), model_id)
    state = FeatureState()
    out = []
    n = min(rows, len(klines))
    for i in range(n):
        out.append(
            state.update(
                float(klines.open[i]),
                float(klines.high[i]),
                float(klines.low[i]),
                float(klines.close[i]),
                float(klines.volume[i]),
            )
        )
    x = np.asarray(out, dtype=np.float32)
    x = x[~np.isnan(x[:, scorer.columns]).any(axis=1)]
    return float(np.median(scorer.predict(x)))


if __name__ == "__main__":
    mid = ensure_model()
    print(mid, median_probability(REGISTRY, mid, load_real_klines()))
