"""One portfolio over several symbols' files, run by the same engine as a single symbol.

The second symbol is real data too: the BTCUSDT year before the last, shifted one year later
and named ETHUSDT, so both files cover the same instants with different prices. With a fixed
notional and ample cash the symbols cannot interact, so each symbol's trades in the joint run
must be exactly its trades run alone, and the joint PnL their sum.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from levibot.backtest import BacktestSpec, build_report, build_trades, run_backtest
from levibot.data import Klines, ensure_btcusdt, load_klines, write_klines_csv
from levibot.messages import Bar, Fill

pytestmark = [pytest.mark.slow, pytest.mark.anyio]
YEAR = 8760
CASH = 100_000.0


def _slice(k: Klines, start: int, stop: int, symbol: str, shift_ns: int = 0) -> Klines:
    return Klines(
        symbol=symbol, ts=k.ts[start:stop] + shift_ns, open=k.open[start:stop],
        high=k.high[start:stop], low=k.low[start:stop], close=k.close[start:stop],
        volume=k.volume[start:stop],
    )  # fmt: skip


def spec(**kw: object) -> BacktestSpec:
    base: dict[str, object] = dict(
        strategy="ema_cross", params={"fast": "10", "slow": "30", "risk.notional": "1000"},
        cash=CASH, fee_bps=10.0, fill="next_open", sizing="fixed_notional",
    )  # fmt: skip
    return BacktestSpec(**{**base, **kw})  # type: ignore[arg-type]


async def test_a_multi_symbol_backtest_is_the_sum_of_its_symbols(tmp_path: Path) -> None:
    k = load_klines(ensure_btcusdt(None, False))
    n = len(k)
    last = _slice(k, n - YEAR, n, "BTCUSDT")
    shift = int(last.ts[0] - k.ts[n - 2 * YEAR])
    before = _slice(k, n - 2 * YEAR, n - YEAR, "ETHUSDT", shift)
    btc, eth = tmp_path / "BTCUSDT-1h.csv", tmp_path / "ETHUSDT-1h.csv"
    write_klines_csv(btc, last)
    write_klines_csv(eth, before)

    joint = await run_backtest(spec(data_files=(str(btc), str(eth))))
    alone = {
        "BTCUSDT": await run_backtest(spec(data=str(btc), symbol="BTCUSDT")),
        "ETHUSDT": await run_backtest(spec(data=str(eth), symbol="ETHUSDT")),
    }
    bars = joint.recorder.of_type(Bar)
    assert {b.symbol for b in bars} == {"BTCUSDT", "ETHUSDT"} and len(bars) == 2 * YEAR
    assert all(a.ts_event <= b.ts_event for a, b in itertools.pairwise(bars))
    fills = joint.recorder.of_type(Fill)
    for symbol, rec in alone.items():
        ours = [(f.ts_event, f.side, f.quantity, f.price) for f in fills if f.symbol == symbol]
        theirs = [(f.ts_event, f.side, f.quantity, f.price) for f in rec.recorder.of_type(Fill)]
        assert ours == theirs and len(ours) > 20

    report = build_report(joint.recorder, cash=CASH, config={})
    singles = {s: build_report(r.recorder, cash=CASH, config={}) for s, r in alone.items()}
    assert set(report["symbols"]) == {"BTCUSDT", "ETHUSDT"}
    for symbol, single in singles.items():
        assert report["symbols"][symbol]["trades"] == single["trades"]
        assert report["symbols"][symbol]["pnl"] == pytest.approx(
            single["symbols"][symbol]["pnl"], abs=1e-6
        )
    pnl = sum(r["final_equity"] - CASH for r in singles.values())
    assert report["final_equity"] - CASH == pytest.approx(pnl, abs=1e-6)
    # one equity point per instant, not per bar
    trades = build_trades(fills, {b.symbol: b.close for b in bars})
    assert report["trades"] == sum(1 for t in trades if t.exit_reason != "open")
    assert np.isfinite(report["sharpe"])


async def test_several_files_of_one_symbol_are_refused(tmp_path: Path) -> None:
    k = load_klines(ensure_btcusdt(None, False))
    a, b = tmp_path / "BTCUSDT-a.csv", tmp_path / "BTCUSDT-b.csv"
    write_klines_csv(a, _slice(k, 0, 100, "BTCUSDT"))
    write_klines_csv(b, _slice(k, 100, 200, "BTCUSDT"))
    from levibot.backtest import BacktestError

    with pytest.raises(BacktestError, match="one symbol each"):
        await run_backtest(spec(data_files=(str(a), str(b))))
