"""Backtest throughput on the whole real BTCUSDT 1h history, next to baselines from the same run.

Rows (bars per second; the median of ``--rounds`` rounds, the rows alternating in each round):
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
``bench/results/backtest.json``.
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


def levibot_once(path: Path) -> float:
    spec = BacktestSpec(data=str(path), **SPEC)  # type: ignore[arg-type]
    rec = anyio.run(run_backtest, spec, backend_options={"use_uvloop": True})
    return float(rec.wall_s)


def loops_once(path: Path) -> float:
    from levibot.runtime.node import Node

    settings = backtest_settings(BacktestSpec(data=str(path), **SPEC), path)  # type: ignore[arg-type]

    async def run() -> float:
        node = Node(settings, direct_replay=False)
        t0 = time.perf_counter()
        if await node.run(handle_signals=False) != 0:
            raise SystemExit("the receive-loop backtest failed")
        return time.perf_counter() - t0

    return anyio.run(run, backend_options={"use_uvloop": True})


def bare_once(k: Klines) -> float:
    rule = EmaCross(EmaCrossParams(fast=12, slow=26))
    fee = 0.001
    cash, qty, pending = 10_000.0, 0.0, 0
    rows = zip(k.open.tolist(), k.high.tolist(), k.low.tolist(), k.close.tolist(),
               strict=True)  # fmt: skip
    t0 = time.perf_counter()
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
    return time.perf_counter() - t0


def backtesting_py_once(k: Klines) -> float:
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
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bt.run()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    from levibot.logging import configure

    configure("warning", "console")
    path = ensure_btcusdt(None, False)
    k = load_klines(path)
    n = len(k)
    rows_fn: dict[str, Callable[[], float]] = {
        "levibot.backtest": lambda: levibot_once(path),
        "levibot.loops": lambda: loops_once(path),
        "bare.loop": lambda: bare_once(k),
        "backtesting.py": lambda: backtesting_py_once(k),
    }
    levibot_once(path)  # warm-up: imports, the data cache
    runs: dict[str, list[float]] = {name: [] for name in rows_fn}
    for _ in range(args.rounds):
        for name, once in rows_fn.items():
            runs[name].append(once())
    rows: dict[str, Any] = {}
    bare = statistics.median(runs["bare.loop"])
    print(f"{n} bars, median of {args.rounds} rounds, load average {os.getloadavg()[0]:.2f}")
    print(f"{'row':<20}{'seconds':>10}{'bars/s':>12}{'× bare':>9}")
    for name, times in runs.items():
        med = statistics.median(times)
        rows[name] = {"seconds": med, "bars_per_s": n / med, "ratio_to_bare": med / bare}
        print(f"{name:<20}{med:>10.3f}{n / med:>12,.0f}{med / bare:>9.1f}")
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    loops = rows["levibot.loops"]["seconds"] / rows["levibot.backtest"]["seconds"]
    print(f"replay scheduler: {loops:.2f}x the receive loops' bars/s")
    doc = {
        "bars": n, "rounds": args.rounds, "python": platform.python_version(),
        "load_average": os.getloadavg()[0], "rows": rows,
    }  # fmt: skip
    (out / "backtest.json").write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
