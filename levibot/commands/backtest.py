"""``levibot backtest``: run a strategy over kline data through the REAL actors, write a report.

The CSV is replayed by the feed (``source = "replay"``) under the replay clock, one bar at a time:
each bar goes feed → feature → scoring → risk → order → fill → portfolio before the next bar
is published. Only ``--strategy`` is started in the scoring actor; the risk actor runs preset
``off`` (no limit interferes unless given with ``--param risk.<limit>=...``) and no ATR
stop-loss / take-profit (``--param risk.atr_exits=true`` turns them on); nothing is persisted.

Conventions (they are what the comparison with backtesting.py checks, on the real data):

- bars: ``ts_event`` is the bar's close time (open time + timeframe); indicators are computed
  on closed bars;
- a rule strategy computes its own indicators at its own periods and decides as soon as they
  exist: ``ema_cross`` (``--param fast=N slow=M``, any spans, fast < slow) from bar index
  ``slow`` (its first possible crossing), ``rsi_macd`` (``rsi``, ``fast``, ``slow``,
  ``signal``, ``overbought``, ``oversold``) from index ``max(slow + signal - 1, rsi)``; the
  ``onnx`` strategy waits for the whole feature vector (the 200th bar: ``ema_200``);
- EMAs, MACD and RSI are TA-Lib's (EMAs seeded with the SMA of the first ``span`` closes; the
  kernels equal TA-Lib to 1e-9);
- ``ema_cross``: a crossover is a strict change of sign of (fast − slow) between two
  consecutive bars (``prev < 0 < cur`` up, ``prev > 0 > cur`` down; touching 0 is not a
  cross); up → LONG, down → FLAT;
- spot, long only, no pyramiding: LONG while flat buys, FLAT while long sells everything;
- fills: ``--fill close`` at the signal bar's close; ``--fill next_open`` (default) at the
  next bar's open; buys pay ``price·(1+slippage)``, sells get ``price·(1−slippage)``; the fee
  is ``notional·fee_bps/1e4`` on each side;
- ``all_in`` sizing: ``qty = floor(cash / (price·(1+fee)), 1e-8)`` at the signal bar's close;
  with ``next_open`` the venue clamps it to what the cash pays at the open, so
  ``qty = floor(cash / (max(close, next open)·(1+fee)), 1e-8)``; other modes: ``fixed_notional``
  (``--param risk.notional=1000``), ``atr_risk`` (``risk.risk_fraction``), ``kelly``
  (``risk.kelly_fraction``, ``risk.vol_target``);
- several symbols: ``--data BTCUSDT-1h.csv --data ETHUSDT-1h.csv`` replays the files as one
  stream in time order (each file names its symbol) and trades them with one portfolio; the
  equity curve has one point per instant and the report a ``symbols`` breakdown. ``all_in``
  sizing then puts everything in the first symbol to signal: use ``fixed_notional`` or
  ``--param risk.equity_fraction=...``;
- report (``report.json``): final equity with open positions marked at the last close (no exit
  fee), return, closed trades, win rate, max drawdown (fraction of the running peak), Sharpe
  (per-bar returns, ×√8760 for 1h bars: 365 days of 24 h, risk-free 0), fees, exposure (the
  fraction of bars at whose close a position was held), first/last timestamps, the config;
  ``trades.csv`` (one row per closing sell; pnl net of both fees); ``equity.png``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from levibot.errors import LevibotError


def _param(text: str) -> tuple[str, str]:
    key, eq, value = text.partition("=")
    if not eq or not key.strip():
        raise argparse.ArgumentTypeError(f"expected k=v, got {text!r}")
    return key.strip(), value.strip()


def register(sub: Any) -> None:
    """Register ``levibot backtest``."""
    p = sub.add_parser(
        "backtest",
        help="backtest a strategy on kline data through the real actors",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--data",
        metavar="CSV",
        action="append",
        default=[],
        help="kline CSV (default: the real BTCUSDT 1h data, fetched once); repeat it for "
        "several symbols traded by one portfolio (each file names its symbol: ETHUSDT-1h.csv)",
    )
    p.add_argument("--strategy", default="ema_cross", help="onnx, ema_cross or rsi_macd")
    p.add_argument(
        "--param",
        metavar="K=V",
        type=_param,
        action="append",
        default=[],
        help="strategy parameter (fast=10, slow=30, rsi=14, overbought=70, model_id=...) "
        "or actor field as section.key (risk.notional=500); repeatable",
    )
    p.add_argument("--cash", type=float, default=10_000.0, help="starting cash (10000)")
    p.add_argument("--fee-bps", type=float, default=10.0, help="fee per side in bps (10)")
    p.add_argument("--slippage-bps", type=float, default=0.0, help="slippage in bps (0)")
    p.add_argument(
        "--fill",
        choices=("close", "next_open"),
        default="next_open",
        help="fill at the signal bar's close or the next bar's open (next_open)",
    )
    p.add_argument(
        "--sizing",
        choices=("all_in", "fixed_notional", "atr_risk", "kelly"),
        default="all_in",
        help="position sizing (all_in)",
    )
    p.add_argument("--symbol", default="BTCUSDT", help="symbol of the data (BTCUSDT)")
    p.add_argument("--limit", type=int, default=0, help="replay at most N bars (0: all)")
    p.add_argument("--out", metavar="DIR", default="var/backtest", help="output directory")
    p.add_argument("--no-png", action="store_true", help="skip the equity PNG")
    p.add_argument("--log-level", default="warning", choices=("debug", "info", "warning", "error"))
    p.set_defaults(func=run)  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Run the backtest, write the outputs, print a summary."""
    import anyio

    from levibot.backtest import BacktestSpec, run_backtest, write_outputs
    from levibot.backtest.runner import symbols_of
    from levibot.logging import configure

    configure(args.log_level, "auto")
    try:
        many = len(args.data) > 1
        spec = BacktestSpec(
            data="" if many else "".join(args.data), data_files=tuple(args.data) if many else (),
            strategy=args.strategy, params=dict(args.param), cash=args.cash,
            fee_bps=args.fee_bps, slippage_bps=args.slippage_bps, fill=args.fill,
            sizing=args.sizing, symbol=args.symbol, limit=max(args.limit, 0),
        )  # fmt: skip
    except (TypeError, ValueError) as exc:
        raise LevibotError(str(exc)) from None
    started = time.perf_counter()
    rec = anyio.run(run_backtest, spec, backend_options={"use_uvloop": True})
    config = _config(spec, rec)
    out = Path(args.out)
    bars = len(rec.recorder.of_type(_bar_type()))
    run_info = {"wall_s": round(rec.wall_s, 3), "bars_per_s": round(bars / rec.wall_s, 1)}
    report = write_outputs(
        out, rec.recorder, cash=spec.cash, config=config, run=run_info,
        title=f"{spec.strategy} {', '.join(symbols_of(spec))} ({spec.fill}, "
        f"{spec.fee_bps:g} bps)",
        png=not args.no_png,
    )  # fmt: skip
    summary = {k: report[k] for k in (
        "final_equity", "return", "trades", "win_rate", "max_drawdown", "sharpe", "fees",
        "exposure", "first_ts", "last_ts")}  # fmt: skip
    summary["bars_per_s"] = run_info["bars_per_s"]
    summary["total_s"] = round(time.perf_counter() - started, 3)
    print(json.dumps(summary, indent=2))
    print(f"wrote {out / 'report.json'}, {out / 'trades.csv'}"
          + ("" if args.no_png else f", {out / 'equity.png'}"))  # fmt: skip
    return 0


def _bar_type() -> type:
    from levibot.messages import Bar

    return Bar


def _config(spec: Any, rec: Any) -> dict[str, Any]:
    import msgspec

    actors = rec.settings.actors
    return {
        "spec": msgspec.to_builtins(spec),
        "data": rec.data,
        "actors": {
            name: msgspec.to_builtins(actors[name])
            for name in ("feed", "feature", "scoring", "risk", "order")
            if name in actors
        },
    }
