"""The backtest report: metrics, trades and the equity curve, from what the recorder kept.

Conventions:
- equity at a bar = the portfolio's cash after that bar (fills included) plus every position
  marked at that bar's close: the order actor's formula, marked at the close (a fill at the
  close with slippage would otherwise mark the position at its own slipped price);
- final equity: the last bar's equity, open positions marked at the last close (no exit fee);
- return: final equity / initial cash − 1;
- trades: one row per closing sell (long only); an entry's fee is charged pro rata to the
  sells that close it, so ``pnl`` is net of both fees; a position still open at the end is
  listed with ``exit_reason = open`` and its PnL marked at the last close, but is not counted
  in ``trades`` or ``win_rate``;
- win rate: closed trades with pnl > 0 / closed trades;
- max drawdown: max over bars of (running peak − equity) / running peak, a fraction;
- Sharpe: mean / standard deviation (ddof=1) of per-bar simple returns of the equity, times
  √(bars per year) with a year of 365 days of 24 h (crypto trades every hour): √8760 for 1h
  bars; risk-free rate 0;
- exposure: the fraction of bars at whose close a position was held.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import msgspec

from levibot import valuation
from levibot.data import iso
from levibot.messages import Bar, Fill, OrderDenied, OrderIntent, PortfolioSnapshot, Side, Signal

YEAR_S = 365 * 86_400


@dataclass(slots=True)
class Trade:
    """One closed (or still open) long trade."""

    symbol: str
    entry_ns: int
    exit_ns: int  # 0 while open
    side: str
    qty: float
    entry_price: float
    exit_price: float  # the last close while open
    fee: float
    pnl: float
    exit_reason: str

    @property
    def return_pct(self) -> float:
        """Return the PnL as a percentage of the entry notional."""
        notional = self.qty * self.entry_price
        return 100.0 * self.pnl / notional if notional > 0 else 0.0


@dataclass(slots=True)
class _Lot:
    entry_ns: int
    qty: float
    avg: float
    fee: float


def build_trades(fills: list[Fill], last_close: dict[str, float]) -> list[Trade]:
    """Pair buys and sells (per symbol, long only) into trades."""
    lots: dict[str, _Lot] = {}
    out: list[Trade] = []
    for f in fills:
        lot = lots.get(f.symbol)
        if f.side is Side.BUY:
            if lot is None:
                lots[f.symbol] = _Lot(f.ts_event, f.quantity, f.price, f.fee)
            else:
                total = lot.qty + f.quantity
                lot.avg = (lot.avg * lot.qty + f.price * f.quantity) / total
                lot.qty, lot.fee = total, lot.fee + f.fee
            continue
        if lot is None:
            continue  # a sell without a recorded entry (the replay started mid-position)
        share = min(f.quantity / lot.qty, 1.0) if lot.qty > 0 else 1.0
        entry_fee = lot.fee * share
        out.append(
            Trade(
                symbol=f.symbol, entry_ns=lot.entry_ns, exit_ns=f.ts_event, side="long",
                qty=f.quantity, entry_price=lot.avg, exit_price=f.price,
                fee=entry_fee + f.fee, pnl=f.realized_pnl, exit_reason=f.reason,
            )
        )  # fmt: skip
        lot.qty -= f.quantity
        lot.fee -= entry_fee
        if f.position_after <= 0 or lot.qty <= 1e-12:
            del lots[f.symbol]
    for symbol, lot in lots.items():
        close = last_close.get(symbol, lot.avg)
        out.append(
            Trade(
                symbol=symbol, entry_ns=lot.entry_ns, exit_ns=0, side="long", qty=lot.qty,
                entry_price=lot.avg, exit_price=close, fee=lot.fee,
                pnl=lot.qty * (close - lot.avg) - lot.fee, exit_reason="open",
            )
        )  # fmt: skip
    return out


def equity_curve(
    bars: list[Bar], snaps: list[PortfolioSnapshot], cash: float
) -> tuple[list[int], list[float], list[bool]]:
    """Return (bar close times, equity, in-position) per bar close time (several symbols'
    bars of one instant make one point, after the last of them); see the module conventions."""
    by_ts: dict[int, PortfolioSnapshot] = {}
    for s in snaps:
        by_ts[s.ts_event] = s  # the last snapshot of an instant is the one after its fills
    ts_out: list[int] = []
    eq_out: list[float] = []
    held_out: list[bool] = []
    closes: dict[str, float] = {}
    snap_ts = sorted(by_ts)
    j, current = 0, None
    for n, bar in enumerate(bars):
        closes[bar.symbol] = bar.close
        if n + 1 < len(bars) and bars[n + 1].ts_event == bar.ts_event:
            continue  # another symbol's bar of the same instant follows
        while j < len(snap_ts) and snap_ts[j] <= bar.ts_event:
            current = by_ts[snap_ts[j]]
            j += 1
        if current is None:
            equity, held = cash, False
        else:
            equity = valuation.equity(
                current.cash,
                (
                    valuation.Marked(p.quantity, closes.get(p.symbol, p.last_price))
                    for p in current.positions
                ),
            )
            held = any(p.quantity > 0 for p in current.positions)
        ts_out.append(bar.ts_event)
        eq_out.append(equity)
        held_out.append(held)
    return ts_out, eq_out, held_out


def max_drawdown(equity: list[float]) -> float:
    """Return the largest fall from a running peak, as a fraction of that peak."""
    return valuation.max_drawdown(equity)


def sharpe(equity: list[float], periods_per_year: float) -> float:
    """Return the annualised Sharpe ratio of per-bar simple returns (0 when undefined)."""
    rets = [b / a - 1.0 for a, b in itertools.pairwise(equity) if a > 0]
    if len(rets) < 2:
        return 0.0
    mean = sum(rets) / len(rets)
    var = sum((r - mean) ** 2 for r in rets) / (len(rets) - 1)
    return mean / math.sqrt(var) * math.sqrt(periods_per_year) if var > 0 else 0.0


def build_report(recorder: Any, *, cash: float, config: dict[str, Any]) -> dict[str, Any]:
    """Return the report document (see the module docstring for every convention)."""
    bars: list[Bar] = recorder.of_type(Bar)
    fills: list[Fill] = recorder.of_type(Fill)
    snaps: list[PortfolioSnapshot] = recorder.of_type(PortfolioSnapshot)
    _, equity, held = equity_curve(bars, snaps, cash)
    last_close = {b.symbol: b.close for b in bars}
    trades = build_trades(fills, last_close)
    closed = [t for t in trades if t.exit_reason != "open"]
    interval = _interval_ns(bars)
    per_year = YEAR_S * 1e9 / interval if interval > 0 else 0.0
    final = equity[-1] if equity else cash
    denials: dict[str, int] = {}
    for d in recorder.of_type(OrderDenied):
        denials[d.code] = denials.get(d.code, 0) + 1
    return {
        "initial_cash": cash,
        "final_equity": final,
        "return": final / cash - 1.0,
        "trades": len(closed),
        "open_trades": len(trades) - len(closed),
        "win_rate": sum(1 for t in closed if t.pnl > 0) / len(closed) if closed else 0.0,
        "max_drawdown": max_drawdown(equity),
        "sharpe": sharpe(equity, per_year) if per_year else 0.0,
        "sharpe_annualisation": f"sqrt({per_year:g}) (365 days of 24h / bar interval)",
        "fees": sum(f.fee for f in fills),
        "exposure": sum(held) / len(held) if held else 0.0,
        "bars": len(bars),
        "first_ts": iso(bars[0].start) if bars else None,
        "last_ts": iso(bars[-1].ts_event) if bars else None,
        "first_ts_ns": bars[0].start if bars else None,
        "last_ts_ns": bars[-1].ts_event if bars else None,
        "signals": len(recorder.of_type(Signal)),
        "intents": len(recorder.of_type(OrderIntent)),
        "fills": len(fills),
        "denials": denials,
        "symbols": _by_symbol(bars, trades),
        "config": config,
    }


def _by_symbol(bars: list[Bar], trades: list[Trade]) -> dict[str, dict[str, Any]]:
    """Return each symbol's bars, closed and open trades and PnL (open ones at the last close)."""
    out: dict[str, dict[str, Any]] = {}
    for b in bars:
        out.setdefault(b.symbol, {"bars": 0, "trades": 0, "open_trades": 0, "pnl": 0.0})
        out[b.symbol]["bars"] += 1
    for t in trades:
        row = out.setdefault(t.symbol, {"bars": 0, "trades": 0, "open_trades": 0, "pnl": 0.0})
        row["open_trades" if t.exit_reason == "open" else "trades"] += 1
        row["pnl"] += t.pnl
    return out


