"""Feed costs per message, next to bare baselines measured in the same run.

    .venv/bin/python bench/bench_feed.py [--n 200000] [--repeats 5]

Rows (ns per message, median over ``--repeats`` runs):

- ``bars.add``: ``BarBuilder.add`` on synthetic trades (1 ms apart, 1s bars: one bar per 1000);
- ``bare.ohlc``: the same OHLCV update written inline in a loop, the floor for ``bars.add``;
- ``binance.decode``: ``BinanceDecoder.decode`` of a real-format aggTrade frame into a ``Tick``
  (typed msgspec decode, sequence check, message construction);
- ``bare.json``: ``msgspec.json.decode`` of the same frame into a dict, no checks, no message;
- ``synthetic.actor``: ``FeedActor`` running the synthetic source at full speed into a publish
  that only counts (random walk + Tick + ownership check + await per message);
- ``replay.actor``: ``FeedActor`` replaying the real BTCUSDT 1h klines (55,765 Bars, file load
  included).

Prints a table and writes ``bench/results/feed.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio

from levibot.actors.feed import FeedActor, FeedConfig
from levibot.clock import LiveClock, ReplayClock
from levibot.config import convert
from levibot.feeds._binance_decode import BinanceDecoder
from levibot.marketdata.bars import BarBuilder
from levibot.testing import RecordingContext

T0 = 1_700_000_000 * 1_000_000_000


def bars_add(n: int) -> float:
    b = BarBuilder("BTCUSDT", "X", "1s")
    add = b.add
    prices = [100.0 + (i % 17) * 0.01 for i in range(n)]
    t0 = time.perf_counter_ns()
    for i, p in enumerate(prices):
        add(T0 + i * 1_000_000, p, 0.5, 0, 0)
    return (time.perf_counter_ns() - t0) / n


def bare_ohlc(n: int) -> float:
    """The same update inline (no call, no validation): the floor for ``bars.add``."""
    prices = [100.0 + (i % 17) * 0.01 for i in range(n)]
    interval = 1_000_000_000
    end = 0
    o = h = lo = c = v = 0.0
    trades = bars = 0
    t0 = time.perf_counter_ns()
    for i, p in enumerate(prices):
        ts = T0 + i * 1_000_000
        if ts < end:
            if p > h:
                h = p
            elif p < lo:
                lo = p
            c = p
            v += 0.5
            trades += 1
        else:
            bars += 1
            end = ts - ts % interval + interval
            o = h = lo = c = p
            v = 0.5
            trades = 1
    del o, c
    return (time.perf_counter_ns() - t0) / n


def frames(n: int) -> list[bytes]:
    return [
        (
            '{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","E":1700000000125,'
            f'"s":"BTCUSDT","a":{5000 + i},"p":"37000.20","q":"0.100","f":102,"l":103,'
            '"T":1700000000120,"m":false,"M":true}}'
        ).encode()
        for i in range(n)
    ]


def binance_decode(n: int) -> float:
    data = frames(n)
    decode = BinanceDecoder(RecordingContext("feed", clock=LiveClock()), "BINANCE").decode
    t0 = time.perf_counter_ns()
    for f in data:
        decode(f, 1)
    return (time.perf_counter_ns() - t0) / n


def bare_json(n: int) -> float:
    import msgspec

    data = frames(n)
    decode = msgspec.json.decode
    t0 = time.perf_counter_ns()
    for f in data:
        decode(f)
    return (time.perf_counter_ns() - t0) / n


async def _actor(raw: dict[str, Any]) -> tuple[int, int]:
    ctx = RecordingContext("feed", clock=ReplayClock())
    count = [0]

    async def publish(msg: Any) -> None:
        count[0] += 1

    ctx.publish = publish
    actor = FeedActor(ctx, convert(raw, FeedConfig))
    t0 = time.perf_counter_ns()
    await actor.on_start()
    await actor.run()
    return time.perf_counter_ns() - t0, count[0]


def actor_run(raw: dict[str, Any]) -> float:
    elapsed, n = anyio.run(_actor, raw, backend_options={"use_uvloop": True})
    return elapsed / n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    n = args.n
    synthetic = {"source": "synthetic", "symbols": ["A", "B", "C", "D"],
                 "synthetic": {"rate": 0, "count": n}}  # fmt: skip
    cases: dict[str, Callable[[], float]] = {
        "bars.add": lambda: bars_add(n),
        "bare.ohlc": lambda: bare_ohlc(n),
        "binance.decode": lambda: binance_decode(n),
        "bare.json": lambda: bare_json(n),
        "synthetic.actor": lambda: actor_run(synthetic),
        "replay.actor": lambda: actor_run({"source": "replay"}),
    }
    results: dict[str, float] = {}
    for name, fn in cases.items():
        fn()  # warm-up
        results[name] = statistics.median(fn() for _ in range(args.repeats))
    print(f"{'case':<18}{'ns/msg':>10}{'msgs/s':>14}")
    for name, ns in results.items():
        print(f"{name:<18}{ns:>10.0f}{1e9 / ns:>14,.0f}")
    ratios = {
        "bars.add/bare.ohlc": results["bars.add"] / results["bare.ohlc"],
        "binance.decode/bare.json": results["binance.decode"] / results["bare.json"],
    }
    for name, r in ratios.items():
        print(f"{name:<28}{r:>6.2f}×")
    out = Path(__file__).parent / "results" / "feed.json"
    out.parent.mkdir(exist_ok=True)
    doc = {"ns_per_msg": results, "ratios": ratios, "n": n, "repeats": args.repeats,
           "python": sys.version.split()[0], "machine": platform.machine()}  # fmt: skip
    out.write_text(json.dumps(doc, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
