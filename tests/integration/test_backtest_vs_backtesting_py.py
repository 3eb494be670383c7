"""The backtest agrees with backtesting.py (an independent, well-known library) on real data.

Both sides run the EMA-cross strategy on the real Binance BTCUSDT 1h klines under the same
conventions (``levibot backtest --help`` states them):

- EMAs (and for ``rsi_macd`` the RSI and MACD) are TA-Lib's, computed from the first bar of
  the data; a decision is possible from the first bar where the strategy's own indicators
  exist (the strategy computes them itself, at any period, and does not wait for the feature
  schema): bar ``slow`` for an EMA cross, the first crossing being between ``slow - 1`` and
  ``slow``;
- a crossover is a strict change of sign of (fast − slow), or of the MACD histogram, between
  two consecutive bars; ``rsi_macd`` enters only while RSI < overbought and exits only while
  RSI > oversold;
- long only: buy everything on an up-cross when flat, sell everything on a down-cross;
- commission = our fee (both sides), no spread/slippage;
- ``fill=close`` ↔ ``trade_on_close=True``; ``fill=next_open`` ↔ the default (next bar's open).

Units: backtesting.py trades whole units only, so it runs on prices divided by 1e8: one of its
units is one satoshi (1e-8 BTC), which is exactly our quantity step. All-in sizing:
``size = 1 − 1e-12`` (a fraction: ``floor(cash / (price·(1+fee)))`` units, as ours; the 1e-12
moves the cash by 1e-8 $ and flips a floor with probability ~1e-5 per trade). With
``next_open`` our risk actor sizes at the signal bar's close and the venue clamps the quantity
to what the cash pays at the open, so the reference buys
``floor(cash / (max(close, next open)·(1+fee)))`` units (it looks at the next open for the
size only, never for the decision).

Tolerances: trade count, the bar of every entry and exit, and every quantity (in satoshis)
must be equal; each trade's PnL within 1e-6 $; final equity within a relative 1e-9. Both sides
do the same float64 arithmetic in a different order (and on prices scaled by 1e-8), which
leaves differences around 1e-15 relative; one satoshi of difference on one trade at $40k moves
the equity by ~4e-4 $ (1e-8 relative), so 1e-9 still catches any real difference of convention.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from levibot.backtest import BacktestSpec, build_trades, equity_curve, run_backtest
from levibot.data import Klines, ensure_btcusdt, load_klines, write_klines_csv
from levibot.messages import Bar, Fill, PortfolioSnapshot

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

SCALE = 1e8  # backtesting.py units are satoshis
CASH = 10_000.0


@pytest.fixture(scope="module")
def klines() -> Klines:
    return load_klines(ensure_btcusdt(None, False))


def _slice(k: Klines, start: int, stop: int) -> Klines:
    return Klines(
        symbol=k.symbol, ts=k.ts[start:stop], open=k.open[start:stop], high=k.high[start:stop],
        low=k.low[start:stop], close=k.close[start:stop], volume=k.volume[start:stop],
    )  # fmt: skip


def ema_cross_sides(k: Klines, fast: int, slow: int) -> list[int]:
    """+1 (enter) / -1 (exit) / 0 per bar, from TA-Lib's EMAs; NaN compares false."""
    import talib

    diff = talib.EMA(k.close, fast) - talib.EMA(k.close, slow)
    out = [0] * len(diff)
    for i in range(1, len(diff)):
        prev, cur = diff[i - 1], diff[i]
        out[i] = 1 if prev < 0 < cur else -1 if prev > 0 > cur else 0
    return out


def rsi_macd_sides(k: Klines, p: dict[str, float]) -> list[int]:
    """+1 / -1 / 0 per bar: MACD histogram crossings filtered by the RSI levels (TA-Lib)."""
    import talib

    hist = talib.MACD(k.close, int(p["fast"]), int(p["slow"]), int(p["signal"]))[2]
    rsi = talib.RSI(k.close, int(p["rsi"]))
    out = [0] * len(hist)
    for i in range(1, len(hist)):
        prev, cur = hist[i - 1], hist[i]
        if prev < 0 < cur and rsi[i] < p["overbought"]:
            out[i] = 1
        elif prev > 0 > cur and rsi[i] > p["oversold"]:
            out[i] = -1
    return out


