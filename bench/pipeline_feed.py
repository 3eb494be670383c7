"""The pipeline benchmark's market data: real klines as 1s bars over N symbols, paced.

Shared by the engine's bench source (``bench.pipeline_actors``) and the bare pipeline
(``bench.bare_pipeline``) so both see the same bars at the same pace.
"""

from __future__ import annotations

import time
from typing import Any

import anyio
import anyio.lowlevel

from bench.pipeline_model import Klines
from levibot.messages import Bar

NS = 1_000_000_000
BURST = 1024  # most bars emitted between two yields to the loop (the synthetic feed's 4 × 256)
MIN_SLEEP_S = 0.001  # the event loop's timer resolution


def symbols(n: int) -> list[str]:
    """Return the benchmark's symbol names."""
    return [f"SYM{i:03d}USDT" for i in range(n)]


class BarMaker:
    """Real klines rotated per symbol, turned into 1s bars stamped with the emission time."""

    def __init__(self, klines: Klines, n_symbols: int, stride: int = 2_999) -> None:
        self.k = klines
        self.names = symbols(n_symbols)
        self.pos = [(i * stride) % len(klines) for i in range(n_symbols)]
        self.last = [0] * n_symbols

    def make(self, i: int, now: int, ingress: int) -> Bar:
        """Return symbol ``i % n``'s next bar, at event time ``now`` (strictly increasing)."""
        s = i % len(self.names)
        j = self.pos[s]
        self.pos[s] = (j + 1) % len(self.k)
        ts = max(now, self.last[s] + 1)
        self.last[s] = ts
        k = self.k
        return Bar(
            ts_event=ts, ts_init=now, ts_ingress=ingress, symbol=self.names[s], venue="SYNTH",
            timeframe="1s", start=ts - NS, open=float(k.open[j]), high=float(k.high[j]),
            low=float(k.low[j]), close=float(k.close[j]), volume=float(k.volume[j]), trades=1,
        )  # fmt: skip


async def paced(
    rate: float, seconds: float, emit: Any, *, on_time: bool = True
) -> tuple[int, int, int]:
    """Call ``emit(i)`` at ``rate`` a second for ``seconds``; return (start ns, end ns, count).

    What is due is emitted in one burst, then the task sleeps to the next due time: pacing
    each message would cost a timer per message (the synthetic feed does the same). The step
    ends on time even when back-pressure held the emitter back: the count then falls short of
    ``rate * seconds``, and the achieved rate says so. With ``on_time=False`` every message is
    emitted however long it takes (the warm-up).
    """
    total = int(rate * seconds)
    t0 = anyio.current_time()
    start = time.time_ns()
    i = 0
    while i < total:
        elapsed = anyio.current_time() - t0
        if on_time and elapsed >= seconds:
            break
        due = min(total, int(elapsed * rate + 1e-6) + 1, i + BURST)
        if due <= i:
            # Never less than a timer tick: uvloop rounds a sub-millisecond sleep down to 0,
            # and the loop would spin a core between two bars (it did at 4,000 bars/s).
            await anyio.sleep(max(i / rate - elapsed, MIN_SLEEP_S))
            continue
        while i < due:
            await emit(i)
            i += 1
        await anyio.lowlevel.checkpoint()
    return start, time.time_ns(), i
