"""The store actor: persists what the bus carries to the journal, PostgreSQL and Redis.

* Journal (default on): every consumed message, in order, in an append-only file journal; the
  source ``levibot replay`` reads.
* PostgreSQL (when ``postgres_dsn`` is set): messages queue in a bounded buffer and go out in
  COPY batches by size (``batch_size``) or time (``flush_interval_s``). While the server is
  down the store keeps running: the buffer fills to ``max_buffer``, what exceeds it goes to a
  spill journal on disk, retries back off exponentially, and on recovery the buffer and then
  the spill are written in their original order. Batch ids recorded in the same transaction
  make retries exactly-once. On stop with the server still down, what is buffered is spilled,
  ahead of the older spill, and the next start catches up.
* Redis (when ``redis_url`` is set): the latest ``Features`` per symbol, written once per flush.

Disk writes and fsyncs (journal and spill) run in a worker thread, never on the event loop:
``handle_batch`` only encodes; the buffer goes out every MiB, every ``flush_interval_s`` and
on stop (after every batch with ``fsync = "always"``, before the batch counts as handled).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, ClassVar, Literal

from msgspec import Meta

from levibot.config import Config
from levibot.messages import (
    ActivateModel,
    Alert,
    Bar,
    Features,
    Fill,
    OrderAccepted,
    OrderClosed,
    OrderDenied,
    OrderIntent,
    PortfolioSnapshot,
    SetKillSwitch,
    SetRiskPolicy,
    SetTradingState,
    Signal,
    StartStrategy,
    StopStrategy,
    SubmitOrder,
    Tick,
)
from levibot.runtime.actor import Actor, Policy, Supervision
from levibot.settings import with_storage
from levibot.storage.journal_writer import JournalWriter

_JOURNAL_FLUSH_BYTES = 1 << 20  # write the journal buffer out at least every MiB


class StoreConfig(Config, frozen=True, kw_only=True):
    """The ``[store]`` section."""

    journal: bool = True
    journal_dir: str = ""  # "": <[storage] data_dir>/journal
    fsync: Literal["always", "batch", "never"] = "batch"
    segment_bytes: Annotated[int, Meta(ge=4096)] = 64 * 1024 * 1024
    postgres_dsn: str = ""
    redis_url: str = ""
    redis_prefix: str = "levibot"
    migrate_on_start: bool = True
    batch_size: Annotated[int, Meta(ge=1)] = 5000
    flush_interval_s: Annotated[float, Meta(gt=0)] = 0.5
    max_buffer: Annotated[int, Meta(ge=1)] = 100_000
    spill_dir: str = ""  # default: "<journal_dir>-spill"
    spill_segment_bytes: Annotated[int, Meta(ge=4096)] = 8 * 1024 * 1024
    store_ticks: bool = True
    store_features: bool = False
    events: bool = True  # the append-only JSONB event log of every non-market message
    events_market_data: bool = False  # also copy ticks/bars/features into `events`
    tick_partition: Literal["day", "month"] = "day"
    partitions_ahead: Annotated[int, Meta(ge=0)] = 2
    ledger_retention_days: Annotated[float, Meta(gt=0)] = 7.0  # committed batch ids kept
    retry_backoff_s: Annotated[float, Meta(gt=0)] = 0.5
    max_backoff_s: Annotated[float, Meta(gt=0)] = 30.0


class StoreActor(Actor[StoreConfig]):
    """Persist every consumed message; survive a PostgreSQL outage without loss."""

    name = "store"
    consumes = (
        Tick,
        Bar,
        Features,
        Signal,
        OrderIntent,
        OrderDenied,
        OrderAccepted,
        Fill,
        OrderClosed,
        PortfolioSnapshot,
        Alert,
        SetKillSwitch,
        SetTradingState,
        SetRiskPolicy,
        StartStrategy,
        StopStrategy,
        ActivateModel,
        SubmitOrder,
    )
    emits = ()
    config_type = StoreConfig
    supervision: ClassVar[Supervision] = Supervision(policy=Policy.RESTART)
    mailbox_size = 65_536
    max_batch = 8192
    # What the store is given it keeps: a store that falls behind slows its producers rather
    # than letting the mailbox conflate ticks away.
    lossless = True
    tick_interval_s = 0.05

    def __init__(self, ctx: Any, config: StoreConfig) -> None:
        super().__init__(ctx, config)
        self.journal: JournalWriter | None = None
        self.sink: Any = None  # levibot.storage.sink.PgSink, imported only with a DSN
        self.features: Any = None  # levibot.storage.feature_store.FeatureStore
        self._redis: Any = None
        self._latest: dict[str, Features] = {}
        self._last_flush = 0
        self._m_redis = ctx.metrics.counter(
            "levibot_store_redis_errors_total", "Failed Redis writes"
        )

    # -- state the tests and metrics read ------------------------------------------------
    @property
    def buffered(self) -> int:
        """Return the messages held in memory for PostgreSQL."""
        return self.sink.buffered if self.sink is not None else 0

    @property
    def spilling(self) -> bool:
        """Return True while messages wait in the spill journal."""
        return bool(self.sink is not None and self.sink.spilling)

    @property
    def pg_up(self) -> bool:
        """Return True unless the last PostgreSQL write failed."""
        return bool(self.sink is None or self.sink.up)

    # -- lifecycle ----------------------------------------------------------------------------
    async def on_start(self) -> None:
        cfg = self.config = with_storage(self.config, self.ctx.storage, journal_dir="journal")
        if cfg.journal:
            self.journal = await JournalWriter.open(
                cfg.journal_dir,
                segment_bytes=cfg.segment_bytes,
                fsync=cfg.fsync,
                flush_bytes=_JOURNAL_FLUSH_BYTES,
            )
            for bad in self.journal.truncated:
                self.ctx.log.warning("journal.truncated", path=bad.path, offset=bad.offset)
        if cfg.postgres_dsn:
            from levibot.storage.sink import PgSink

            self.sink = PgSink(
                cfg, clock=self.ctx.clock, log=self.ctx.log, metrics=self.ctx.metrics
            )
            await self.sink.connect()
        if cfg.redis_url:
            import redis.asyncio as aioredis

            from levibot.storage.feature_store import FeatureStore

            self._redis = aioredis.from_url(cfg.redis_url)
            self.features = FeatureStore(self._redis, cfg.redis_prefix)
        self._last_flush = self.ctx.clock.now_ns()

    async def on_stop(self) -> None:
        await self._flush_features()
        if self.sink is not None:
            await self.sink.stop()
        if self.journal is not None:
            await self.journal.close()
        if self._redis is not None:
            await self._redis.aclose()

    # -- the hot path ---------------------------------------------------------------------
    async def handle(self, msg: Any) -> None:
        await self.handle_batch((msg,))

    async def handle_batch(self, msgs: Sequence[Any]) -> None:
        if self.journal is not None:
            self.journal.append_many(msgs)
            if self.journal.flush_due:
                await self.journal.flush()
        if self.features is not None:
            for msg in msgs:
                if isinstance(msg, Features):
                    self._latest[msg.symbol] = msg
        if self.sink is not None:
            full = self.sink.add(msgs)
            if self.sink.spill_due:
                await self.sink.flush_spill()
            if full:
                await self.sink.write(force=False)

    async def on_tick(self) -> None:
        now = self.ctx.clock.now_ns()
        if now - self._last_flush < self.config.flush_interval_s * 1e9:
            return
        self._last_flush = now
        if self.journal is not None:
            await self.journal.flush()
        if self.sink is not None:
            await self.sink.flush_spill()
            await self.sink.write(force=True)
        await self._flush_features()

    async def _flush_features(self) -> None:
        if not self._latest or self.features is None:
            return
        latest, self._latest = list(self._latest.values()), {}
        try:
            await self.features.put_many(latest)
        except Exception as exc:  # the online store is a cache: log, count, go on
            self._m_redis.inc()
            self.ctx.log.warning("store.redis_failed", error=repr(exc))
