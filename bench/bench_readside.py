"""What the read side rebuilt from the store costs: gateway restore, time travel, order lookup.

A replay run of real BTCUSDT 1h bars (``--bars``) through the real actors writes the event log
to a fresh PostgreSQL database (bars included, ``events_market_data``). Then, median of
``--rounds`` each, with a baseline measured in the same run:

- ``restore``: the gateway's start-up load (``sidecars.gateway.restore``) into empty views;
  baseline ``restore.fetch``: the same queries, rows fetched but not decoded or applied;
- ``replay``: ``levibot events replay`` to the end of the log (``rebuild``: every event through
  the real Portfolio and RiskActor); baseline ``replay.read``: the same events read and decoded;
- ``lookup``: ``GET /orders/{id}``'s PostgreSQL path for one order (``OrderLookup.get``);
  baseline ``lookup.select1``: a ``SELECT 1`` on the same pool.

Run: ``.venv/bin/python bench/bench_readside.py [--bars 8000 --rounds 5]``; needs the
PostgreSQL test server; writes ``bench/results/readside.json``.
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

import anyio
import asyncpg
import structlog

from levibot.commands.events import rebuild
from levibot.logging import configure
from levibot.runtime.node import Node
from levibot.settings import Settings, load_settings
from levibot.storage.events import read_events
from levibot.storage.testing import temp_database
from levibot.testing import write_real_bars
from sidecars.gateway.readmodels import ReadModels
from sidecars.gateway.restore import OrderLookup, plan, restore


def settings(csv: Path, dsn: str, tmp: Path) -> Settings:
    return load_settings(
        None,
        environ={},
        overrides={
            "node": {"name": "bench", "groups": ["run"], "replay": True,
                     "stop_when_sources_done": True, "http_port": -1},
            "nats": {"url": ""},
            "storage": {"data_dir": str(tmp)},
            "groups": {"run": ["feed", "scoring", "risk", "order", "store"]},
            "feed": {"source": "replay", "replay": {"path": str(csv), "symbol": "BTCUSDT"}},
            "scoring": {"strategies": ["ema_cross"], "postgres_dsn": ""},
            "risk": {"preset": "normal", "min_confidence": 0.0, "sizing": "atr_risk",
                     "atr_exits": True, "decide_after_portfolio": True, "persist": False},
            "order": {"fill": "next_open", "persist": False},
            "store": {"journal": False, "postgres_dsn": dsn, "events_market_data": True},
        },
    )  # fmt: skip


async def median_ms(rounds: int, fn: Callable[[], Awaitable[Any]]) -> float:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        await fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


async def main(bars: int, rounds: int) -> dict[str, Any]:
    configure("warning", "console")
    log = structlog.get_logger()
    tmp = Path(tempfile.mkdtemp())
    csv = write_real_bars(tmp / "BTCUSDT-1h.csv", bars, start=30_000)
    rows: dict[str, Any] = {}
    async with temp_database() as dsn:
        cfg = settings(csv, dsn, tmp)
        t0 = time.perf_counter()
        assert await Node(cfg).run(handle_signals=False) == 0
        rows["seed_run_s"] = round(time.perf_counter() - t0, 2)
        conn = await asyncpg.connect(dsn)
        try:
            rows["events"] = int(await conn.fetchval("SELECT count(*) FROM events"))
            orders = "SELECT count(DISTINCT client_order_id) FROM orders"
            rows["orders"] = int(await conn.fetchval(orders))
            coid = str(await conn.fetchval("SELECT client_order_id FROM fills LIMIT 1"))
            until = int(await conn.fetchval("SELECT max(ts_event) FROM events")) + 10**15

            async def do_restore() -> None:
                done = await restore(ReadModels(), dsn, log)
                assert done.events > 0

            async def fetch_only() -> None:
                c = await asyncpg.connect(dsn)
                try:
                    for types, limit in plan(ReadModels()):
                        names = [str(t.__struct_config__.tag) for t in types]
                        await c.fetch(
                            "SELECT seq, body::text AS body FROM events WHERE type = ANY($1) "
                            "ORDER BY seq DESC LIMIT $2", names, limit,
                        )  # fmt: skip
                finally:
                    await c.close()

            async def do_rebuild() -> None:
                got = await rebuild(conn, cfg, until)
                assert got.diverged == 0, got.divergences

            async def read_only() -> None:
                async for _ in read_events(conn, until_ns=until):
                    pass

            rows["restore_ms"] = await median_ms(rounds, do_restore)
            rows["restore.fetch_ms"] = await median_ms(rounds, fetch_only)
            rows["replay_ms"] = await median_ms(rounds, do_rebuild)
            rows["replay.read_ms"] = await median_ms(rounds, read_only)
        finally:
            await conn.close()
        lookup = OrderLookup(dsn)
        try:
            assert await lookup.get(coid) is not None
            pool = lookup._pool  # the same pool, for the baseline

            async def select1() -> None:
                async with pool.acquire() as c:
                    await c.fetchval("SELECT 1")

            rows["lookup_ms"] = await median_ms(rounds * 40, lambda: lookup.get(coid))
            rows["lookup.select1_ms"] = await median_ms(rounds * 40, select1)
        finally:
            await lookup.close()
    rows = {k: round(v, 3) if isinstance(v, float) else v for k, v in rows.items()}
    rows["restore_ratio"] = round(rows["restore_ms"] / rows["restore.fetch_ms"], 2)
    rows["replay_ratio"] = round(rows["replay_ms"] / rows["replay.read_ms"], 2)
    rows["replay_events_per_s"] = round(rows["events"] / rows["replay_ms"] * 1e3)
    rows["lookup_ratio"] = round(rows["lookup_ms"] / rows["lookup.select1_ms"], 2)
    return {"bars": bars, "rounds": rounds, "machine": platform.machine(), "rows": rows}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bars", type=int, default=8000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path("bench/results/readside.json"))
    args = ap.parse_args()
    text = json.dumps(anyio.run(main, args.bars, args.rounds), indent=2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    print(text)
