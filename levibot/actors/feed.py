"""The feed actor: market data in, ``Tick``/``Quote``/``Bar`` out.

It runs one source (``replay``, ``synthetic`` or ``binance``; see ``levibot.feeds``), publishes
only the symbols this replica owns, and optionally aggregates the ticks into bars
(``bars = ["1s", "1m"]``; see ``levibot.marketdata.bars``). When the source is exhausted (end of
a replay) the open bars are flushed and ``run`` returns.

Configuration (``[feed]`` with sub-tables ``[feed.replay]``, ``[feed.synthetic]``,
``[feed.binance]``): the default replays the real BTCUSDT 1h klines as fast as possible.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from msgspec import Meta

from levibot.config import Config
from levibot.feeds import MarketData, Source, load_source
from levibot.feeds._base import counter, gauge
from levibot.feeds.config import BinanceConfig, ReplayConfig, SyntheticConfig
from levibot.marketdata.bars import BarAggregator
from levibot.marketdata.timeframe import parse_timeframe
from levibot.messages import Bar, Message, Quote, Tick
from levibot.runtime.actor import Policy, SourceActor, Supervision

_DEFAULT_VENUE = {"replay": "BINANCE", "synthetic": "SYNTH", "binance": "BINANCE"}


class FeedConfig(Config, frozen=True, kw_only=True):
    """What the feed reads and what it emits."""

    source: Literal["replay", "synthetic", "binance"] = "replay"
    venue: str = ""  # "" → BINANCE (replay, binance) or SYNTH (synthetic)
    # Symbols of the synthetic and binance sources. A replay takes its symbol from the file.
    symbols: tuple[str, ...] = ("BTCUSDT",)
    bars: tuple[str, ...] = ()  # aggregate ticks into bars of these timeframes ("1s", "1m", ...)
    # Live clock only: close a bar this long after its end even if no later tick came.
    bar_grace_s: Annotated[float, Meta(ge=0)] = 2.0
    replay: ReplayConfig = ReplayConfig()
    synthetic: SyntheticConfig = SyntheticConfig()
    binance: BinanceConfig = BinanceConfig()

    def __post_init__(self) -> None:
        for tf in self.bars:
            try:
                parse_timeframe(tf)
            except ValueError as exc:
                raise ValueError(f"feed.bars: {exc}") from None

    @property
    def venue_name(self) -> str:
        """Return the venue stamped on messages."""
        return self.venue or _DEFAULT_VENUE[self.source]


class FeedActor(SourceActor[FeedConfig]):
    """Run the configured source and publish its market data (and bars built from its ticks)."""

    name = "feed"
    emits = (Tick, Quote, Bar)
    partitioned = True  # a replica publishes only the symbols it owns
    config_type = FeedConfig
    supervision = Supervision(policy=Policy.RESTART, budget=10, window_s=300.0, max_backoff_s=30.0)
    tick_interval_s = 0.25  # how often a live feed checks for bars a quiet market left open

    async def on_start(self) -> None:
        """Build and open the source (a replay with no path fetches the real data here)."""
        cfg = self.config
        source_cls = load_source(cfg.source)
        sub: Any = getattr(cfg, cfg.source)
        self.source: Source[Any] = source_cls(
            self.ctx, sub, venue=cfg.venue_name, symbols=tuple(cfg.symbols)
        )
        await self.source.open()
        self.aggregator = BarAggregator(cfg.bars) if cfg.bars else None
        self._owned: dict[str, bool] = {}
        self._not_owned = counter(
            self.ctx.metrics,
            "levibot_feed_not_owned_total",
            "Messages skipped: another replica owns the symbol.",
        )
        self._bars = counter(
            self.ctx.metrics,
            "levibot_feed_bars_built_total",
            "Bars the feed aggregated from ticks.",
        )
        gauge(
            self.ctx.metrics, "levibot_feed_late_ticks",
            "Ticks dropped for arriving after their bar was emitted.",
            lambda: float(self.aggregator.late if self.aggregator else 0),
        )  # fmt: skip

    async def run(self) -> None:
        """Publish until the source is exhausted (replay) or cancelled (live)."""
        await self.source.run(self._emit)
        if self.aggregator is not None:
            for bar in self.aggregator.flush(self.ctx.clock.now_ns()):
                await self._publish_bar(bar)
        self.ctx.log.info("feed.exhausted", source=self.config.source)

    async def on_tick(self) -> None:
        """Publish the bars whose bucket ended ``bar_grace_s`` ago without a later tick (live)."""
        clock = self.ctx.clock
        if self.aggregator is None or clock.is_replay:
            return  # in replay a bar closes on event time only, so runs stay deterministic
        grace = int(self.config.bar_grace_s * 1e9)
        for bar in self.aggregator.close_due(clock.now_ns(), grace):
            await self._publish_bar(bar)

    async def on_stop(self) -> None:
        """Close the source."""
        source = getattr(self, "source", None)
        if source is not None:
            await source.close()

    async def _emit(self, msg: MarketData) -> None:
        owned = self._owned.get(msg.symbol)
        if owned is None:
            owned = self._owned[msg.symbol] = self.ctx.owns(msg.symbol)
        if not owned:
            self._not_owned.inc()
            return
        await self.ctx.publish(msg)
        if self.ctx.clock.is_replay:
            # One event at a time, as it happened: the replay/backtest determinism rests on it.
            await self.ctx.settle()
        if self.aggregator is not None and isinstance(msg, Tick):
            for bar in self.aggregator.on_tick(msg, self.ctx.clock.now_ns()):
                await self._publish_bar(bar)

    async def _publish_bar(self, bar: Message) -> None:
        self._bars.inc()
        await self.ctx.publish(bar)
        if self.ctx.clock.is_replay:
            await self.ctx.settle()