def reference(k: Klines, sides: list[int], fee: float, fill: str) -> Any:
    """Run backtesting.py on ``k`` with the conventions above; return its stats."""
    import pandas as pd
    from backtesting import Backtest, Strategy

    next_open = np.append(k.open[1:], np.nan)
    close = k.close

    class Rule(Strategy):  # type: ignore[misc]
        def init(self) -> None:
            pass

        def next(self) -> None:
            i = len(self.data) - 1
            if sides[i] > 0 and not self.position:
                if fill == "close":
                    self.buy(size=1 - 1e-12)
                elif not math.isnan(next_open[i]):
                    price = max(close[i], next_open[i]) / SCALE
                    units = math.floor(self.equity / (price * (1 + fee)) + 1e-6)
                    if units > 0:
                        self.buy(size=units)
            elif sides[i] < 0 and self.position:
                self.position.close()

    df = pd.DataFrame(
        {"Open": k.open / SCALE, "High": k.high / SCALE, "Low": k.low / SCALE,
         "Close": k.close / SCALE, "Volume": k.volume},
        index=pd.to_datetime(k.ts, unit="ns"),
    )  # fmt: skip
    bt = Backtest(df, Rule, cash=CASH, commission=fee, trade_on_close=fill == "close")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "trades remain open at the end": expected
        return bt.run()


async def compare(
    k: Klines, path: Path, strategy: str, params: dict[str, float], fee_bps: float, fill: str
) -> None:
    spec = BacktestSpec(
        data=str(path), strategy=strategy, params={n: str(v) for n, v in params.items()},
        cash=CASH, fee_bps=fee_bps, slippage_bps=0.0, fill=fill, sizing="all_in",  # type: ignore[arg-type]
        symbol="BTCUSDT",
    )  # fmt: skip
    rec = await run_backtest(spec)
    bars = rec.recorder.of_type(Bar)
    assert len(bars) == len(k)
    trades = build_trades(rec.recorder.of_type(Fill), {})
    closed = [t for t in trades if t.exit_reason != "open"]
    _, equity, _ = equity_curve(bars, rec.recorder.of_type(PortfolioSnapshot), CASH)

    if strategy == "ema_cross":
        sides = ema_cross_sides(k, int(params["fast"]), int(params["slow"]))
    else:
        sides = rsi_macd_sides(k, {**RSI_MACD, **params})
    stats = reference(k, sides, fee_bps / 1e4, fill)
    ref = stats._trades
    assert len(closed) == len(ref) > 20
    # Where each fill happened, in our event time: the signal bar's close (its open time + the
    # interval) for fill=close, the fill bar's open time for next_open.
    interval = int(k.ts[1] - k.ts[0])
    shift = interval if fill == "close" else 0
    ours_entry = [t.entry_ns for t in closed]
    ours_exit = [t.exit_ns for t in closed]
    ref_entry = [int(k.ts[i]) + shift for i in ref["EntryBar"]]
    ref_exit = [int(k.ts[i]) + shift for i in ref["ExitBar"]]
    assert ours_entry == ref_entry
    assert ours_exit == ref_exit
    assert [round(t.qty * SCALE) for t in closed] == [int(s) for s in ref["Size"]]
    np.testing.assert_allclose([t.pnl for t in closed], ref["PnL"].to_numpy(), rtol=0, atol=1e-6)
    final_ref = float(stats["Equity Final [$]"])
    assert equity[-1] == pytest.approx(final_ref, rel=1e-9, abs=0)
    open_ours = [t for t in trades if t.exit_reason == "open"]
    # backtesting.py marks an open trade at the last close too: same final equity either way.
    assert len(open_ours) <= 1


RSI_MACD = {"rsi": 14, "fast": 12, "slow": 26, "signal": 9, "overbought": 70.0, "oversold": 30.0}


async def test_ema_cross_12_26_agrees_with_backtesting_py_on_the_whole_btcusdt_history(
    klines: Klines,
) -> None:
    """All 55,765 bars, next-open fills (the default of both), 10 bps."""
    path = ensure_btcusdt(None, False)
    await compare(klines, path, "ema_cross", {"fast": 12, "slow": 26}, 10.0, "next_open")


@pytest.mark.parametrize(
    ("strategy", "params", "fee_bps", "fill"),
    [
        ("ema_cross", {"fast": 12, "slow": 26}, 10.0, "close"),
        ("ema_cross", {"fast": 9, "slow": 21}, 5.0, "close"),
        ("ema_cross", {"fast": 10, "slow": 30}, 10.0, "next_open"),  # spans not in the schema
        ("ema_cross", {"fast": 7, "slow": 77}, 10.0, "close"),
        ("ema_cross", {"fast": 50, "slow": 200}, 10.0, "next_open"),
        ("ema_cross", {"fast": 5, "slow": 50}, 0.0, "next_open"),
        ("rsi_macd", {}, 10.0, "next_open"),
        ("rsi_macd", {"rsi": 7, "fast": 8, "slow": 17, "signal": 9}, 10.0, "close"),
    ],
)
async def test_strategies_agree_with_backtesting_py_on_the_last_two_years(
    klines: Klines,
    tmp_path: Path,
    strategy: str,
    params: dict[str, float],
    fee_bps: float,
    fill: str,
) -> None:
    two_years = _slice(klines, len(klines) - 2 * 8760, len(klines))
    path = tmp_path / "BTCUSDT-1h-2y.csv"
    write_klines_csv(path, two_years)
    await compare(two_years, path, strategy, params, fee_bps, fill)
