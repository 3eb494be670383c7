"""The baseline: five tasks joined by plain ``asyncio.Queue``s on uvloop, doing the engine's
stage work and nothing else.

feed → feature → scoring → risk → fill, with the fill stage's fills and portfolio snapshots
going back to risk (as the order actor's do) and every bar going to the fill stage too (the
order actor consumes bars: marks, exits, the equity curve). Each stage calls the same code as
the engine's actor: ``FeatureState.update``; one ONNX Runtime ``Scorer.predict`` over what is
pending (chunks of 256 rows, as the scoring actor); ``RiskEngine.decide_signal`` /
``on_fill`` / ``on_snapshot``; ``PaperVenue`` and ``Portfolio`` for the paper fill. What it
leaves out is exactly the engine's machinery: mailboxes and conflation, the bus, supervision,
metrics, logging, commands, drift monitoring and persistence.

Latency at each stage's output is ``time.time_ns()`` when the stage creates its output minus
the bar's ingress time, as the engine's recorders measure ``ts_init - ts_ingress``.

    python -m bench.bare_pipeline [--rates 1000 4000] [--step-s 2]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import time
from typing import Any

import numpy as np
import uvloop

from bench.pipeline_feed import BarMaker, paced
from bench.pipeline_model import REGISTRY, Klines, ensure_model, load_real_klines
from levibot.actors.order import OrderConfig
from levibot.actors.risk import RiskConfig
from levibot.execution import MarketView, PaperVenue, Portfolio, bar_exit
from levibot.features import SCHEMA, FeatureState
from levibot.messages import Bar, Fill, OrderIntent, PortfolioSnapshot, Side, Signal
from levibot.ml.registry import ModelRegistry
from levibot.ml.scorer import Scorer
from levibot.risk import RiskEngine, RiskState
from levibot.strategies import side_for

STAGES = ("feature", "scoring", "risk", "order")
CASH = 1e12  # so the paper portfolio never runs out of cash whatever the flips


class Recorder:
    """``(ingress, latency, kind)`` per stage output, as the engine's recorders keep them."""

    def __init__(self) -> None:
        self.rows: dict[str, list[tuple[int, int, int]]] = {s: [] for s in STAGES}

    def arrays(self) -> dict[str, np.ndarray]:
        """Return the records per stage as (n, 3) int64 arrays."""
        return {s: np.array(r, dtype=np.int64).reshape(-1, 3) for s, r in self.rows.items()}


