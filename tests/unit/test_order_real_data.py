"""Risk and order actors over real BTCUSDT 1h bars: invariants at every step, and determinism.

A plain EMA(12/26) crossover (computed here, independent of the feature module) drives real
``RiskActor`` and ``OrderActor`` instances wired by hand in event order, with ATR exits.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, cast

import msgspec
import pytest

from levibot.actors.order import OrderActor, OrderConfig
from levibot.actors.risk import RiskActor, RiskConfig
from levibot.clock import ReplayClock
from levibot.data import Klines, ensure_btcusdt, load_klines
from levibot.messages import Bar, Fill, Message, OrderIntent, PortfolioSnapshot, Signal, SignalSide
from levibot.testing import RecordingContext

BARS = 4_000
H = 3_600 * 1_000_000_000


def ema_cross_signals(closes: list[float], highs: list[float], lows: list[float]) -> list[Any]:
    """Return per bar (side, atr) once both EMAs exist, None before."""
    out: list[Any] = []
    fast = slow = atr = 0.0
    prev_close = closes[0]
    for i, c in enumerate(closes):
        tr = max(highs[i] - lows[i], abs(highs[i] - prev_close), abs(lows[i] - prev_close))
        prev_close = c
        if i == 0:
            fast = slow = c
            atr = tr
        else:
            fast += (c - fast) * 2 / 13
            slow += (c - slow) * 2 / 27
            atr += (tr - atr) / 14
        out.append(None if i < 30 else (SignalSide.LONG if fast > slow else SignalSide.FLAT, atr))
    return out


@functools.cache
def klines() -> Klines:
    return load_klines(ensure_btcusdt(progress=False))


async def pump(
    risk: RiskActor,
    order: OrderActor,
    rctx: RecordingContext,
    octx: RecordingContext,
    done_r: int,
    done_o: int,
    problems: list[str],
    i: int,
) -> tuple[int, int]:
    """Deliver what each actor published to the other, in order, until both are quiet."""
    while done_r < len(rctx.published) or done_o < len(octx.published):
        for m in rctx.published[done_r:]:
            done_r += 1
            if isinstance(m, OrderIntent):
                await order.handle(m)
        for m in octx.published[done_o:]:
            done_o += 1
            if type(m) in RiskActor.consumes:
                await risk.handle(cast(Any, m))
            if isinstance(m, PortfolioSnapshot):
                marked = m.cash + sum(p.quantity * p.last_price for p in m.positions)
                pnl = order.portfolio.state.initial_cash + m.realized_pnl + m.unrealized_pnl
                if m.cash < -1e-6 or abs(m.equity - marked) > 1e-6 * m.equity:
                    problems.append(f"bar {i}: cash {m.cash} equity {m.equity} != {marked}")
                if abs(m.equity - pnl) > 1e-6 * m.equity:
                    problems.append(f"bar {i}: equity {m.equity} != initial + PnL {pnl}")
    return done_r, done_o


async def run(tmp: Path) -> tuple[list[Message], list[Message], list[str]]:
    k = klines()
    n = min(BARS, len(k.ts))
    closes = [float(x) for x in k.close[:n]]
    sigs = ema_cross_signals(closes, [float(x) for x in k.high[:n]], [float(x) for x in k.low[:n]])
    clock = ReplayClock()
    rctx, octx = RecordingContext("risk", clock=clock), RecordingContext("order", clock=clock)
    risk = RiskActor(
        rctx,
        RiskConfig(
            preset="normal",
            state_dir=str(tmp),
            persist=False,
            sizing="atr_risk",
            risk_fraction=0.01,
        ),
    )
    order = OrderActor(octx, OrderConfig(state_dir=str(tmp), persist=False, fill="next_open"))
    await risk.on_start()
    await order.on_start()
    problems: list[str] = []
    done_r = done_o = 0
    for i in range(n):
        start = int(k.ts[i])
        bar = Bar(
            ts_event=start + H,
            ts_init=start + H,
            symbol="BTCUSDT",
            venue="binance",
            timeframe="1h",
            start=start,
            open=float(k.open[i]),
            high=float(k.high[i]),
            low=float(k.low[i]),
            close=closes[i],
            volume=float(k.volume[i]),
        )
        clock.observe(bar.ts_event)
        await order.handle(bar)
        # what the bar did in the order actor (exits, fills) reaches risk before the signal
        # computed from it: one hop against the three of feature → scoring → risk
        done_r, done_o = await pump(risk, order, rctx, octx, done_r, done_o, problems, i)
        if sigs[i] is not None:
            side, atr = sigs[i]
            await risk.handle(
                Signal(
                    ts_event=bar.ts_event,
                    ts_init=bar.ts_event,
                    symbol="BTCUSDT",
                    strategy="ema",
                    side=side,
                    probability=0.8,
                    confidence=0.6,
                    price=bar.close,
                    atr=atr,
                )
            )
        done_r, done_o = await pump(risk, order, rctx, octx, done_r, done_o, problems, i)
        if abs(risk.engine.equity - order.portfolio.equity) > 1e-6 * order.portfolio.equity:
            problems.append(
                f"bar {i}: risk sees {risk.engine.equity}, portfolio is {order.portfolio.equity}"
            )
    return rctx.published, octx.published, problems


@pytest.mark.anyio
async def test_real_bars_keep_the_invariants_and_replay_identically(tmp_path: Path) -> None:
    r1, o1, problems = await run(tmp_path / "a")
    assert problems == []
    fills = [m for m in o1 if isinstance(m, Fill)]
    reasons = {f.reason for f in fills}
    assert len(fills) > 20 and {"signal", "stop_loss", "take_profit"} <= reasons, reasons
    assert all(f.position_after >= 0 for f in fills)
    r2, o2, _ = await run(tmp_path / "b")
    enc = msgspec.msgpack.encode
    assert [enc(m) for m in r1] == [enc(m) for m in r2]
    assert [enc(m) for m in o1] == [enc(m) for m in o2]
