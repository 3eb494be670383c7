"""Rows per second the store sustains into PostgreSQL, next to raw asyncpg COPY of the same rows.

Run: ``.venv/bin/python bench/bench_store.py [--dsn DSN] [--ticks N] [--fills N] [--repeats R]``

Creates a throwaway database on the server (default: the shared test server), migrates it and
measures, per repeat (tables truncated in between), medians reported:

* ``ticks raw COPY``: ``copy_records_to_table`` of pre-built tick rows, in store-sized batches;
* ``ticks store``: the same ticks as ``Tick`` messages through ``StoreActor.handle_batch`` and
  its flush (row building, partition checks, batch ledger, one transaction per batch);
* ``fills raw COPY`` / ``fills staged upsert``: plain COPY versus COPY into a temp table plus
  ``INSERT ... ON CONFLICT DO NOTHING`` (the cost of idempotent fills);
* ``fills store``: ``Fill`` messages through the store (the fills upsert), without and with the
  JSONB event log (``events = false`` / the default);
* ``ticks journal``: the same ticks appended to the file journal, fsync every 1000 messages.

Writes a table to stdout and ``bench/results/store.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg

from levibot.actors.store import StoreActor, StoreConfig
from levibot.clock import LiveClock
from levibot.messages import Fill, Side, Tick
from levibot.storage.journal import Journal
from levibot.storage.migrate import migrate
from levibot.storage.rows import FILLS, TICKS, TIMESTAMP_CODEC, to_rows
from levibot.storage.testing import SHARED_DSN, create_database, drop_database
from levibot.testing import RecordingContext

T0 = 1_704_067_200_000_000_000
RESULTS = Path(__file__).with_name("results") / "store.json"


def make_ticks(n: int) -> list[Tick]:
    return [
        Tick(
            ts_event=T0 + i * 1_000_000,
            ts_init=T0 + i * 1_000_000,
            symbol="BTCUSDT",
            venue="binance",
            price=40_000.0 + i % 100,
            size=0.001 * (i % 7 + 1),
            trade_id=i,
        )
        for i in range(n)
    ]


def make_fills(n: int) -> list[Fill]:
    return [
        Fill(
            ts_event=T0 + i,
            ts_init=T0 + i,
            symbol="BTCUSDT",
            fill_id=f"f{i}",
            client_order_id=f"o{i}",
            side=Side.BUY if i % 2 else Side.SELL,
            quantity=0.01,
            price=40_000.0 + i % 100,
            fee=0.04,
        )
        for i in range(n)
    ]


async def timed(fn: Callable[[], Awaitable[Any]]) -> float:
    start = time.perf_counter()
    await fn()
    return time.perf_counter() - start


async def run(dsn: str, n_ticks: int, n_fills: int, repeats: int, batch: int) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    await conn.set_type_codec(**TIMESTAMP_CODEC)  # the rows' integer timestamps, as the store
    await migrate(conn)
    ticks, fills = make_ticks(n_ticks), make_fills(n_fills)
    tick_rows = [to_rows(t)[0][1] for t in ticks]
    fill_rows = [to_rows(f)[0][1] for f in fills]
    cols = ", ".join(FILLS.columns)
    await conn.execute("CREATE TEMP TABLE stage_fills (LIKE fills INCLUDING DEFAULTS)")
    # Partitions exist before any timing: both paths write into the same ready tables.
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS ticks_p20240101 PARTITION OF ticks "
        "FOR VALUES FROM ('2024-01-01') TO ('2024-01-02')"
    )

    async def reset() -> None:
        await conn.execute("TRUNCATE ticks, fills, events, store_batches")

    async def raw_ticks() -> None:
        for i in range(0, n_ticks, batch):
            await conn.copy_records_to_table(
                "ticks", records=tick_rows[i : i + batch], columns=TICKS.columns
            )

    async def raw_fills() -> None:
        for i in range(0, n_fills, batch):
            await conn.copy_records_to_table(
                "fills", records=fill_rows[i : i + batch], columns=FILLS.columns
            )

    async def staged_fills() -> None:
        for i in range(0, n_fills, batch):
            async with conn.transaction():
                await conn.copy_records_to_table(
                    "stage_fills", records=fill_rows[i : i + batch], columns=FILLS.columns
                )
                await conn.execute(
                    f"INSERT INTO fills ({cols}) SELECT {cols} FROM stage_fills "
                    "ON CONFLICT DO NOTHING"
                )
                await conn.execute("TRUNCATE stage_fills")

    async def through_store(msgs: list[Any], events: bool = True) -> None:
        cfg = StoreConfig(
            events=events,
            journal=False,
            postgres_dsn=dsn,
            batch_size=batch,
            max_buffer=len(msgs) + 1,
            flush_interval_s=1e-9,
            migrate_on_start=False,
        )
        actor = StoreActor(RecordingContext("store", clock=LiveClock()), cfg)
        await actor.on_start()
        try:
            for i in range(0, len(msgs), 1000):
                await actor.handle_batch(msgs[i : i + 1000])
            await actor.on_tick()
            assert actor.buffered == 0 and actor.pg_up
        finally:
            await actor.on_stop()

    async def journal_ticks() -> None:
        with tempfile.TemporaryDirectory() as d, Journal(d, fsync="batch") as j:
            for i in range(0, n_ticks, 1000):
                j.append_many(ticks[i : i + 1000])
                j.flush()  # fsync per 1000 messages

    cases: dict[str, tuple[int, Callable[[], Awaitable[None]]]] = {
        "ticks journal (fsync/1k)": (n_ticks, journal_ticks),
        "ticks raw COPY": (n_ticks, raw_ticks),
        "ticks store": (n_ticks, lambda: through_store(ticks)),
        "fills raw COPY": (n_fills, raw_fills),
        "fills staged upsert": (n_fills, staged_fills),
        "fills store (no events)": (n_fills, lambda: through_store(fills, events=False)),
        "fills store (+events)": (n_fills, lambda: through_store(fills)),
    }
    samples: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(repeats):
        for name, (_, fn) in cases.items():  # interleaved: drift hits every case alike
            await reset()
            samples[name].append(await timed(fn))
    await conn.close()
    out: dict[str, Any] = {}
    for name, (rows, _) in cases.items():
        med = statistics.median(samples[name])
        out[name] = {
            "rows": rows,
            "median_s": med,
            "rows_per_s": rows / med,
            "samples_s": samples[name],
        }
    out["ticks store"]["vs_raw"] = (
        out["ticks store"]["rows_per_s"] / out["ticks raw COPY"]["rows_per_s"]
    )
    for name in ("fills staged upsert", "fills store (no events)", "fills store (+events)"):
        out[name]["vs_raw"] = out[name]["rows_per_s"] / out["fills raw COPY"]["rows_per_s"]
    return out


async def main_async(args: argparse.Namespace) -> int:
    dsn = await create_database(args.dsn)
    try:
        results = await run(dsn, args.ticks, args.fills, args.repeats, args.batch)
    finally:
        await drop_database(dsn, args.dsn)
    print(f"{'case':26} {'rows':>8} {'median s':>9} {'rows/s':>11} {'vs raw':>7}")
    for name, r in results.items():
        ratio = f"{r['vs_raw']:.2f}" if "vs_raw" in r else ("1.00" if "raw" in name else "-")
        print(
            f"{name:26} {r['rows']:>8} {r['median_s']:>9.4f} {r['rows_per_s']:>11,.0f} {ratio:>7}"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "batch_size": args.batch,
        "repeats": args.repeats,
        "results": results,
        "python": sys.version.split()[0],
        "tmp": tempfile.gettempdir(),
    }
    RESULTS.write_text(json.dumps(payload, indent=2))
    print(f"wrote {RESULTS}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default=SHARED_DSN, help="admin DSN of the server to use")
    parser.add_argument("--ticks", type=int, default=50_000)
    parser.add_argument("--fills", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
