"""Warm-start time: a restarted feature actor's first live bar of each of N symbols.

    .venv/bin/python -m bench.bench_warm_start [--symbols 16] [--bars 200] [--repeats 5]

For each source, a fresh ``FeatureActor`` (live clock) takes the first live bar of every
symbol; each first bar folds in that symbol's ``--bars`` past bars before it yields features.
Sources: PostgreSQL (the ``bars`` table of a temporary database on the local server, as the
store writes it) and Binance's REST klines (the tests' local stand-in over real HTTP on
loopback, so the network is not in the figure). Baseline in the same run: the same actor cold
(``warm_start = "off"``). Medians of ``--repeats`` runs; writes
``bench/results/warm_start.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

H = 3_600_000_000_000


async def main(args: argparse.Namespace) -> dict[str, Any]:
    import asyncpg
    from aiohttp import web

    from levibot.actors.feature import FeatureActor, FeatureConfig
    from levibot.clock import LiveClock
    from levibot.data import ensure_btcusdt, load_klines
    from levibot.messages import Bar, Features
    from levibot.settings import StorageConfig
    from levibot.storage.migrate import migrate
    from levibot.storage.testing import temp_database
    from levibot.testing import RecordingContext
    from tests.fakes.binance_rest import BinanceRest, Series

    k = load_klines(ensure_btcusdt(progress=False))
    symbols = [f"SYM{i:02d}USDT" for i in range(args.symbols)]
    first = 30_000
    live = first + args.bars

    def bar(i: int, symbol: str) -> Bar:
        s = int(k.ts[i])
        return Bar(ts_event=s + H, ts_init=s + H, ts_ingress=s + H, symbol=symbol,
                   venue="binance", timeframe="1h", start=s, open=float(k.open[i]),
                   high=float(k.high[i]), low=float(k.low[i]), close=float(k.close[i]),
                   volume=float(k.volume[i]))  # fmt: skip

    async def once(storage: StorageConfig, **cfg: Any) -> tuple[float, int]:
        ctx = RecordingContext("feature", clock=LiveClock(), storage=storage)
        actor = FeatureActor(ctx, FeatureConfig(warm_bars=args.bars, **cfg))
        await actor.on_start()
        t0 = time.perf_counter()
        for s in symbols:
            await actor.handle(bar(live, s))
        took = time.perf_counter() - t0
        await actor.on_stop()
        return took, len(ctx.of_type(Features))

    fake = BinanceRest(series={s: Series(k.ts, k.open, k.high, k.low, k.close, k.volume)
                               for s in symbols})  # fmt: skip
    runner = web.AppRunner(fake.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    out: dict[str, Any] = {"symbols": args.symbols, "bars": args.bars, "repeats": args.repeats}
    async with temp_database() as dsn:
        conn = await asyncpg.connect(dsn)
        await migrate(conn)
        close_time = [datetime.fromtimestamp((int(t) + H) / 1e9, UTC) for t in k.ts]
        rows = [(s, "binance", "1h", int(k.ts[i]), close_time[i], int(k.ts[i]) + H,
                 float(k.open[i]), float(k.high[i]), float(k.low[i]), float(k.close[i]),
                 float(k.volume[i]))
                for s in symbols for i in range(first, live)]  # fmt: skip
        await conn.executemany(
            "INSERT INTO bars (symbol, venue, timeframe, start_ns, ts, ts_event, open, high, low,"
            " close, volume) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            rows,
        )
        await conn.close()
        for name, storage, cfg in (
            ("cold (baseline)", StorageConfig(), {"warm_start": "off"}),
            ("postgres", StorageConfig(postgres_dsn=dsn), {"warm_start": "postgres"}),
            ("binance REST stand-in", StorageConfig(), {"binance_rest_url": url}),
        ):
            runs = [await once(storage, **cfg) for _ in range(args.repeats)]
            out[name] = {"median_s": statistics.median(t for t, _ in runs),
                         "features_on_first_bar": runs[-1][1]}  # fmt: skip
    await runner.cleanup()
    return out


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--symbols", type=int, default=16)
    p.add_argument("--bars", type=int, default=200)
    p.add_argument("--repeats", type=int, default=5)
    result = asyncio.run(main(p.parse_args()))
    print(f"{'source':<24} {'median s':>9} {'features on the first bar':>26}")
    for key, v in result.items():
        if isinstance(v, dict):
            print(f"{key:<24} {v['median_s']:>9.4f} {v['features_on_first_bar']:>26}")
    Path("bench/results").mkdir(parents=True, exist_ok=True)
    Path("bench/results/warm_start.json").write_text(json.dumps(result, indent=2))
