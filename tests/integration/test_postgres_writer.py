"""The COPY writer: every table, natural-key idempotency, the batch ledger, native partitions."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import asyncpg
import msgspec
import pytest

from levibot.messages import (
    Alert,
    AlertLevel,
    Bar,
    Features,
    Fill,
    OrderAccepted,
    OrderClosed,
    OrderDenied,
    OrderIntent,
    PortfolioSnapshot,
    Position,
    SetKillSwitch,
    SetRiskPolicy,
    Side,
    Signal,
    SignalSide,
    Tick,
)
from levibot.storage.audit import AuditLog
from levibot.storage.migrate import migrate
from levibot.storage.postgres import DAY_NS, Batch, PgWriter, partition_bounds
from levibot.storage.testing import database

pytestmark = pytest.mark.integration

T0 = 1_704_067_200_000_000_000  # 2024-01-01T00:00:00Z


@pytest.fixture(scope="module")
def dsn() -> Iterator[str]:
    async def setup(url: str) -> None:
        conn = await asyncpg.connect(url)
        try:
            await migrate(conn)
        finally:
            await conn.close()

    with database() as url:
        asyncio.run(setup(url))
        yield url


async def count(dsn: str, sql: str, *args: Any) -> Any:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()


def fill(i: int, symbol: str = "BTCUSDT") -> Fill:
    return Fill(
        ts_event=T0 + i,
        ts_init=T0 + i + 1,
        symbol=symbol,
        fill_id=f"{symbol}-f{i}",
        client_order_id=f"{symbol}-o{i}",
        side=Side.BUY,
        quantity=0.5,
        price=100.0 + i,
        fee=0.05,
    )


def one_of_each(tag: str) -> list[Any]:
    return [
        Tick(ts_event=T0, ts_init=T0, symbol="BTCUSDT", venue="binance", price=1.0, size=2.0),
        Bar(
            ts_event=T0 + 60,
            ts_init=T0,
            symbol="BTCUSDT",
            venue="binance",
            timeframe="1m",
            start=T0,
            open=1,
            high=2,
            low=0.5,
            close=1.5,
            volume=10,
        ),
        Features(
            ts_event=T0, ts_init=T0, symbol="BTCUSDT", schema_hash="h", values=(1.0, 2.0), price=1.5
        ),
        Signal(
            ts_event=T0,
            ts_init=T0,
            symbol="BTCUSDT",
            strategy="ema",
            side=SignalSide.LONG,
            probability=0.7,
            confidence=0.4,
            price=1.5,
        ),
        OrderIntent(
            ts_event=T0,
            ts_init=T0,
            symbol="BTCUSDT",
            client_order_id=f"{tag}-o",
            strategy="ema",
            side=Side.BUY,
            quantity=1.0,
            price=1.5,
            stop_loss=1.0,
        ),
        OrderDenied(
            ts_event=T0,
            ts_init=T0,
            symbol="BTCUSDT",
            client_order_id=f"{tag}-d",
            strategy="ema",
            code="KILL_SWITCH",
            reason="kill switch on",
        ),
        OrderAccepted(
            ts_event=T0,
            ts_init=T0,
            symbol="BTCUSDT",
            client_order_id=f"{tag}-o",
            side=Side.BUY,
            quantity=1.0,
        ),
        Fill(
            ts_event=T0,
            ts_init=T0,
            symbol="BTCUSDT",
            fill_id=f"{tag}-f",
            client_order_id=f"{tag}-o",
            side=Side.BUY,
            quantity=1.0,
            price=1.5,
            fee=0.01,
        ),
        OrderClosed(
            ts_event=T0,
            ts_init=T0,
            symbol="BTCUSDT",
            client_order_id=f"{tag}-o",
            reason="take_profit",
            exit_price=2.0,
            realized_pnl=0.49,
        ),
        PortfolioSnapshot(
            ts_event=T0,
            ts_init=T0,
            cash=1.0,
            equity=2.0,
            realized_pnl=0.49,
            unrealized_pnl=0.0,
            fees=0.01,
            positions=(
                Position(
                    symbol="BTCUSDT",
                    quantity=1.0,
                    avg_price=1.5,
                    last_price=2.0,
                    unrealized_pnl=0.5,
                ),
            ),
        ),
        Alert(
            ts_event=T0,
            ts_init=T0,
            alert_id=f"{tag}-a",
            level=AlertLevel.CRITICAL,
            source="risk",
            text="halted",
        ),
        SetKillSwitch(ts_event=T0, ts_init=T0, command_id=f"{tag}-c1", on=True, issued_by="bob"),
        SetRiskPolicy(ts_event=T0, ts_init=T0, command_id=f"{tag}-c2", policy="aggressive"),
    ]


@pytest.mark.anyio
async def test_one_batch_lands_every_message_in_its_table(dsn: str) -> None:
    writer = PgWriter(dsn, store_features=True)
    try:
        rows = await writer.write(Batch(one_of_each("all")))
    finally:
        await writer.close()
    conn = await asyncpg.connect(dsn)
    try:
        orders = await conn.fetch(
            "SELECT kind, code, price FROM orders WHERE client_order_id LIKE 'all-%' ORDER BY kind"
        )
        assert [(r["kind"], r["code"]) for r in orders] == [
            ("accepted", ""),
            ("closed", ""),
            ("denied", "KILL_SWITCH"),
            ("intent", ""),
        ]
        f = await conn.fetchrow("SELECT * FROM fills WHERE fill_id = 'all-f'")
        assert (f["price"], f["ts_event"], f["side"]) == (1.5, T0, "buy")
        audit = await conn.fetch(
            "SELECT actor, action, args FROM audit_log WHERE command_id LIKE 'all-%' ORDER BY id"
        )
        assert [(a["actor"], a["action"], msgspec.json.decode(a["args"])) for a in audit] == [
            ("bob", "SetKillSwitch", {"on": True}),
            ("system", "SetRiskPolicy", {"policy": "aggressive"}),
        ]
        eq = await conn.fetchrow("SELECT equity, positions FROM equity")
        assert (
            eq["equity"] == 2.0 and msgspec.json.decode(eq["positions"])[0]["symbol"] == "BTCUSDT"
        )
        assert await conn.fetchval("SELECT vector FROM features") == [1.0, 2.0]
        types = [r[0] for r in await conn.fetch("SELECT type FROM events ORDER BY seq")]
        # Everything but market data (Tick, Bar, Features) is in the event log, in order.
        assert types == [
            "levibot.Signal",
            "levibot.OrderIntent",
            "levibot.OrderDenied",
            "levibot.OrderAccepted",
            "levibot.Fill",
            "levibot.OrderClosed",
            "levibot.PortfolioSnapshot",
            "levibot.Alert",
            "levibot.SetKillSwitch",
            "levibot.SetRiskPolicy",
        ]
        body = msgspec.json.decode(
            await conn.fetchval("SELECT body FROM events WHERE type = 'levibot.Fill'")
        )
        assert body["fill_id"] == "all-f" and body["type"] == "levibot.Fill"
        assert rows == 1 + 1 + 1 + 1 + 4 + 1 + 1 + 2 + 10
    finally:
        await conn.close()


@pytest.mark.anyio
async def test_fills_and_orders_replayed_in_a_new_batch_are_not_duplicated(dsn: str) -> None:
    msgs = [fill(i, "DUPUSDT") for i in range(300)]
    writer = PgWriter(dsn)
    try:
        await writer.write(Batch(msgs))
        await writer.write(Batch([*msgs[100:], fill(300, "DUPUSDT")]))
    finally:
        await writer.close()
    assert await count(dsn, "SELECT count(*) FROM fills WHERE symbol = 'DUPUSDT'") == 301
    # The event log records what the store received: both deliveries.
    assert await count(dsn, "SELECT count(*) FROM events WHERE symbol = 'DUPUSDT'") == 501


@pytest.mark.anyio
async def test_a_retried_batch_that_had_committed_is_not_written_again(dsn: str) -> None:
    batch = Batch(
        [
            Tick(ts_event=T0 + i, ts_init=0, symbol="RETRYUSDT", venue="v", price=1.0, size=1.0)
            for i in range(1000)
        ]
    )
    writer = PgWriter(dsn)
    try:
        assert await writer.write(batch) == 1000
        # The commit reached the server but the client lost the answer: it retries.
        writer.drop_connection()
        assert await writer.write(batch) == 0
    finally:
        await writer.close()
    assert await count(dsn, "SELECT count(*) FROM ticks WHERE symbol = 'RETRYUSDT'") == 1000


@pytest.mark.anyio
async def test_ticks_go_to_native_daily_partitions_created_on_demand(dsn: str) -> None:
    days = [T0 + d * DAY_NS + 3_600 * 10**9 for d in (10, 11, 12)]
    ticks = [
        Tick(ts_event=ts + i, ts_init=0, symbol="PARTUSDT", venue="v", price=float(i), size=1.0)
        for ts in days
        for i in range(50)
    ]
    writer = PgWriter(dsn)
    try:
        assert writer.ticks_mode == ""
        await writer.write(Batch(ticks))
        assert writer.ticks_mode == "native"
        created = await writer.ensure_partitions([T0 + 40 * DAY_NS])
        assert created == ["ticks_p20240210"]
        assert await writer.ensure_partitions([T0 + 40 * DAY_NS]) == []
    finally:
        await writer.close()
    conn = await asyncpg.connect(dsn)
    try:
        parts = await conn.fetch(
            "SELECT c.relname, count(t.*) AS n FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid "
            "LEFT JOIN ticks t ON t.tableoid = c.oid AND t.symbol = 'PARTUSDT' "
            "WHERE i.inhparent = 'ticks'::regclass GROUP BY c.relname"
        )
        found = {r["relname"]: r["n"] for r in parts}
        assert {
            k: found[k] for k in ("ticks_p20240111", "ticks_p20240112", "ticks_p20240113")
        } == dict.fromkeys(("ticks_p20240111", "ticks_p20240112", "ticks_p20240113"), 50)
        assert found["ticks_p20240210"] == 0
        bars = await conn.fetch(
            "SELECT open, close, trades FROM ticks_1m WHERE symbol = 'PARTUSDT' ORDER BY bucket"
        )
        assert [(b["open"], b["close"], b["trades"]) for b in bars] == [(0.0, 49.0, 50)] * 3
    finally:
        await conn.close()


def test_partition_bounds_by_day_and_month() -> None:
    ts = T0 + 45 * DAY_NS + 5  # 2024-02-15
    name, start, end = partition_bounds(ts, "day")
    assert (name, start.isoformat(), end.isoformat()) == (
        "ticks_p20240215",
        "2024-02-15T00:00:00+00:00",
        "2024-02-16T00:00:00+00:00",
    )
    name, start, end = partition_bounds(ts, "month")
    assert (name, start.isoformat(), end.isoformat()) == (
        "ticks_p202402",
        "2024-02-01T00:00:00+00:00",
        "2024-03-01T00:00:00+00:00",
    )


@pytest.mark.anyio
async def test_audit_log_records_reads_and_ignores_a_repeated_command_id(dsn: str) -> None:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        log = AuditLog(pool)
        assert await log.record(
            "gateway:alice", "api_key.create", {"scopes": ["read"]}, command_id="auditcmd-1"
        )
        assert not await log.record("gateway:alice", "api_key.create", {}, command_id="auditcmd-1")
        assert await log.record("gateway:bob", "login")
        recent = await log.recent(10, actor="gateway:alice")
        assert [(r.action, r.args) for r in recent] == [("api_key.create", {"scopes": ["read"]})]
        assert (await log.recent(1))[0].actor == "gateway:bob"
    finally:
        await pool.close()


@pytest.mark.anyio
async def test_event_log_can_be_turned_off(dsn: str) -> None:
    writer = PgWriter(dsn, events=False)
    try:
        assert await writer.write(Batch([fill(i, "NOEVUSDT") for i in range(10)])) == 10
    finally:
        await writer.close()
    assert await count(dsn, "SELECT count(*) FROM fills WHERE symbol = 'NOEVUSDT'") == 10
    assert await count(dsn, "SELECT count(*) FROM events WHERE symbol = 'NOEVUSDT'") == 0


@pytest.mark.anyio
async def test_old_batch_ids_are_pruned_from_the_ledger(dsn: str) -> None:
    writer = PgWriter(dsn)
    try:
        await writer.write(Batch([fill(0, "LEDGERUSDT")], batch_id="ledger-old"))
        await writer.write(Batch([fill(1, "LEDGERUSDT")], batch_id="ledger-new"))
        conn = await writer.connection()
        await conn.execute(
            "UPDATE store_batches SET committed_at = now() - interval '8 days' "
            "WHERE batch_id = 'ledger-old'"
        )
        assert await writer.prune_ledger(7) == 1
        ids = {r[0] for r in await conn.fetch("SELECT batch_id FROM store_batches")}
        assert "ledger-new" in ids and "ledger-old" not in ids
    finally:
        await writer.close()