def _interval_ns(bars: list[Bar]) -> int:
    if not bars:
        return 0
    b = bars[0]
    return b.ts_event - b.start


TRADE_COLUMNS = (
    "entry_time", "exit_time", "symbol", "side", "qty", "entry_price", "exit_price", "fee",
    "pnl", "return_pct", "exit_reason",
)  # fmt: skip


def write_trades(path: Path, trades: list[Trade]) -> None:
    """Write ``trades.csv`` (UTC times, ``exit_time`` empty while open)."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(TRADE_COLUMNS)
        for t in trades:
            w.writerow([
                iso(t.entry_ns), iso(t.exit_ns) if t.exit_ns else "", t.symbol, t.side,
                repr(t.qty), repr(t.entry_price), repr(t.exit_price), repr(t.fee), repr(t.pnl),
                f"{t.return_pct:.6f}", t.exit_reason,
            ])  # fmt: skip


def plot_equity(path: Path, ts: list[int], equity: list[float], title: str) -> None:
    """Draw the equity curve and its drawdown to a PNG (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    t = np.asarray(ts, dtype="datetime64[ns]")
    eq = np.asarray(equity, dtype=float)
    peak = np.maximum.accumulate(eq) if len(eq) else eq
    dd = np.where(peak > 0, (eq - peak) / np.where(peak > 0, peak, 1.0), 0.0)
    fig, (ax1, ax2) = plt.subplots(
        2, 1, figsize=(11, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    ax1.plot(t, eq, lw=0.8)
    ax1.set_ylabel("equity")
    ax1.set_title(title)
    ax1.grid(alpha=0.3)
    ax2.fill_between(t, dd * 100.0, 0.0, color="tab:red", alpha=0.5, lw=0)
    ax2.set_ylabel("drawdown %")
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_outputs(
    out: Path,
    recorder: Any,
    *,
    cash: float,
    config: dict[str, Any],
    run: dict[str, Any],
    title: str = "levibot backtest",
    png: bool = True,
) -> dict[str, Any]:
    """Write ``report.json``, ``trades.csv`` and ``equity.png`` under ``out``; return the report."""
    out.mkdir(parents=True, exist_ok=True)
    report = build_report(recorder, cash=cash, config=config)
    report["run"] = run
    bars = recorder.of_type(Bar)
    ts, equity, _ = equity_curve(bars, recorder.of_type(PortfolioSnapshot), cash)
    trades = build_trades(recorder.of_type(Fill), {b.symbol: b.close for b in bars})
    write_trades(out / "trades.csv", trades)
    (out / "report.json").write_text(json.dumps(report, indent=2, default=_json) + "\n")
    if png:
        plot_equity(out / "equity.png", ts, equity, title)
    return report


def _json(obj: Any) -> Any:
    if isinstance(obj, msgspec.Struct):
        return msgspec.to_builtins(obj)
    if hasattr(obj, "__dataclass_fields__"):
        return asdict(obj)
    return str(obj)
