"""PostgreSQL goes down mid-stream: the store buffers, spills, retries and catches up in order.

The test runs its own PostgreSQL server (initdb + pg_ctl in a temp dir on a free port), crashes
it with ``pg_ctl stop -m immediate`` and starts it again; the shared server is not touched.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import msgspec
import pytest

from levibot.actors.store import StoreActor, StoreConfig
from levibot.clock import LiveClock
from levibot.messages import Fill, OrderIntent, SetKillSwitch, Side, Signal, SignalSide, Tick
from levibot.storage.journal import segments
from levibot.storage.testing import TempPostgres, tick_until
from levibot.testing import RecordingContext

pytestmark = [pytest.mark.integration, pytest.mark.slow]

T0 = 1_704_067_200_000_000_000


@pytest.fixture
def pg() -> Iterator[TempPostgres]:
    server = TempPostgres()
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


def messages(start: int, n: int) -> list[Any]:
    """Return ``n`` messages numbered from ``start``: ticks, fills, intents, signals, commands."""
    out: list[Any] = []
    for i in range(start, start + n):
        ts = T0 + i * 10_000_000_000  # 10 s apart: the stream crosses day partitions
        match i % 5:
            case 0 | 1:
                out.append(
                    Tick(
                        ts_event=ts,
                        ts_init=ts,
                        symbol="BTCUSDT",
                        venue="v",
                        price=float(i),
                        size=1.0,
                        trade_id=i,
                    )
                )
            case 2:
                out.append(
                    Fill(
                        ts_event=ts,
                        ts_init=ts,
                        symbol="BTCUSDT",
                        fill_id=f"f{i}",
                        client_order_id=f"o{i}",
                        side=Side.BUY,
                        quantity=1.0,
                        price=float(i),
                        fee=0.0,
                    )
                )
            case 3:
                out.append(
                    OrderIntent(
                        ts_event=ts,
                        ts_init=ts,
                        symbol="BTCUSDT",
                        client_order_id=f"o{i}",
                        strategy="s",
                        side=Side.BUY,
                        quantity=1.0,
                        price=float(i),
                    )
                )
            case _:
                out.append(
                    Signal(
                        ts_event=ts,
                        ts_init=ts,
                        symbol="BTCUSDT",
                        strategy="s",
                        side=SignalSide.LONG,
                        probability=0.9,
                        confidence=0.8,
                        price=float(i),
                    )
                    if i % 10
                    else SetKillSwitch(ts_event=ts, ts_init=ts, command_id=f"c{i}", on=bool(i % 20))
                )
    return out


def seq_of(msg: Any) -> int:
    """Return the message's number (its price, trade id or order id carries it)."""
    if isinstance(msg, SetKillSwitch):
        return int(msg.command_id[1:])
    return int(msg.price)


async def feed(actor: StoreActor, msgs: list[Any], chunk: int = 40) -> None:
    for i in range(0, len(msgs), chunk):
        await actor.handle_batch(msgs[i : i + chunk])
        await actor.on_tick()


async def check_database(dsn: str, sent: list[Any]) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        ticks = [r[0] for r in await conn.fetch("SELECT trade_id FROM ticks ORDER BY ts_event")]
        fills = await conn.fetchval("SELECT count(*) FROM fills")
        intents = await conn.fetchval("SELECT count(*) FROM orders WHERE kind = 'intent'")
        signals = await conn.fetchval("SELECT count(*) FROM signals")
        audit = await conn.fetchval("SELECT count(*) FROM audit_log")
        bodies = [r[0] for r in await conn.fetch("SELECT body FROM events ORDER BY seq")]
    finally:
        await conn.close()
    expect_ticks = [m.trade_id for m in sent if isinstance(m, Tick)]
    assert ticks == expect_ticks  # every tick once
    assert fills == sum(isinstance(m, Fill) for m in sent)
    assert intents == sum(isinstance(m, OrderIntent) for m in sent)
    assert signals == sum(isinstance(m, Signal) for m in sent)
    assert audit == sum(isinstance(m, SetKillSwitch) for m in sent)
    # The event log holds every non-market message exactly once, in the order sent.
    decoded = [msgspec.json.decode(b) for b in bodies]
    got = [int(d["command_id"][1:]) if "command_id" in d else int(d["price"]) for d in decoded]
    assert got == [seq_of(m) for m in sent if not isinstance(m, Tick)]


@pytest.mark.anyio
async def test_store_survives_a_postgres_crash_without_loss_or_duplicates(
    pg: TempPostgres, tmp_path: Path
) -> None:
    cfg = StoreConfig(
        journal_dir=str(tmp_path / "journal"),
        postgres_dsn=pg.dsn,
        batch_size=100,
        max_buffer=300,
        flush_interval_s=0.01,
        retry_backoff_s=0.02,
        max_backoff_s=0.1,
        spill_segment_bytes=8192,
    )
    ctx = RecordingContext("store", clock=LiveClock())
    actor = StoreActor(ctx, cfg)
    await actor.on_start()
    sent: list[Any] = []
    try:
        sent += messages(0, 600)
        await feed(actor, sent)
        await tick_until(actor, lambda: actor.buffered == 0)
        assert actor.pg_up

        await anyio.to_thread.run_sync(pg.stop, "immediate")  # a crash, mid-stream
        down = messages(600, 2400)
        sent += down
        await feed(actor, down)
        assert not actor.pg_up
        assert actor.spilling
        assert actor.buffered <= cfg.max_buffer  # bounded memory; the rest is on disk
        assert ctx.metrics.value("levibot_store_spilled_total") >= 2400 - cfg.max_buffer
        assert len(segments(tmp_path / "journal-spill")) > 2

        await anyio.to_thread.run_sync(pg.start)
        after = messages(3000, 400)
        sent += after
        await feed(actor, after)
        await tick_until(actor, lambda: not actor.spilling and actor.buffered == 0)
        assert actor.pg_up
        assert ctx.metrics.value("levibot_store_errors_total") >= 1
    finally:
        await actor.on_stop()
    await check_database(pg.dsn, sent)
    # Caught up: the spill journal holds nothing any more (at most an empty open segment).
    assert all(s.stat().st_size == 0 for s in segments(tmp_path / "journal-spill"))


@pytest.mark.anyio
async def test_store_stopped_during_an_outage_spills_and_catches_up_on_next_start(
    pg: TempPostgres, tmp_path: Path
) -> None:
    cfg = StoreConfig(
        journal_dir=str(tmp_path / "journal"),
        postgres_dsn=pg.dsn,
        batch_size=50,
        max_buffer=200,
        flush_interval_s=0.01,
        retry_backoff_s=0.02,
        max_backoff_s=0.1,
    )
    first = StoreActor(RecordingContext("store", clock=LiveClock()), cfg)
    await first.on_start()
    sent = messages(0, 100)
    await feed(first, sent)
    await anyio.to_thread.run_sync(pg.stop, "immediate")
    down = messages(100, 500)  # more than max_buffer: part spilled, part in memory
    sent += down
    await feed(first, down)
    await first.on_stop()  # the server is still down: memory goes to disk, ahead of the spill

    # The server comes back before the store does; a new store starts and catches up.
    await anyio.to_thread.run_sync(pg.start)
    second = StoreActor(RecordingContext("store", clock=LiveClock()), cfg)
    await second.on_start()
    try:
        assert second.spilling
        more = messages(600, 50)
        sent += more
        await feed(second, more)
        await tick_until(second, lambda: not second.spilling and second.buffered == 0)
    finally:
        await second.on_stop()
    await check_database(pg.dsn, sent)
