"""Scoring throughput: ONNX tree operator vs the GEMM compile (fp32, fp16) vs native LightGBM.

One 200-tree, 31-leaf binary model on 25 features (the size ``levibot train`` makes), scored at
batch sizes 1, 16, 256 and 4096 in the same run; each cell is the median of repeated timed runs.
Also measures a worker-thread hop (anyio) against an inline call for one row, the scoring
actor's choice. Prints a table and writes ``bench/results/scoring.json``.

    .venv/bin/python bench/bench_scoring.py                  # CPU
    .venv/bin/python bench/bench_scoring.py --providers cuda # on a GPU box (onnxruntime-gpu)
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BATCHES = (1, 16, 256, 4096)


def _model(features: int, trees: int, leaves: int, threads: int) -> Any:
    import lightgbm as lgb

    rng = np.random.default_rng(0)
    x = rng.normal(size=(20_000, features)).astype(np.float32)
    y = x[:, 0] + 0.5 * x[:, 1] - 0.3 * x[:, 2] * x[:, 3] + rng.normal(size=len(x)) > 0
    params = {
        "objective": "binary",
        "num_leaves": leaves,
        "learning_rate": 0.05,
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": threads,
        "verbose": -1,
        "seed": 1,
    }
    return lgb.train(params, lgb.Dataset(x, y.astype(int)), trees)


def _time(fn: Callable[[], Any], budget_s: float, repeats: int) -> float:
    """Return the median seconds per call over ``repeats`` runs of about ``budget_s`` each."""
    fn()  # warm up (allocations, CUDA kernels)
    t0 = time.perf_counter()
    fn()
    once = max(time.perf_counter() - t0, 1e-7)
    calls = max(1, int(budget_s / once))
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        samples.append((time.perf_counter() - t0) / calls)
    return statistics.median(samples)


def _thread_hop(session: Any, row: np.ndarray, repeats: int) -> dict[str, float]:
    import anyio

    name = session.get_inputs()[0].name

    def call() -> Any:
        return session.run(None, {name: row})

    async def main() -> dict[str, float]:
        limiter = anyio.CapacityLimiter(1)

        async def hop() -> None:
            await anyio.to_thread.run_sync(call, limiter=limiter)

        out = {}
        for label, fn in (("inline", None), ("worker_thread", hop)):
            samples = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                for _ in range(200):
                    if fn is None:
                        call()
                    else:
                        await fn()
                samples.append((time.perf_counter() - t0) / 200)
            out[label] = statistics.median(samples) * 1e6
        return out

    return anyio.run(main)


def main() -> int:
    import onnxruntime as ort

    from levibot.ml.export import max_error, to_tree_onnx
    from levibot.ml.gemm import compile_gemm
    from levibot.ml.scorer import resolve_providers

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--providers", default="cpu", help="cpu | cuda (comma-separated)")
    ap.add_argument("--threads", type=int, default=1, help="intra_op_num_threads and LightGBM")
    ap.add_argument("--trees", type=int, default=200)
    ap.add_argument("--leaves", type=int, default=31)
    ap.add_argument("--features", type=int, default=25)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--budget", type=float, default=0.25, help="seconds per timed run")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "scoring.json")
    args = ap.parse_args()

    booster = _model(args.features, args.trees, args.leaves, args.threads)
    graphs = {
        "onnx_tree": to_tree_onnx(booster, args.features),
        "gemm_fp32": compile_gemm(booster),
        "gemm_fp16": compile_gemm(booster, fp16=True),
    }
    rng = np.random.default_rng(1)
    check = rng.normal(size=(4096, args.features)).astype(np.float32)
    errors = {k: max_error(m, booster, check) for k, m in graphs.items()}
    providers = resolve_providers(args.providers.split(","))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    sessions = {
        k: ort.InferenceSession(m.SerializeToString(), sess_options=opts, providers=providers)
        for k, m in graphs.items()
    }
    used = {k: s.get_providers()[0] for k, s in sessions.items()}
    rows = {b: rng.normal(size=(b, args.features)).astype(np.float32) for b in BATCHES}
    results: list[dict[str, Any]] = []
    for b in BATCHES:
        x = rows[b]
        x64 = x.astype(np.float64)
        cells: dict[str, Callable[[], Any]] = {
            "lightgbm": functools.partial(booster.predict, x64, num_threads=args.threads),
        }
        for k, s in sessions.items():
            cells[k] = functools.partial(s.run, None, {"input": x})
        for k, fn in cells.items():
            sec = _time(fn, args.budget, args.repeats)
            results.append(
                {"engine": k, "batch": b, "us_per_call": sec * 1e6, "preds_per_s": b / sec}
            )
    hop = _thread_hop(sessions["onnx_tree"], rows[1], args.repeats)

    native = {r["batch"]: r["us_per_call"] for r in results if r["engine"] == "lightgbm"}
    print(
        f"model: {args.trees} trees, {args.leaves} leaves, {args.features} features; "
        f"threads={args.threads}; providers used: {used}"
    )
    print(f"{'engine':<10} {'batch':>6} {'µs/call':>12} {'preds/s':>14} {'vs lightgbm':>12}")
    for r in results:
        ratio = native[r["batch"]] / r["us_per_call"]
        print(
            f"{r['engine']:<10} {r['batch']:>6} {r['us_per_call']:>12.1f} "
            f"{r['preds_per_s']:>14,.0f} {ratio:>11.2f}x"
        )
    print("max |onnx - lightgbm|: " + ", ".join(f"{k} {v:.2e}" for k, v in errors.items()))
    print(
        f"one row, tree graph: inline {hop['inline']:.1f} µs, "
        f"worker thread {hop['worker_thread']:.1f} µs"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "machine": platform.platform(),
                "python": platform.python_version(),
                "onnxruntime": ort.__version__,
                "providers_requested": providers,
                "providers_used": used,
                "threads": args.threads,
                "trees": args.trees,
                "leaves": args.leaves,
                "features": args.features,
                "repeats": args.repeats,
                "max_error": errors,
                "thread_hop_us": hop,
                "results": results,
            },
            indent=2,
        )
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
