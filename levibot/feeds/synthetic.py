"""A seeded random walk over N symbols at a target rate: market data for benchmarks and demos.

Deterministic for a seed: the sequence of symbols, prices, sizes and sides depends on nothing
else. Under a replay clock the event times are synthetic too (``start_ns`` + i / rate), so the
whole stream is repeatable bit for bit; under the live clock ``ts_event`` is the emission time.
Symbols take turns (round robin); each tick's log return is normal with ``volatility_bps``.
"""

from __future__ import annotations

import math
import random

import anyio
import anyio.lowlevel

from levibot.feeds._base import YIELD_EVERY, Emit, Source
from levibot.feeds.config import SyntheticConfig
from levibot.messages import Quote, Side, Tick


class SyntheticSource(Source[SyntheticConfig]):
    """Emit ``rate`` ticks per second (optionally each followed by a quote) over the symbols."""

    kind = "synthetic"

    async def run(self, emit: Emit) -> None:
        """Emit ``count`` ticks (forever when 0), paced to ``rate`` per second."""
        cfg = self.config
        if not self.symbols:
            return
        rng = random.Random(cfg.seed)
        gauss, expo, uniform = rng.gauss, rng.expovariate, rng.random
        sigma = cfg.volatility_bps / 1e4
        half_spread = cfg.spread_bps / 2e4
        inv_size = 1.0 / cfg.mean_size
        prices = [cfg.start_price] * len(self.symbols)
        n_symbols = len(self.symbols)
        clock, venue, symbols = self.ctx.clock, self.venue, self.symbols
        replay = clock.is_replay
        step_ns = int(1e9 / cfg.rate) if cfg.rate > 0 else 1_000_000  # 0: 1 ms apart
        count = cfg.count or math.inf
        t0 = anyio.current_time()
        i = 0
        while i < count:
            if cfg.rate > 0:
                # Emit what is due by now in one burst, then sleep to the next one: pacing
                # per message would cost a timer per tick.
                elapsed = anyio.current_time() - t0
                # Tick i is due at i / rate (the epsilon absorbs float error at the boundary).
                due = min(count, int(elapsed * cfg.rate + 1e-6) + 1, i + 4 * YIELD_EVERY)
                if due <= i:
                    # At least 1 ms: a shorter sleep rounds to zero on uvloop and spins a core.
                    await anyio.sleep(max(i / cfg.rate - elapsed, 0.001))
                    continue
            else:
                due = min(count, i + YIELD_EVERY)
            while i < due:
                k = i % n_symbols
                price = prices[k] * math.exp(sigma * gauss(0.0, 1.0))
                prices[k] = price
                size = round(expo(inv_size), 6)
                side = Side.BUY if uniform() < 0.5 else Side.SELL
                if replay:
                    ts = cfg.start_ns + i * step_ns
                    clock.observe(ts)
                    now = clock.now_ns()
                else:
                    now = ts = clock.now_ns()
                tick = Tick(
                    ts_event=ts, ts_init=now, ts_ingress=now, symbol=symbols[k], venue=venue,
                    price=price, size=size, side=side, trade_id=i + 1,
                )  # fmt: skip
                self.count(tick)
                await emit(tick)
                if cfg.quotes:
                    quote = Quote(
                        ts_event=ts, ts_init=now, ts_ingress=now, symbol=symbols[k], venue=venue,
                        bid=price * (1 - half_spread), bid_size=size,
                        ask=price * (1 + half_spread), ask_size=size,
                    )  # fmt: skip
                    self.count(quote)
                    await emit(quote)
                i += 1
            await anyio.lowlevel.checkpoint()
