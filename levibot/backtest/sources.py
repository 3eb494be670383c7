"""``journal_replay``: a source that re-publishes the market data of a store journal.

It reads a journal written by the store actor (``levibot.storage.journal``) and publishes its
``Tick``, ``Quote`` and ``Bar`` messages, unchanged, in journal order. Under a replay clock it
waits after each one until the whole pipeline has handled it (``ctx.settle()``), as the feed's
replay source does, so the actors see events one at a time, exactly as they happened, and a
replay is bit-for-bit repeatable. A data file is replayed by the feed itself (``[feed]
source = "replay"``).
"""

from __future__ import annotations

from typing import Annotated

import anyio.lowlevel
from msgspec import Meta

from levibot.config import Config
from levibot.messages import Bar, Quote, Tick
from levibot.registry import register
from levibot.runtime.actor import Policy, SourceActor, Supervision
from levibot.storage.journal import Journal

_MARKET = {"Tick": Tick, "Quote": Quote, "Bar": Bar}


class JournalReplayConfig(Config, frozen=True, kw_only=True):
    """The ``[journal_replay]`` section."""

    path: str = "var/journal"  # a journal directory or one segment file
    types: tuple[str, ...] = ("Tick", "Quote", "Bar")  # market data only, by default
    symbols: tuple[str, ...] = ()  # () → every symbol
    limit: Annotated[int, Meta(ge=0)] = 0  # at most this many messages; 0: all

    def __post_init__(self) -> None:
        unknown = sorted(set(self.types) - set(_MARKET))
        if unknown:
            raise ValueError(f"journal_replay.types: unknown {unknown}; known: {sorted(_MARKET)}")


class JournalReplayActor(SourceActor[JournalReplayConfig]):
    """Re-publish a journal's market data in order, one settled event at a time."""

    name = "journal_replay"
    emits = (Tick, Quote, Bar)
    config_type = JournalReplayConfig
    supervision = Supervision(policy=Policy.CRASH)

    async def on_start(self) -> None:
        """Fail now, not mid-run, when the journal is missing."""
        from levibot.storage.journal import segments

        self._segments = segments(self.config.path)  # raises JournalError when absent
        self.published = 0
        self.skipped = 0

    async def run(self) -> None:
        """Publish every selected message, then log what was skipped as corrupt."""
        cfg = self.config
        types = tuple(_MARKET[t] for t in cfg.types)
        symbols = set(cfg.symbols)
        clock, ctx = self.ctx.clock, self.ctx
        reader = Journal.read(cfg.path)
        for msg in reader:
            if not isinstance(msg, types) or (symbols and msg.symbol not in symbols):
                self.skipped += 1
                continue
            if not ctx.owns(msg.symbol):
                continue
            clock.observe(msg.ts_event)
            await ctx.publish(msg)
            self.published += 1
            if clock.is_replay:
                await ctx.settle()
            elif self.published % 256 == 0:
                await anyio.lowlevel.checkpoint()
            if cfg.limit and self.published >= cfg.limit:
                break
        if reader.bad:
            ctx.log.warning(
                "journal_replay.bad_records", count=len(reader.bad), first=reader.bad[0].reason
            )
        ctx.log.info("journal_replay.done", published=self.published, skipped=self.skipped)


register("journal_replay", "levibot.backtest.sources:JournalReplayActor")
