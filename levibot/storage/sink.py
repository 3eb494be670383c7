"""The store's PostgreSQL sink: a bounded buffer, COPY batches, retries and a spill journal.

Messages queue in memory (at most ``max_buffer``) and go out in batches of ``batch_size``.
While PostgreSQL is down, writes back off exponentially (``retry_backoff_s`` doubling up to
``max_backoff_s``); what exceeds the buffer is appended to the spill journal, and once anything
is spilled everything after it is too, so order is kept. On recovery the buffer goes first, then
the spill, segment by segment, each segment deleted once all its batches are committed. Batch
ids are recorded in the same transaction (``store_batches``), so a retried batch is written
exactly once; spill batches get ids derived from their segment file, so a store restarted in
the middle of a catch-up recognises what it already wrote. On stop with the server still down,
what is in memory is written to the spill, ahead of it. The spill's disk work (writes, fsyncs,
rotation, reading a segment back, the final prepend) runs in a worker thread, never on the loop.

A batch PostgreSQL refuses for its data (not its health) is split into single messages; those
that still fail are counted, logged and dropped (they stay in the journal).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from levibot.backoff import Backoff
from levibot.clock import Clock
from levibot.messages import Features, Message, Tick
from levibot.metrics import Metrics
from levibot.storage.journal import BadRecord, Journal, JournalReader
from levibot.storage.journal_writer import JournalWriter
from levibot.storage.postgres import DAY_NS, Batch, PgWriter, is_transient

if TYPE_CHECKING:
    from levibot.actors.store import StoreConfig

_FLUSH_BYTES = 1 << 20


class PgSink:
    """Buffer, batch and write messages to PostgreSQL; never lose them while it is down."""

    def __init__(self, cfg: StoreConfig, *, clock: Clock, log: Any, metrics: Metrics) -> None:
        self.cfg = cfg
        self._clock = clock
        self._log = log
        self.writer = PgWriter(
            cfg.postgres_dsn,
            partition_by=cfg.tick_partition,
            store_ticks=cfg.store_ticks,
            store_features=cfg.store_features,
            events_market_data=cfg.events_market_data,
            events=cfg.events,
        )
        spill_dir = cfg.spill_dir or f"{cfg.journal_dir.rstrip('/')}-spill"
        self.spill = Journal(spill_dir, segment_bytes=cfg.spill_segment_bytes, fsync=cfg.fsync)
        self._spill_writer = JournalWriter(self.spill, flush_bytes=_FLUSH_BYTES)
        self._loading = anyio.Lock()
        self._writing = anyio.Lock()
        self._queue: deque[Message] = deque()
        self._batches: deque[Batch] = deque()  # cut and not yet committed, in order
        self._spill_segment: Path | None = None  # the spill segment being caught up
        self._spill_active = bool(self.spill.closed_segments() or self.spill.current_size)
        self._ready = False  # connected and migrated at least once
        self._retry_at = 0
        self._backoff = Backoff(cfg.retry_backoff_s, cfg.max_backoff_s, jitter=False)
        self._ahead_day = -1
        m = metrics
        self._m_rows = m.counter("levibot_store_rows_total", "Rows written to PostgreSQL")
        self._m_batches = m.counter("levibot_store_batches_total", "Batches committed")
        self._m_errors = m.counter("levibot_store_errors_total", "Failed PostgreSQL writes")
        self._m_spilled = m.counter("levibot_store_spilled_total", "Messages spilled to disk")
        self._m_rejected = m.counter("levibot_store_rejected_total", "Messages PostgreSQL refused")
        m.gauge(
            "levibot_store_buffered", "Messages waiting for PostgreSQL", fn=lambda: self.buffered
        )

    @property
    def buffered(self) -> int:
        """Return the messages held in memory for PostgreSQL."""
        cut = sum(len(b.messages) for b in self._batches if b.source is None)
        return len(self._queue) + cut

    @property
    def spilling(self) -> bool:
        """Return True while messages wait in the spill journal."""
        return self._spill_active

    @property
    def up(self) -> bool:
        """Return True unless the last PostgreSQL write failed."""
        return self._retry_at == 0

    @property
    def spill_due(self) -> bool:
        """Return True when the spill's buffer should go to disk now (see ``flush_due``)."""
        return self._spill_writer.flush_due

    async def flush_spill(self) -> None:
        """Write the spill journal's buffer to disk, in a worker thread."""
        await self._spill_writer.flush()

    async def stop(self) -> None:
        """Make one last attempt, spill what is left, close everything."""
        self._retry_at = 0  # whatever the backoff says
        await self.flush_spill()
        await self.write(force=True)
        await self._spill_remaining()
        await self.writer.close()
        await self._spill_writer.close()

    async def connect(self) -> None:
        """Connect (and migrate); a transient failure only schedules a retry."""
        from levibot.storage.migrate import migrate

        try:
            conn = await self.writer.connection()
            if self.cfg.migrate_on_start:
                applied = await migrate(conn)
                if applied:
                    self._log.info("store.migrated", versions=[m.version for m in applied])
                await self.writer.refresh()  # the migrations may have created the schema
            self._ready = True
            await self._partitions_ahead()
        except Exception as exc:
            if not is_transient(exc):
                raise
            self._failed(exc)

    async def _spill_remaining(self) -> None:
        # Whatever is still in memory is older than everything in the spill: put it first.
        pending: list[Message] = []
        for batch in self._batches:
            if batch.source is None:
                pending.extend(batch.messages)
        self._batches.clear()
        pending.extend(self._queue)
        self._queue.clear()
        if pending:
            await self.flush_spill()
            await self._spill_writer.run(self.spill.prepend, pending)
            self._spill_active = True
            self._m_spilled.inc(len(pending))
            self._log.warning("store.spilled_on_stop", messages=len(pending))

    def add(self, msgs: Sequence[Message]) -> bool:
        """Queue messages for PostgreSQL (or spill them); return True when a batch is full."""
        cfg = self.cfg
        spilling = self._spill_active
        held = self.buffered
        spilled: list[Message] = []
        for msg in msgs:
            if isinstance(msg, Tick) and not (cfg.store_ticks or cfg.events_market_data):
                continue
            if isinstance(msg, Features) and not (cfg.store_features or cfg.events_market_data):
                continue
            # Once anything is spilled, everything after it is too, so order is kept.
            if spilling or held >= cfg.max_buffer:
                spilling = True
                spilled.append(msg)
            else:
                self._queue.append(msg)
                held += 1
        if spilled:
            self.spill.stage(spilled)  # written by ``flush_spill``, off the loop
            self._m_spilled.inc(len(spilled))
        if spilling and not self._spill_active:
            self._spill_active = True
            self._log.warning("store.spilling", buffered=held)
        return len(self._queue) >= cfg.batch_size

    async def write(self, *, force: bool) -> None:
        """Write full batches (every queued message with ``force``; then catch up the spill)."""
        # One writer at a time on the one connection: a timed flush still finishing its
        # (shielded) batch when the store stops must not meet the final write there.
        async with self._writing:
            await self._write(force)

    async def _write(self, force: bool) -> None:
        if self._retry_at and self._clock.now_ns() < self._retry_at:
            return
        if not self._ready:
            await self.connect()
            if not self._ready:
                return
        try:
            await self._partitions_ahead()
        except Exception as exc:
            if not is_transient(exc):
                raise
            self._failed(exc)
            return
        while (batch := await self._next_batch(force)) is not None:
            try:
                # Shielded: a write cancelled mid-COPY (a timed flush cancelled at the drain)
                # would leave the connection inside its transaction, and every later write,
                # the one at stop included, would fail on it and spill.
                with anyio.CancelScope(shield=True):
                    rows = await self.writer.write(batch)
            except Exception as exc:
                if is_transient(exc):
                    self._failed(exc)
                    return
                self._poisoned(batch, exc)
                continue
            self._committed(batch, rows)

    async def _next_batch(self, force: bool) -> Any:
        if self._batches:
            return self._batches[0]
        size = self.cfg.batch_size
        if self._queue and (force or len(self._queue) >= size):
            take = min(size, len(self._queue))
            self._batches.append(Batch([self._queue.popleft() for _ in range(take)]))
            return self._batches[0]
        if force and not self._queue and self._spill_active:
            await self._load_spill()
            return self._batches[0] if self._batches else None
        return None

    async def _load_spill(self) -> None:
        async with self._loading:  # one reader of the spill at a time
            while not self._batches:
                seg = await self._spill_writer.run(self._oldest_closed)
                if seg is None:
                    if self.spill.current_size == 0 and self.spill.pending_bytes == 0:
                        self._spill_active = False
                        self._log.info("store.caught_up")
                        return
                    # Close the segment being appended to, so it can be read back.
                    await self.flush_spill()
                    await self._spill_writer.run(self.spill.rotate_file)
                    continue
                msgs, bad = await self._spill_writer.run(_read_segment, seg)
                for b in bad:
                    self._log.error(
                        "store.spill_bad_record", path=b.path, offset=b.offset, reason=b.reason
                    )
                size = self.cfg.batch_size
                for i in range(0, len(msgs), size):
                    # Ids a restarted store derives again from the same file: no double writes.
                    self._batches.append(Batch(msgs[i : i + size], f"spill:{seg.stem}:{i}", seg))
                self._spill_segment = seg
                if not msgs:
                    await self._spill_writer.run(seg.unlink)

    def _oldest_closed(self) -> Path | None:
        closed = self.spill.closed_segments()
        return closed[0] if closed else None

    def _committed(self, batch: Any, rows: int) -> None:
        self._batches.popleft()
        self._m_batches.inc()
        self._m_rows.inc(rows)
        if self._retry_at:
            self._log.info("store.pg_recovered", attempts=batch.attempts)
        self._retry_at = 0
        self._backoff.reset()
        seg = self._spill_segment
        if seg is not None and not (self._batches and self._batches[0].source == seg):
            seg.unlink(missing_ok=True)
            self._spill_segment = None

    def _failed(self, exc: BaseException) -> None:
        self._m_errors.inc()
        self.writer.drop_connection()
        wait = self._backoff.next()
        self._retry_at = self._clock.now_ns() + int(wait * 1e9)
        self._log.warning("store.pg_unavailable", error=repr(exc), retry_in_s=wait)

    def _poisoned(self, batch: Any, exc: BaseException) -> None:
        # Not the server's health but the data: isolate the bad messages one by one.
        self._batches.popleft()
        if len(batch.messages) == 1:
            self._m_rejected.inc()
            self._log.error(
                "store.rejected", error=repr(exc), type=type(batch.messages[0]).__name__
            )
            if not (self._batches and self._batches[0].source == batch.source):
                self._committed_source(batch.source)
            return
        singles = [
            Batch([m], f"{batch.batch_id}:{i}", batch.source) for i, m in enumerate(batch.messages)
        ]
        self._batches.extendleft(reversed(singles))

    def _committed_source(self, source: Any) -> None:
        if source is not None and source == self._spill_segment:
            source.unlink(missing_ok=True)
            self._spill_segment = None

    async def _partitions_ahead(self) -> None:
        # Daily housekeeping: the next days' tick partitions, and the old batch ids.
        now = self._clock.now_ns()
        day = now // DAY_NS
        if day == self._ahead_day:
            return
        ahead = range(self.cfg.partitions_ahead + 1)
        await self.writer.ensure_partitions([now + k * DAY_NS for k in ahead])
        await self.writer.prune_ledger(self.cfg.ledger_retention_days)
        self._ahead_day = day


def _read_segment(seg: Path) -> tuple[list[Message], list[BadRecord]]:
    """Read a closed spill segment back (blocking: the spill's worker thread calls it)."""
    reader = JournalReader(seg)
    msgs = [m for _, m in reader.records(seg)]
    return msgs, reader.bad
