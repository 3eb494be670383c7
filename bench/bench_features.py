"""ns per bar of ``FeatureState.update`` next to bare incremental loops, in the same run.

    .venv/bin/python bench/bench_features.py [--bars 20000] [--repeats 7]

Every figure is the median over ``--repeats`` runs over the same real BTCUSDT 1h bars (after a
warm-up, so the timed part is the steady state). Baselines measured in the same process:

- ``loop``: the bare ``for`` over the bars with tuple unpacking, no work;
- ``ema_1``: one EMA update inline, the cheapest useful incremental feature;
- ``ema_20``: twenty EMA updates inline in a plain function (about the "20 indicators in
  pure Python" of DESIGN.md section 7).

Prints a table and writes ``bench/results/features.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

Bars = list[tuple[float, float, float, float, float]]


def load_bars(limit: int) -> Bars:
    from levibot.data import ensure_btcusdt, load_klines

    k = load_klines(ensure_btcusdt(progress=False))
    cols = (k.open, k.high, k.low, k.close, k.volume)
    return list(zip(*(c[:limit].tolist() for c in cols), strict=True))


def run_update(bars: Bars, warm: int) -> float:
    from levibot.features import FeatureState

    state = FeatureState()
    update = state.update
    for bar in bars[:warm]:
        update(*bar)
    timed = bars[warm:]
    t0 = time.perf_counter_ns()
    for o, h, lo, c, v in timed:
        update(o, h, lo, c, v)
    return (time.perf_counter_ns() - t0) / len(timed)


def run_loop(bars: Bars, warm: int) -> float:
    timed = bars[warm:]
    t0 = time.perf_counter_ns()
    for _o, _h, _lo, _c, _v in timed:
        pass
    return (time.perf_counter_ns() - t0) / len(timed)


def run_ema_1(bars: Bars, warm: int) -> float:
    timed = bars[warm:]
    k = 2.0 / 13.0
    e = timed[0][3]
    t0 = time.perf_counter_ns()
    for _o, _h, _lo, c, _v in timed:
        e = (c - e) * k + e
    return (time.perf_counter_ns() - t0) / len(timed)


def run_ema_20(bars: Bars, warm: int) -> float:
    ks = [2.0 / (s + 1.0) for s in range(2, 22)]
    state = [bars[0][3]] * 20

    def step(c: float, s: list[float] = state, k: list[float] = ks) -> list[float]:
        s[0] = (c - s[0]) * k[0] + s[0]
        s[1] = (c - s[1]) * k[1] + s[1]
        s[2] = (c - s[2]) * k[2] + s[2]
        s[3] = (c - s[3]) * k[3] + s[3]
        s[4] = (c - s[4]) * k[4] + s[4]
        s[5] = (c - s[5]) * k[5] + s[5]
        s[6] = (c - s[6]) * k[6] + s[6]
        s[7] = (c - s[7]) * k[7] + s[7]
        s[8] = (c - s[8]) * k[8] + s[8]
        s[9] = (c - s[9]) * k[9] + s[9]
        s[10] = (c - s[10]) * k[10] + s[10]
        s[11] = (c - s[11]) * k[11] + s[11]
        s[12] = (c - s[12]) * k[12] + s[12]
        s[13] = (c - s[13]) * k[13] + s[13]
        s[14] = (c - s[14]) * k[14] + s[14]
        s[15] = (c - s[15]) * k[15] + s[15]
        s[16] = (c - s[16]) * k[16] + s[16]
        s[17] = (c - s[17]) * k[17] + s[17]
        s[18] = (c - s[18]) * k[18] + s[18]
        s[19] = (c - s[19]) * k[19] + s[19]
        return s

    timed = bars[warm:]
    t0 = time.perf_counter_ns()
    for _o, _h, _lo, c, _v in timed:
        step(c)
    return (time.perf_counter_ns() - t0) / len(timed)


def run_batch(bars: Bars, warm: int) -> float:
    import numpy as np

    from levibot.features import compute_batch

    cols = [np.array(c) for c in zip(*bars, strict=True)]
    t0 = time.perf_counter_ns()
    compute_batch(*cols)
    return (time.perf_counter_ns() - t0) / len(bars)


CASES: dict[str, Callable[[Bars, int], float]] = {
    "loop": run_loop,
    "ema_1": run_ema_1,
    "ema_20": run_ema_20,
    "feature_update": run_update,
    "compute_batch": run_batch,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bars", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "features.json"))
    args = parser.parse_args(argv)

    from levibot.features import SCHEMA

    bars = load_bars(args.bars)
    warm = SCHEMA.warmup + 100
    samples: dict[str, list[float]] = {name: [] for name in CASES}
    for _ in range(args.repeats):
        for name, case in CASES.items():  # interleaved, so drift in load hits all cases alike
            samples[name].append(case(bars, warm))
    median = {name: statistics.median(v) for name, v in samples.items()}
    base = median["ema_20"]
    print(f"{len(SCHEMA.names)} features, {len(bars) - warm} timed bars, {args.repeats} repeats")
    print(f"{'case':<16}{'median ns/bar':>15}{'min':>10}{'max':>10}{'x ema_20':>10}")
    for name, v in samples.items():
        print(f"{name:<16}{median[name]:>15.0f}{min(v):>10.0f}{max(v):>10.0f}"
              f"{median[name] / base:>10.2f}")  # fmt: skip
    per_feature = (median["feature_update"] - median["loop"]) / len(SCHEMA.names)
    print(f"feature_update minus loop, per feature: {per_feature:.0f} ns")
    result = {
        "bench": "features",
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "features": len(SCHEMA.names),
        "schema_hash": SCHEMA.hash,
        "bars": len(bars),
        "timed_bars": len(bars) - warm,
        "repeats": args.repeats,
        "median_ns_per_bar": median,
        "samples_ns_per_bar": samples,
        "ratio_update_to_ema_20": median["feature_update"] / base,
        "ratio_update_to_ema_1": median["feature_update"] / median["ema_1"],
        "ns_per_feature_over_loop": per_feature,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
