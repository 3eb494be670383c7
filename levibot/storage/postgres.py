"""PostgreSQL: a pool helper and the store's batched COPY writer.

The writer owns one connection (COPY batches are serial and must stay in order) and writes a
batch in one transaction:

* plain tables (ticks, signals, equity, events, ...) get a straight ``COPY``;
* tables with a natural key (fills by ``fill_id``, orders by ``(client_order_id, kind)``,
  bars, the audit log by ``command_id``) get a ``COPY`` into a session temp table and one
  ``INSERT ... SELECT ... ON CONFLICT DO NOTHING``, so replaying the same messages (a
  JetStream redelivery, a journal replayed twice) never duplicates them;
* the batch id goes into ``store_batches`` in the same transaction. A batch retried after a
  lost connection is first looked up there: if its commit made it before the connection died,
  it is not written again. That is what makes plain tables exactly-once across an outage.
"""

from __future__ import annotations

import calendar
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import asyncpg

from levibot.messages import Message
from levibot.storage.rows import TICKS, TIMESTAMP_CODEC, Table, group_rows

DAY_NS = 86_400 * 1_000_000_000
PartitionBy = Literal["day", "month"]


def is_transient(exc: BaseException) -> bool:
    """Return True for errors that a retry after a reconnect can cure (server down, restarts)."""
    if isinstance(exc, OSError | TimeoutError | asyncpg.InterfaceError):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        state = getattr(exc, "sqlstate", "") or ""
        # 08: connection exception; 57: operator intervention (shutdown); 53: resources.
        return state[:2] in ("08", "57", "53") or state == "40001" or state == "40P01"
    return False


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 4) -> asyncpg.Pool:
    """Return an asyncpg pool for ``dsn`` (readers, the audit log, the gateway)."""
    return await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size)


class Batch:
    """Messages written together, under one id that stays the same across retries."""

    __slots__ = ("attempts", "batch_id", "messages", "source")

    def __init__(
        self, messages: Sequence[Message], batch_id: str | None = None, source: Any = None
    ) -> None:
        self.messages = list(messages)
        self.batch_id = batch_id or uuid.uuid4().hex
        self.attempts = 0
        self.source = source  # where the messages came from (a spill segment), if not memory