async def run_bare(
    klines: Klines,
    *,
    scorer: Scorer,
    threshold: float,
    symbols: int = 16,
    warmup_bars: int = 240,
    warmup_rate: float = 4_000.0,
    settle_s: float = 1.0,
    rates: tuple[float, ...] = (1_000.0,),
    step_s: float = 2.0,
    pause_s: float = 1.0,
) -> tuple[dict[str, np.ndarray], list[dict[str, Any]], list[tuple[int, float]]]:
    """Run the bare pipeline through the warm-up and the rate ladder.

    Return the per-stage records, the steps (rate, start/end wall ns, bars) and this
    process's CPU seconds sampled every 50 ms.
    """
    rec = Recorder()
    q_feat: asyncio.Queue[Bar] = asyncio.Queue(4096)
    q_score: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue(4096)
    q_risk: asyncio.Queue[Any] = asyncio.Queue()  # fills come back here: unbounded, no cycle
    q_fill: asyncio.Queue[Any] = asyncio.Queue(4096)
    maker = BarMaker(klines, symbols)
    steps: list[dict[str, Any]] = []
    now_ns = time.time_ns

    async def feed() -> None:
        async def unmeasured(i: int) -> None:
            bar = maker.make(i, now_ns(), 0)
            await q_feat.put(bar)
            await q_fill.put(bar)

        n = symbols * warmup_bars
        await paced(warmup_rate, n / warmup_rate, unmeasured, on_time=False)
        await asyncio.sleep(settle_s)
        for rate in rates:

            async def emit(i: int) -> None:
                now = now_ns()
                bar = maker.make(i, now, now)
                await q_feat.put(bar)
                await q_fill.put(bar)

            start, end, count = await paced(rate, step_s, emit)
            steps.append({"rate": rate, "start_ns": start, "end_ns": end, "bars": count})
            await asyncio.sleep(pause_s)

    async def feature() -> None:
        states: dict[str, FeatureState] = {}
        last: dict[str, int] = {}
        min_bars = SCHEMA.warmup
        out = rec.rows["feature"]
        while True:
            bar = await q_feat.get()
            state = states.get(bar.symbol)
            if state is None:
                state = states[bar.symbol] = FeatureState()
            if bar.ts_event <= last.get(bar.symbol, -1):
                continue
            before = state.rejected
            values = state.update(bar.open, bar.high, bar.low, bar.close, bar.volume)
            if state.rejected != before:
                continue
            last[bar.symbol] = bar.ts_event
            if state.bars < min_bars or not math.isfinite(sum(values)):
                continue
            t = now_ns()
            if bar.ts_ingress:
                out.append((bar.ts_ingress, t - bar.ts_ingress, 0))
            await q_score.put((bar.symbol, values, bar.close, bar.ts_event, bar.ts_ingress))

    async def scoring() -> None:
        atr = SCHEMA.names.index("atr_14")
        out = rec.rows["scoring"]
        while True:
            batch = [await q_score.get()]
            while len(batch) < 4096 and not q_score.empty():
                batch.append(q_score.get_nowait())
            rows = np.asarray([b[1] for b in batch], dtype=np.float32)
            p = np.concatenate(
                [scorer.predict(rows[lo : lo + 256]) for lo in range(0, len(rows), 256)]
            )
            for (symbol, values, price, ts_event, ingress), pi in zip(batch, p, strict=True):
                prob = float(pi)
                a = float(values[atr])
                sig = Signal(
                    ts_event=ts_event, ts_init=now_ns(), ts_ingress=ingress, symbol=symbol,
                    strategy="onnx", side=side_for(prob, threshold, threshold, False),
                    probability=prob, confidence=abs(prob - 0.5) * 2.0, price=price,
                    atr=a if a == a else 0.0, spread_bps=0.0, model_id=scorer.model_id,
                )  # fmt: skip
                if ingress:
                    out.append((ingress, sig.ts_init - ingress, 0))
                await q_risk.put(sig)

    async def risk() -> None:
        cfg = RiskConfig(preset="off", initial_equity=CASH, persist=False)
        engine = RiskEngine(  # built as the risk actor builds it
            cfg.limits(),
            cfg.sizing_params(),
            initial_equity=cfg.initial_equity,
            state=RiskState(policy=cfg.policy, cash=CASH, peak_equity=CASH),
            max_hold_s=cfg.max_hold_s,
            halt_on_breach=cfg.halt_on_breach,
            pending_timeout_s=cfg.pending_timeout_s,
            atr_exits=cfg.atr_exits,
        )
        out = rec.rows["risk"]
        while True:
            msg = await q_risk.get()
            now = now_ns()
            if isinstance(msg, Signal):
                decision = engine.decide_signal(msg, now)
                if decision is None:
                    continue
                if msg.ts_ingress:
                    kind = 0 if isinstance(decision, OrderIntent) else 1
                    out.append((msg.ts_ingress, decision.ts_init - msg.ts_ingress, kind))
                if isinstance(decision, OrderIntent):
                    await q_fill.put(decision)
            elif isinstance(msg, Fill):
                engine.on_fill(msg, now)
            elif isinstance(msg, PortfolioSnapshot):
                engine.on_snapshot(msg, now)
            engine.dirty = False  # the engine's actor would persist here; the bare one does not

    async def fill() -> None:
        ocfg = OrderConfig(cash=CASH, fill="close", persist=False)
        portfolio = Portfolio(
            ocfg.cash, curve_max=ocfg.equity_curve_max, seen_max=ocfg.seen_ids_max,
            qty_step=ocfg.qty_step,
        )  # fmt: skip
        venue = PaperVenue(fee_bps=ocfg.fee_bps, slippage_bps=ocfg.slippage_bps, fill=ocfg.fill)
        market: dict[str, MarketView] = {}
        out = rec.rows["order"]

        async def execute(executions: list[Any]) -> bool:
            filled = False
            for ex in executions:
                i = ex.intent
                applied = portfolio.apply(
                    i.symbol, i.side, i.quantity, ex.price, venue.fee_rate, ex.ts, intent=i
                )
                if applied is None:
                    continue
                filled = True
                f = Fill(
                    ts_event=ex.ts, ts_init=now_ns(), ts_ingress=i.ts_ingress, symbol=i.symbol,
                    fill_id=f"{i.client_order_id}:f1", client_order_id=i.client_order_id,
                    side=i.side, quantity=applied.quantity, price=applied.price,
                    fee=applied.fee, realized_pnl=applied.realized_pnl,
                    reason=i.reason if i.reason != "exit" else "signal",
                    position_after=applied.position_after,
                )  # fmt: skip
                if i.ts_ingress:
                    kind = 0 if f.reason == "signal" else 1  # 1: an exit rule's order
                    out.append((i.ts_ingress, f.ts_init - i.ts_ingress, kind))
                await q_risk.put(f)
                portfolio.record(ex.ts)
            return filled

        while True:
            msg = await q_fill.get()
            now = now_ns()
            if isinstance(msg, OrderIntent):
                if portfolio.seen(msg.client_order_id):
                    continue
                portfolio.remember(msg.client_order_id)
                view = market.get(msg.symbol) or MarketView()
                if await execute(venue.submit(msg, view)):
                    await q_risk.put(portfolio.snapshot(msg.ts_event, now, msg.ts_ingress))
                continue
            view = market.setdefault(msg.symbol, MarketView())
            view.kind, view.last_price, view.last_bar = "bar", msg.close, msg
            await execute(venue.on_market(msg))
            holding = portfolio.state.holdings.get(msg.symbol)
            if holding is not None:
                hit = bar_exit(holding, msg)
                if hit is not None:
                    exit_intent = OrderIntent(
                        ts_event=msg.ts_event, ts_init=now, ts_ingress=msg.ts_ingress,
                        symbol=msg.symbol, client_order_id=f"{holding.entry_order_id}:{hit[0]}",
                        strategy="exit", side=Side.SELL, quantity=holding.quantity,
                        price=hit[1], reduce_only=True, reason=hit[0],
                    )  # fmt: skip
                    await execute(venue.exit(exit_intent, hit[1], msg.ts_event))
            portfolio.mark(msg.symbol, msg.close)
            portfolio.record(msg.ts_event)
            await q_risk.put(portfolio.snapshot(msg.ts_event, now, msg.ts_ingress))

    async def poll() -> None:
        while True:
            cpu.append((now_ns(), time.process_time()))
            await asyncio.sleep(0.05)

    cpu: list[tuple[int, float]] = []
    workers = [asyncio.ensure_future(c()) for c in (feature, scoring, risk, fill, poll)]
    try:
        await feed()  # it pauses after the last step: the stages have drained by now
        for w in workers:
            if w.done():
                w.result()  # a stage that crashed fails the run loudly
    finally:
        for w in workers:
            w.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
    return rec.arrays(), steps, cpu


def main() -> None:
    from bench.pipeline_model import median_probability
    from bench.pipeline_stats import summarize

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[1_000.0, 4_000.0])
    parser.add_argument("--step-s", type=float, default=2.0)
    parser.add_argument("--symbols", type=int, default=16)
    args = parser.parse_args()
    klines = load_real_klines()
    model_id = ensure_model()
    threshold = median_probability(REGISTRY, model_id, klines)
    scorer = Scorer.from_registry(ModelRegistry(REGISTRY), model_id)
    records, steps, cpu = uvloop.run(
        run_bare(
            klines, scorer=scorer, threshold=threshold, symbols=args.symbols,
            rates=tuple(args.rates), step_s=args.step_s,
        )
    )  # fmt: skip
    for step in summarize(records, steps, cpu=cpu):
        print(step)


if __name__ == "__main__":
    main()
