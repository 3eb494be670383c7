"""The store actor end to end: journal + PostgreSQL + Redis, batching, poison messages."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from levibot.actors.store import StoreActor, StoreConfig
from levibot.clock import LiveClock
from levibot.messages import Features, Fill, Side, Signal, SignalSide, StartStrategy, Tick
from levibot.storage.feature_store import FeatureStore
from levibot.storage.journal import Journal
from levibot.storage.postgres import DAY_NS, partition_bounds
from levibot.storage.testing import database, tick_until, unique_name
from levibot.testenv import REDIS_URL
from levibot.testing import RecordingContext

pytestmark = pytest.mark.integration

T0 = 1_704_067_200_000_000_000


@pytest.fixture(scope="module")
def dsn() -> Iterator[str]:
    with database() as url:
        yield url


async def fetchval(dsn: str, sql: str) -> Any:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


def mixed(n: int, tag: str) -> list[Any]:
    out: list[Any] = []
    for i in range(n):
        ts = T0 + i * 1_000_000
        out.append(Tick(ts_event=ts, ts_init=ts, symbol=tag, venue="v", price=1.0, size=1.0))
        out.append(
            Features(
                ts_event=ts,
                ts_init=ts,
                symbol=f"{tag}{i % 3}",
                schema_hash="h",
                values=(float(i),),
                price=1.0,
            )
        )
        if i % 4 == 0:
            out.append(
                Fill(
                    ts_event=ts,
                    ts_init=ts,
                    symbol=tag,
                    fill_id=f"{tag}-{i}",
                    client_order_id=f"{tag}-o{i}",
                    side=Side.SELL,
                    quantity=1.0,
                    price=2.0,
                    fee=0.0,
                )
            )
        if i % 5 == 0:
            out.append(
                Signal(
                    ts_event=ts,
                    ts_init=ts,
                    symbol=tag,
                    strategy="s",
                    side=SignalSide.FLAT,
                    probability=0.5,
                    confidence=0.0,
                    price=1.0,
                )
            )
    out.append(StartStrategy(ts_event=T0, ts_init=T0, command_id=f"{tag}-start", strategy="s"))
    return out


@pytest.mark.anyio
async def test_store_writes_batches_by_size_and_time_to_every_backend(
    dsn: str, tmp_path: Path
) -> None:
    prefix = unique_name("lbstore")
    cfg = StoreConfig(
        journal_dir=str(tmp_path / "j"),
        postgres_dsn=dsn,
        redis_url=REDIS_URL,
        redis_prefix=prefix,
        batch_size=200,
        flush_interval_s=0.01,
    )
    ctx = RecordingContext("store", clock=LiveClock())
    actor = StoreActor(ctx, cfg)
    await actor.on_start()
    msgs = mixed(1000, "SIZEUSDT")
    try:
        for i in range(0, len(msgs), 100):
            await actor.handle_batch(msgs[i : i + 100])
        # Size-triggered batches went out while messages arrived; the rest waits for time.
        assert ctx.metrics.value("levibot_store_batches_total") >= 5
        assert 0 < actor.buffered < 200
        await tick_until(actor, lambda: actor.buffered == 0)
        ticks = await fetchval(dsn, "SELECT count(*) FROM ticks WHERE symbol = 'SIZEUSDT'")
        fills = await fetchval(dsn, "SELECT count(*) FROM fills WHERE symbol = 'SIZEUSDT'")
        assert (ticks, fills) == (1000, 250)
        # Features are not stored in PostgreSQL by default, but the latest per symbol is in Redis.
        assert await fetchval(dsn, "SELECT count(*) FROM features") == 0
        client = aioredis.from_url(REDIS_URL)
        try:
            docs = await FeatureStore(client, prefix).get_many(["SIZEUSDT0", "SIZEUSDT1"])
            assert docs["SIZEUSDT0"]["features"] == {"f0": 999.0}
            assert docs["SIZEUSDT1"]["features"] == {"f0": 997.0}
            keys = [k async for k in client.scan_iter(f"{prefix}:*")]
            await client.delete(*keys)
        finally:
            await client.aclose()
    finally:
        await actor.on_stop()
    assert (
        await fetchval(dsn, "SELECT action FROM audit_log WHERE command_id = 'SIZEUSDT-start'")
        == "StartStrategy"
    )
    # Today's tick partition and the next two were created ahead of any tick for them.
    names = [partition_bounds(time.time_ns() + d * DAY_NS, "day")[0] for d in range(3)]
    found = await fetchval(
        dsn,
        "SELECT array_agg(c.relname::text) FROM pg_inherits i "
        "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'ticks'::regclass",
    )
    assert set(names) <= set(found)
    assert list(Journal.read(tmp_path / "j")) == msgs


@pytest.mark.anyio
async def test_store_rejects_a_poison_message_and_keeps_the_rest_of_its_batch(
    dsn: str, tmp_path: Path
) -> None:
    good = [
        Fill(
            ts_event=T0,
            ts_init=T0,
            symbol="POISONUSDT",
            fill_id=f"p{i}",
            client_order_id="o",
            side=Side.BUY,
            quantity=1.0,
            price=1.0,
            fee=0.0,
        )
        for i in range(20)
    ]
    # PostgreSQL text cannot hold NUL: the server refuses this row, whatever we retry.
    bad = Fill(
        ts_event=T0,
        ts_init=T0,
        symbol="POISONUSDT",
        fill_id="bad\x00id",
        client_order_id="o",
        side=Side.BUY,
        quantity=1.0,
        price=1.0,
        fee=0.0,
    )
    ctx = RecordingContext("store", clock=LiveClock())
    actor = StoreActor(ctx, StoreConfig(journal_dir=str(tmp_path / "j"), postgres_dsn=dsn))
    await actor.on_start()
    await actor.handle_batch([*good[:10], bad, *good[10:]])
    await actor.on_stop()
    assert await fetchval(dsn, "SELECT count(*) FROM fills WHERE symbol = 'POISONUSDT'") == 20
    assert ctx.metrics.value("levibot_store_rejected_total") == 1
    assert actor.pg_up
