"""Backtest throughput on the whole real BTCUSDT 1h history, next to baselines from the same run.

Rows (bars per second, by wall time and by this process's CPU time, which a shared machine
disturbs less; the median of ``--rounds`` rounds, the rows alternating in each round):
- ``levibot.backtest``: ``run_backtest`` (EMA 12/26 cross, all-in, next-open fills): the real
  feed → scoring → risk → order actors and the recorder in one node under the replay clock
  (a rule strategy computes its own EMAs: no feature actor), settling the pipeline after every
  bar; report building not included. Every handler runs from the feed's settle
  (``levibot.runtime._replay``: no task per actor).
- ``levibot.loops``: the same node with one receive loop (task) per actor
  (``Node(direct_replay=False)``, how every backtest ran before the replay scheduler): what the
  scheduler saves, measured in the same run.
- ``bare.loop``: the same per-bar work in one plain Python loop, no actors and no messages:
  the ``EmaCross`` rule (its two EMAs), all-in fills at the next open on a two-number
  portfolio (the floor of what the actors must compute).
- ``backtesting.py``: the reference library on the same bars (TA-Lib EMAs precomputed).

Run: ``.venv/bin/python bench/bench_backtest.py [--rounds 3]``; writes
``bench/results/backtest.json``. Against an older commit: ``git worktree add /tmp/base REV`` and
run ``PYTHONPATH=/tmp/base .venv/bin/python bench/bench_backtest.py`` alternately with this one
(an older tree has no ``levibot.loops`` row: ``--rows levibot.backtest,bare.loop``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio

from levibot.backtest import BacktestSpec, run_backtest
from levibot.backtest.runner import backtest_settings
from levibot.data import Klines, ensure_btcusdt, load_klines
from levibot.messages import SignalSide
from levibot.strategies import EmaCross, EmaCrossParams

SPEC = {"strategy": "ema_cross", "fill": "next_open"}


Timing = tuple[float, float]  # (wall seconds, CPU seconds)


def levibot_once(path: Path) -> Timing:
    spec = BacktestSpec(data=str(path), **SPEC)  # type: ignore[arg-type]
    rec = anyio.run(run_backtest, spec, backend_options={"use_uvloop": True})
    return float(rec.wall_s), float(getattr(rec, "cpu_s", math.nan))


def loops_once(path: Path) -> Timing:
    from levibot.runtime.node import Node

    settings = backtest_settings(BacktestSpec(data=str(path), **SPEC), path)  # type: ignore[arg-type]

    async def run() -> Timing:
        node = Node(settings, direct_replay=False)
        t0, c0 = time.perf_counter(), time.process_time()
        if await node.run(handle_signals=False) != 0:
            raise SystemExit("the receive-loop backtest failed")
        return time.perf_counter() - t0, time.process_time() - c0

    return anyio.run(run, backend_options={"use_uvloop": True})


def bare_once(k: Klines) -> Timing:
    rule = EmaCross(EmaCrossParams(fast=12, slow=26))
    fee = 0.001
    cash, qty, pending = 10_000.0, 0.0, 0
    rows = zip(k.open.tolist(), k.high.tolist(), k.low.tolist(), k.close.tolist(),
               strict=True)  # fmt: skip
    t0, c0 = time.perf_counter(), time.process_time()
    for o, h, lo, c in rows:
        if pending > 0:
            q = math.floor(cash / (o * (1 + fee)) * 1e8) / 1e8
            cash -= q * o * (1 + fee)
            qty, pending = q, 0
        elif pending < 0:
            cash += qty * o * (1 - fee)
            qty, pending = 0.0, 0
        d = rule.update("BTCUSDT", h, lo, c)
        if d is not None:
            pending = 1 if d.side is SignalSide.LONG and qty == 0 else -1 if qty > 0 else 0
    return time.perf_counter() - t0, time.process_time() - c0


def backtesting_py_once(k: Klines) -> Timing:
    import pandas as pd
    import talib
    from backtesting import Backtest, Strategy

    diff = talib.EMA(k.close, 12) - talib.EMA(k.close, 26)

    class Cross(Strategy):  # type: ignore[misc]
        def init(self) -> None:
            pass

        def next(self) -> None:
            i = len(self.data) - 1
            if i < 200:
                return
            if diff[i - 1] < 0 < diff[i] and not self.position:
                self.buy(size=1 - 1e-12)
            elif diff[i - 1] > 0 > diff[i] and self.position:
                self.position.close()

    df = pd.DataFrame(
        {"Open": k.open / 1e8, "High": k.high / 1e8, "Low": k.low / 1e8, "Close": k.close / 1e8,
         "Volume": k.volume}, index=pd.to_datetime(k.ts, unit="ns"),
    )  # fmt: skip
    bt = Backtest(df, Cross, cash=10_000, commission=0.001)
    t0, c0 = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bt.run()
    return time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rows", default="", help="comma-separated row names (default: all)")
    args = ap.parse_args()
    from levibot.logging import configure

    configure("warning", "console")
    path = ensure_btcusdt(None, False)
    k = load_klines(path)
    n = len(k)
    rows_fn: dict[str, Callable[[], Timing]] = {
        "levibot.backtest": lambda: levibot_once(path),
        "levibot.loops": lambda: loops_once(path),
        "bare.loop": lambda: bare_once(k),
        "backtesting.py": lambda: backtesting_py_once(k),
    }
    if args.rows:
        rows_fn = {name: rows_fn[name] for name in args.rows.split(",")}
    levibot_once(path)  # warm-up: imports, the data cache
    runs: dict[str, list[Timing]] = {name: [] for name in rows_fn}
    for _ in range(args.rounds):
        for name, once in rows_fn.items():
            runs[name].append(once())
    rows: dict[str, Any] = {}
    print(f"{n} bars, median of {args.rounds} rounds, load average {os.getloadavg()[0]:.2f}")
    head = ("wall s", 8), ("bars/s", 11), ("× bare", 8), ("cpu s", 8), ("bars/cpu-s", 12)
    print(f"{'row':<18}" + "".join(f"{h:>{w}}" for h, w in head) + f"{'× bare':>8}")
    bare = runs.get("bare.loop", [(math.nan, math.nan)])
    bare_wall = statistics.median(t[0] for t in bare)
    bare_cpu = statistics.median(t[1] for t in bare)
    for name, times in runs.items():
        wall = statistics.median(t[0] for t in times)
        cpu = statistics.median(t[1] for t in times)
        rows[name] = {
            "seconds": wall, "bars_per_s": n / wall, "ratio_to_bare": wall / bare_wall,
            "cpu_seconds": cpu, "bars_per_cpu_s": n / cpu, "cpu_ratio_to_bare": cpu / bare_cpu,
        }  # fmt: skip
        print(
            f"{name:<18}{wall:>8.3f}{n / wall:>11,.0f}{wall / bare_wall:>8.1f}"
            f"{cpu:>8.3f}{n / cpu:>12,.0f}{cpu / bare_cpu:>8.1f}"
        )
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    if "levibot.loops" in rows and "levibot.backtest" in rows:
        new, old = rows["levibot.backtest"], rows["levibot.loops"]
        print(
            f"replay scheduler: {old['seconds'] / new['seconds']:.2f}x the receive loops' "
            f"bars/s ({old['cpu_seconds'] / new['cpu_seconds']:.2f}x by CPU time)"
        )
    doc = {
        "bars": n, "rounds": args.rounds, "python": platform.python_version(),
        "load_average": os.getloadavg()[0], "rows": rows,
    }  # fmt: skip
    (out / "backtest.json").write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
