"""Risk-check and fill latency per message, next to bare baselines measured in the same run.

Rows (µs per message: median and p99 of per-call ``perf_counter_ns`` timings, each the median
over ``--rounds`` rounds):
- ``risk.decide``: ``RiskEngine.decide_signal`` with every check enabled (and passing), the
  pure decision; alternately an entry (sized) and an exit.
- ``bare.compare``: a trivial comparison function called the same way (the timing floor).
- ``bare.intent``: a hand-written three-check decision that builds the same ``OrderIntent``.
- ``order.fill``: ``OrderActor.handle(OrderIntent)`` in paper ``close`` mode, on a recording
  context, persistence off: accept, fill, portfolio update, ``PortfolioSnapshot``.
- ``bare.fill``: awaiting a coroutine that builds one ``Fill`` and records it.
- ``risk.actor+persist``: ``RiskActor.handle(Signal)`` writing its state file (no fsync), and
  ``+fsync``: the same with fsync, the production default (few iterations).

Run: ``.venv/bin/python bench/bench_risk.py [--n 10000 --rounds 3]``; writes
``bench/results/risk.json``. A state-file write is dominated by the filesystem's rename.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import uvloop

from levibot.actors.order import OrderActor, OrderConfig
from levibot.actors.risk import RiskActor, RiskConfig
from levibot.clock import ReplayClock
from levibot.messages import Fill, OrderIntent, Side, Signal, SignalSide
from levibot.risk import RiskEngine, RiskLimits, SizingParams
from levibot.testing import RecordingContext

S = 1_000_000_000
T0 = 1_700_006_400 * S
LOOSE = RiskLimits(
    min_confidence=0.1,
    max_orders_per_window=1_000_000,
    rate_window_s=1.0,
    max_order_notional=1e12,
    min_order_notional=1.0,
    max_position_notional=1e12,
    max_exposure_pct=1e6,
    max_open_positions=1_000_000,
    max_trades_per_day=1_000_000_000,
    max_daily_loss_pct=0.5,
    max_drawdown_pct=0.5,
    cooldown_loss_s=0.1,
    cooldown_loss_global_s=0.1,
    cooldown_stop_loss_s=0.1,
    cooldown_stop_loss_global_s=0.1,
    min_time_between_trades_s=0.1,
    max_spread_bps=100.0,
)


def signal(i: int) -> Signal:
    side = SignalSide.LONG if i % 2 == 0 else SignalSide.FLAT
    ts = T0 + i * S
    return Signal(
        ts_event=ts,
        ts_init=ts,
        ts_ingress=ts,
        symbol="BTCUSDT",
        strategy="b",
        side=side,
        probability=0.7,
        confidence=0.4,
        price=100.0 + (i % 7),
        atr=2.0,
        spread_bps=1.0,
    )


def stats(ns: list[int]) -> dict[str, float]:
    xs = sorted(ns)
    return {
        "median_us": statistics.median(xs) / 1e3,
        "p99_us": xs[int(len(xs) * 0.99) - 1] / 1e3,
        "n": len(xs),
    }


def bench_decide(n: int) -> tuple[list[int], list[int], list[int]]:
    eng = RiskEngine(LOOSE, SizingParams(mode="atr_risk"), initial_equity=1e9)
    sigs = [signal(i) for i in range(n)]
    decide, bare, intent = [], [], []
    clock = time.perf_counter_ns
    for i, sg in enumerate(sigs):
        now = sg.ts_event
        t = clock()
        out = eng.decide_signal(sg, now)
        decide.append(clock() - t)
        assert isinstance(out, OrderIntent), out
        qty_after = out.quantity if out.side is Side.BUY else 0.0
        eng.on_fill(
            Fill(
                ts_event=now,
                ts_init=now,
                symbol=sg.symbol,
                fill_id=f"{i}",
                side=out.side,
                client_order_id=out.client_order_id,
                quantity=out.quantity,
                price=out.price,
                fee=0.0,
                position_after=qty_after,
            ),
            now,
        )
        t = clock()
        _trivial(sg)
        bare.append(clock() - t)
        t = clock()
        _bare_intent(sg, now)
        intent.append(clock() - t)
    return decide, bare, intent


def _trivial(sg: Signal) -> bool:
    return sg.confidence >= 0.2


def _bare_intent(sg: Signal, now: int) -> OrderIntent | None:
    if sg.confidence < 0.1 or sg.price <= 0 or sg.spread_bps > 100:
        return None
    return OrderIntent(
        ts_event=sg.ts_event,
        ts_init=now,
        ts_ingress=sg.ts_ingress,
        symbol=sg.symbol,
        client_order_id=f"{sg.strategy}-{sg.symbol}-{sg.ts_event}",
        strategy=sg.strategy,
        side=Side.BUY,
        quantity=1_000.0 / sg.price,
        price=sg.price,
        stop_loss=sg.price - 3.0,
        take_profit=sg.price + 3.0,
    )


async def timed(n: int, fn: Callable[[int], Awaitable[Any]]) -> list[int]:
    out = []
    clock = time.perf_counter_ns
    for i in range(n):
        t = clock()
        await fn(i)
        out.append(clock() - t)
    return out


async def bench_fill(n: int, tmp: Path) -> tuple[list[int], list[int]]:
    ctx = RecordingContext("order", clock=ReplayClock())
    actor = OrderActor(ctx, OrderConfig(fill="close", persist=False, state_dir=str(tmp), cash=1e12))
    await actor.on_start()
    intents = [
        OrderIntent(
            ts_event=T0 + i,
            ts_init=0,
            symbol="BTCUSDT",
            client_order_id=f"c{i}",
            strategy="b",
            side=Side.BUY if i % 2 == 0 else Side.SELL,
            quantity=1.0,
            price=100.0,
        )
        for i in range(n)
    ]

    async def fill(i: int) -> None:
        await actor.handle(intents[i])
        if i % 1_000 == 0:
            ctx.published.clear()

    sink: list[Fill] = []

    async def bare(i: int) -> None:
        it = intents[i]
        sink.append(
            Fill(
                ts_event=it.ts_event,
                ts_init=0,
                symbol=it.symbol,
                fill_id=f"{i}:f1",
                client_order_id=it.client_order_id,
                side=it.side,
                quantity=it.quantity,
                price=it.price * 1.0002,
                fee=it.price * 1e-3,
            )
        )
        if i % 1_000 == 0:
            sink.clear()

    return await timed(n, fill), await timed(n, bare)


async def bench_actor(n: int, tmp: Path, fsync: bool) -> list[int]:
    cfg = RiskConfig(preset="off", state_dir=str(tmp / f"r{fsync}"), fsync=fsync)
    ctx = RecordingContext("risk", clock=ReplayClock())
    actor = RiskActor(ctx, cfg)
    await actor.on_start()
    sigs = [signal(i * 2) for i in range(n)]  # LONG signals: entries

    async def one(i: int) -> None:
        ctx.clock.observe(sigs[i].ts_event)
        actor.engine.state.pending.clear()  # each signal a fresh entry
        await actor.handle(sigs[i])

    return await timed(n, one)


def merge(rounds: list[dict[str, float]]) -> dict[str, float]:
    """Return the median over rounds of each round's median and p99."""
    return {
        "median_us": statistics.median(r["median_us"] for r in rounds),
        "p99_us": statistics.median(r["p99_us"] for r in rounds),
        "n": sum(r["n"] for r in rounds),
        "rounds": len(rounds),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000, help="messages per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--n-persist", type=int, default=200)
    args = ap.parse_args()
    per: dict[str, list[dict[str, float]]] = {}

    def add(name: str, ns: list[int]) -> None:
        per.setdefault(name, []).append(stats(ns))

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for rnd in range(args.rounds):
            decide, bare, intent = bench_decide(args.n)
            add("risk.decide", decide)
            add("bare.compare", bare)
            add("bare.intent", intent)
            fills, bare_fills = uvloop.run(bench_fill(args.n, tmp / f"o{rnd}"))
            add("order.fill", fills)
            add("bare.fill", bare_fills)
        add("risk.actor+persist", uvloop.run(bench_actor(args.n_persist, tmp, False)))
        add("risk.actor+fsync", uvloop.run(bench_actor(args.n_persist, tmp, True)))
    rows = {name: merge(rs) for name, rs in per.items()}
    ratios = {
        "risk.decide/bare.intent": rows["risk.decide"]["median_us"]
        / rows["bare.intent"]["median_us"],
        "order.fill/bare.fill": rows["order.fill"]["median_us"] / rows["bare.fill"]["median_us"],
    }
    print(f"{'row':<22}{'median µs':>12}{'p99 µs':>12}{'n':>8}")
    for name, r in rows.items():
        print(f"{name:<22}{r['median_us']:>12.2f}{r['p99_us']:>12.2f}{r['n']:>8}")
    for name, v in ratios.items():
        print(f"{name:<28} x{v:.2f}")
    out = Path(__file__).parent / "results" / "risk.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "rows": rows,
                "ratios": ratios,
                "python": platform.python_version(),
                "machine": platform.machine(),
            },
            indent=2,
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
