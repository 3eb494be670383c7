"""ONNX and GEMM against LightGBM on every row of the real data, for several trainings.

    .venv/bin/python -m bench.ml_parity [--quick]

For each configuration (trees, leaves, folds): ``levibot.ml.train.train_model`` on the real
BTCUSDT 1h klines (walk-forward folds, then the final model), which exports the snapped model
and checks the tree and GEMM graphs on every training and out-of-sample row (plus rows with
holes). Printed: the largest |ONNX - LightGBM| and |GEMM - LightGBM| over those rows, what the
converter's round-to-nearest thresholds gave before the fix (same final model, unsnapped), and
the time to train and to export. Writes ``bench/results/ml_parity.json``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

GRID = [(5, 7, 1), (50, 31, 2), (200, 31, 3), (200, 31, 5), (500, 63, 5)]
QUICK = [(5, 7, 1), (50, 31, 2)]


def main(quick: bool) -> list[dict[str, Any]]:
    from levibot.data import ensure_btcusdt
    from levibot.features import SCHEMA
    from levibot.ml import export as ex
    from levibot.ml.dataset import build_dataset, load_bars
    from levibot.ml.registry import ModelRegistry
    from levibot.ml.train import TrainConfig, _fit, train_model

    bars = load_bars(ensure_btcusdt())
    rows = []
    for trees, leaves, folds in QUICK if quick else GRID:
        cfg = TrainConfig(
            n_estimators=trees, num_leaves=leaves, folds=folds, shuffled_baseline=False
        )
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            card = train_model(bars=bars, config=cfg, registry=ModelRegistry(Path(tmp)),
                               progress=False)  # fmt: skip
            total = time.perf_counter() - t0
            ds = build_dataset(bars, horizon=cfg.horizon, fee_bps=cfg.fee_bps, names=SCHEMA.names)
            final = _fit(ds.x, ds.y, cfg, lambda: None)  # deterministic: the same final model
            t0 = time.perf_counter()
            ex.export_all(final, len(ds.names), ds.x, Path(tmp) / "again")
            export_s = time.perf_counter() - t0
        naive = ex.max_error(ex.to_tree_onnx(final, len(ds.names)), final, ds.x)
        rows.append({
            "trees": trees, "leaves": leaves, "folds": folds,
            "rows_checked": card.export["check_rows"],
            "onnx_max_error": card.export["onnx_max_error"],
            "gemm_max_error": card.export["gemm_max_error"],
            "naive_onnx_max_error": float(naive),
            "train_and_export_s": round(total, 1),
            "export_s": round(export_s, 1),
        })  # fmt: skip
        print(rows[-1], flush=True)
        assert card.export["onnx_max_error"] <= ex.MAX_EXPORT_ERROR
        assert card.export["gemm_max_error"] <= ex.MAX_EXPORT_ERROR
    return rows


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    result = main(p.parse_args().quick)
    head = ("trees", "leaves", "folds", "rows", "ONNX err", "GEMM err", "before", "total s",
            "export s")  # fmt: skip
    print(" ".join(f"{h:>9}" for h in head))
    for r in result:
        cells = (r["trees"], r["leaves"], r["folds"], r["rows_checked"],
                 f"{r['onnx_max_error']:.2e}", f"{r['gemm_max_error']:.2e}",
                 f"{r['naive_onnx_max_error']:.4f}", r["train_and_export_s"],
                 r["export_s"])  # fmt: skip
        print(" ".join(f"{c:>9}" for c in cells))
    Path("bench/results").mkdir(parents=True, exist_ok=True)
    Path("bench/results/ml_parity.json").write_text(json.dumps(result, indent=2))
