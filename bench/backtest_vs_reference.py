"""Our backtest against backtesting.py on the real data: trades and final equity per strategy.

    .venv/bin/python -m bench.backtest_vs_reference

The same configurations as ``tests/integration/test_backtest_vs_backtesting_py.py`` (which
asserts trade-for-trade equality); this prints the table: closed trades and final equity on
each side and their relative difference. Writes ``bench/results/backtest_vs_reference.json``.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

CASES: list[tuple[str, dict[str, float], float, str, bool]] = [
    ("ema_cross", {"fast": 12, "slow": 26}, 10.0, "next_open", True),  # the whole history
    ("ema_cross", {"fast": 12, "slow": 26}, 10.0, "close", False),
    ("ema_cross", {"fast": 9, "slow": 21}, 5.0, "close", False),
    ("ema_cross", {"fast": 10, "slow": 30}, 10.0, "next_open", False),
    ("ema_cross", {"fast": 7, "slow": 77}, 10.0, "close", False),
    ("ema_cross", {"fast": 50, "slow": 200}, 10.0, "next_open", False),
    ("ema_cross", {"fast": 5, "slow": 50}, 0.0, "next_open", False),
    ("rsi_macd", {}, 10.0, "next_open", False),
    ("rsi_macd", {"rsi": 7, "fast": 8, "slow": 17, "signal": 9}, 10.0, "close", False),
]


async def main() -> list[dict[str, Any]]:
    from levibot.backtest import BacktestSpec, build_trades, equity_curve, run_backtest
    from levibot.data import ensure_btcusdt, load_klines, write_klines_csv
    from levibot.messages import Bar, Fill, PortfolioSnapshot
    from tests.integration import test_backtest_vs_backtesting_py as ref

    k = load_klines(ensure_btcusdt(None, False))
    two = ref._slice(k, len(k) - 2 * 8760, len(k))
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        path2 = Path(tmp) / "BTCUSDT-1h-2y.csv"
        write_klines_csv(path2, two)
        for strategy, params, fee, fill, whole in CASES:
            data, path = (k, ensure_btcusdt(None, False)) if whole else (two, path2)
            spec = BacktestSpec(
                data=str(path), strategy=strategy, params={n: str(v) for n, v in params.items()},
                cash=ref.CASH, fee_bps=fee, slippage_bps=0.0, fill=fill, sizing="all_in",  # type: ignore[arg-type]
                symbol="BTCUSDT",
            )  # fmt: skip
            rec = await run_backtest(spec)
            trades = [t for t in build_trades(rec.recorder.of_type(Fill), {})
                      if t.exit_reason != "open"]  # fmt: skip
            _, equity, _ = equity_curve(
                rec.recorder.of_type(Bar), rec.recorder.of_type(PortfolioSnapshot), ref.CASH
            )
            sides = (ref.ema_cross_sides(data, int(params["fast"]), int(params["slow"]))
                     if strategy == "ema_cross" else
                     ref.rsi_macd_sides(data, {**ref.RSI_MACD, **params}))  # fmt: skip
            stats = ref.reference(data, sides, fee / 1e4, fill)
            theirs = float(stats["Equity Final [$]"])
            out.append({
                "strategy": strategy, "params": params, "fee_bps": fee, "fill": fill,
                "bars": len(data), "trades": len(trades), "reference_trades": len(stats._trades),
                "final_equity": equity[-1], "reference_final_equity": theirs,
                "relative_difference": abs(equity[-1] - theirs) / theirs,
            })  # fmt: skip
    return out


if __name__ == "__main__":
    rows = asyncio.run(main())
    print(f"{'strategy':<10} {'params':<34} {'fill':<9} {'bars':>6} {'trades':>6} {'ref':>5} "
          f"{'equity':>12} {'ref equity':>12} {'rel diff':>9}")  # fmt: skip
    for r in rows:
        print(f"{r['strategy']:<10} {json.dumps(r['params']):<34} {r['fill']:<9} {r['bars']:>6} "
              f"{r['trades']:>6} {r['reference_trades']:>5} {r['final_equity']:>12.4f} "
              f"{r['reference_final_equity']:>12.4f} {r['relative_difference']:>9.1e}")  # fmt: skip
    Path("bench/results").mkdir(parents=True, exist_ok=True)
    Path("bench/results/backtest_vs_reference.json").write_text(json.dumps(rows, indent=2))
