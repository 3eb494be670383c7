"""Per-source configuration, kept apart from the sources so config loading imports nothing heavy.

Each is a table under ``[feed]`` in ``config.toml``: ``[feed.replay]``, ``[feed.synthetic]``,
``[feed.binance]``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta

from levibot.config import Config
from levibot.marketdata.timeframe import parse_timeframe

NonNegative = Annotated[float, Meta(ge=0)]
Positive = Annotated[float, Meta(gt=0)]


class ReplayConfig(Config, frozen=True, kw_only=True):
    """Replay a kline CSV (→ ``Bar``) or a trades CSV (→ ``Tick``)."""

    path: str = ""  # "" → the real BTCUSDT 1h klines (levibot.data.ensure_btcusdt)
    # Several kline CSVs, one symbol each (named in the file name), replayed as one stream in
    # time order (bars of the same instant in the order given); instead of ``path``.
    paths: tuple[str, ...] = ()
    kind: Literal["auto", "klines", "trades"] = "auto"  # auto: klines if the header has OHLC
    speed: NonNegative = 0.0  # 0: as fast as possible; N: N × real time (event-time spacing)
    symbol: str = ""  # "" → the symbol named in the file name (klines) or the `symbol` column
    timeframe: str = ""  # klines only; "" → inferred from the data (most common step)
    limit: Annotated[int, Meta(ge=0)] = 0  # emit at most this many messages; 0: all
    # Where ensure_btcusdt caches the real data; "" → <[storage] data_dir>/data.
    data_dir: str = ""

    def __post_init__(self) -> None:
        if self.paths and (self.path or self.symbol or self.kind == "trades"):
            raise ValueError(
                "feed.replay.paths replays several kline files, one symbol each (from the file"
                " names): give it without path, symbol or kind = 'trades'"
            )
        if self.timeframe:
            try:
                parse_timeframe(self.timeframe)
            except ValueError as exc:
                raise ValueError(f"feed.replay.timeframe: {exc}") from None


class SyntheticConfig(Config, frozen=True, kw_only=True):
    """A seeded random walk over the feed's symbols, for benchmarks and demos."""

    seed: int = 42
    rate: NonNegative = 10_000.0  # ticks per second over all symbols; 0: as fast as possible
    count: Annotated[int, Meta(ge=0)] = 0  # ticks to emit, then stop; 0: forever
    quotes: bool = False  # also emit a Quote after every Tick
    start_price: Positive = 100.0
    volatility_bps: NonNegative = 5.0  # std-dev of one step's log return, in basis points
    spread_bps: NonNegative = 2.0  # quoted spread around the trade price
    mean_size: Positive = 1.0  # trade sizes are exponential with this mean
    start_ns: int = 1_700_000_000_000_000_000  # event time of the first tick (replay clock)


class BinanceConfig(Config, frozen=True, kw_only=True):
    """The public Binance combined websocket stream."""

    url: str = "wss://stream.binance.com:9443/stream"
    # Per-symbol stream kinds (trade, aggTrade, bookTicker, kline_1m, ...); an entry containing
    # "@" is a full stream name and is subscribed verbatim.
    streams: tuple[str, ...] = ("aggTrade", "bookTicker")
    heartbeat_s: Positive = 20.0  # client ping interval; no pong in time closes and reconnects
    connect_timeout_s: Positive = 10.0
    backoff_initial_s: Positive = 0.5  # first reconnect delay; doubles per failed attempt
    backoff_max_s: Positive = 30.0
    # Consecutive failed connections before run() raises FeedDisconnected; 0: never give up.
    max_reconnects: Annotated[int, Meta(ge=0)] = 0
    # A gap in a symbol's closed klines (a reconnect, a dropped frame) is filled from the REST
    # klines of rest_url (https://api.binance.com) before the bar after it is emitted, at most
    # backfill_max_bars of it; "" = not filled (the gap is counted either way).
    rest_url: str = ""
    backfill_max_bars: Annotated[int, Meta(ge=0, le=10_000)] = 1_000