def partition_bounds(ts_event: int, by: PartitionBy) -> tuple[str, datetime, datetime]:
    """Return the name and ``[from, to)`` bounds of the ticks partition holding ``ts_event``."""
    day = datetime.fromtimestamp(ts_event // DAY_NS * 86_400, UTC)
    if by == "day":
        start = day
        end = datetime.fromtimestamp((ts_event // DAY_NS + 1) * 86_400, UTC)
        return f"ticks_p{start:%Y%m%d}", start, end
    start = day.replace(day=1)
    days = calendar.monthrange(start.year, start.month)[1]
    end = datetime.fromtimestamp(start.timestamp() + days * 86_400, UTC)
    return f"ticks_p{start:%Y%m}", start, end


class PgWriter:
    """Write batches of messages into the levibot schema with COPY."""

    def __init__(
        self,
        dsn: str,
        *,
        partition_by: PartitionBy = "day",
        store_ticks: bool = True,
        store_features: bool = False,
        events_market_data: bool = False,
        events: bool = True,
        connect_timeout_s: float = 5.0,
        command_timeout_s: float = 30.0,
    ) -> None:
        self.dsn = dsn
        self.partition_by = partition_by
        self.options = {
            "store_ticks": store_ticks,
            "store_features": store_features,
            "events_market_data": events_market_data,
            "events": events,
        }
        self.connect_timeout_s = connect_timeout_s
        self.command_timeout_s = command_timeout_s
        self.ticks_mode = ""
        self._conn: asyncpg.Connection | None = None
        self._staged: set[str] = set()
        self._partitions: set[str] = set()

    async def connection(self) -> asyncpg.Connection:
        """Return the writer's connection, opening it (and reading the schema mode) if needed."""
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(
                self.dsn, timeout=self.connect_timeout_s, command_timeout=self.command_timeout_s
            )
            await self._conn.set_type_codec(**TIMESTAMP_CODEC)
            self._staged.clear()
            self.ticks_mode = await self._read_mode(self._conn)
        return self._conn

    @staticmethod
    async def _read_mode(conn: asyncpg.Connection) -> str:
        # Before the migrations ran there is no levibot_meta (and no ticks) yet.
        if await conn.fetchval("SELECT to_regclass('levibot_meta')") is None:
            return ""
        mode = await conn.fetchval("SELECT value FROM levibot_meta WHERE key = 'ticks_mode'")
        return str(mode or "native")

    async def refresh(self) -> None:
        """Read the schema mode again (after migrations)."""
        if self._conn is not None and not self._conn.is_closed():
            self.ticks_mode = await self._read_mode(self._conn)
        self._partitions.clear()

    async def close(self) -> None:
        """Close the connection. Idempotent."""
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            try:
                await conn.close(timeout=2.0)
            except Exception:
                conn.terminate()

    def drop_connection(self) -> None:
        """Forget a connection that failed; the next write reconnects."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()

    async def ensure_partitions(self, ts_events: Sequence[int]) -> list[str]:
        """Create the native ticks partitions covering ``ts_events``; return those created."""
        conn = await self.connection()
        if self.ticks_mode != "native":
            return []
        created: list[str] = []
        seen: set[int] = set()
        for ts in ts_events:
            key = ts // DAY_NS
            if key in seen:
                continue
            seen.add(key)
            name, start, end = partition_bounds(ts, self.partition_by)
            if name in self._partitions:
                continue
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF ticks "
                f"FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
            )
            self._partitions.add(name)
            created.append(name)
        return created

    async def prune_ledger(self, days: float) -> int:
        """Forget batch ids committed more than ``days`` ago; return how many."""
        conn = await self.connection()
        if not self.ticks_mode:
            return 0  # not migrated yet
        status: str = await conn.execute(
            "DELETE FROM store_batches WHERE committed_at < now() - make_interval(secs => $1)",
            days * 86_400.0,
        )
        return int(status.rsplit(" ", 1)[-1])

    async def write(self, batch: Batch) -> int:
        """Write one batch; return the rows sent (0 when it was already committed)."""
        batch.attempts += 1
        grouped = group_rows(batch.messages, **self.options)
        conn = await self.connection()
        if batch.attempts > 1 and await conn.fetchval(
            "SELECT 1 FROM store_batches WHERE batch_id = $1", batch.batch_id
        ):
            return 0
        ticks = grouped.get(TICKS)
        if ticks:
            await self.ensure_partitions([row[1] for row in ticks])
        for table in grouped:
            if table.natural_key:
                await self._stage(conn, table)
        total = 0
        async with conn.transaction():
            for table, rows in grouped.items():
                await self._copy(conn, table, rows)
                total += len(rows)
            await conn.execute(
                "INSERT INTO store_batches (batch_id, rows) VALUES ($1, $2)",
                batch.batch_id,
                total,
            )
        return total

    async def _stage(self, conn: asyncpg.Connection, table: Table) -> None:
        # Outside the batch's transaction: a rolled-back batch must not take the table with it.
        stage = f"_lb_stage_{table.name}"
        if stage not in self._staged:
            await conn.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS {stage} "
                f"(LIKE {table.name} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
            )
            self._staged.add(stage)

    async def _copy(self, conn: asyncpg.Connection, table: Table, rows: list[Any]) -> None:
        if not table.natural_key:
            await conn.copy_records_to_table(table.name, records=rows, columns=table.columns)
            return
        stage = f"_lb_stage_{table.name}"
        await conn.copy_records_to_table(stage, records=rows, columns=table.columns)
        cols = ", ".join(table.columns)
        await conn.execute(
            f"INSERT INTO {table.name} ({cols}) SELECT {cols} FROM {stage} ON CONFLICT DO NOTHING"
        )
