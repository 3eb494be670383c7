"""The public Binance combined websocket stream as a feed source.

One connection to ``{url}?streams=<symbol>@<kind>/...`` (aiohttp's websocket client). aiohttp
answers the server's pings and sends its own every ``heartbeat_s``; a missing pong closes the
connection. Any close or error reconnects after a jittered exponential backoff
(``backoff_initial_s`` doubling up to ``backoff_max_s``, each delay drawn from [d/2, d]); the
backoff resets once a connection delivers a frame. ``max_reconnects`` consecutive failed
attempts (0: never give up) raise ``FeedDisconnected`` so supervision can restart the actor.
Decoding, gap detection and counting live in ``levibot.feeds._binance_decode``.

Backfill: when a closed kline opens more than one interval after the last one of its symbol
and interval (a reconnect, a lost frame), the missing klines are fetched from the REST API
(``rest_url``, ``levibot.marketdata.history.BinanceKlines``) and emitted, in order, before
it; a failed fetch is logged and counted, and the bar goes on with the gap.
"""

from __future__ import annotations

import random

import aiohttp
import anyio
import msgspec

from levibot.backoff import delay
from levibot.errors import LevibotError
from levibot.feeds._base import Emit, Source, counter, gauge
from levibot.feeds._binance_decode import BinanceDecoder
from levibot.feeds.config import BinanceConfig
from levibot.marketdata.history import BinanceKlines, HistoryError
from levibot.messages import Bar


class FeedDisconnected(LevibotError):
    """The websocket could not be (re)connected within ``max_reconnects`` attempts."""


def stream_names(symbols: tuple[str, ...], streams: tuple[str, ...]) -> list[str]:
    """Return the stream names to subscribe: ``<symbol>@<kind>`` per symbol, full names as is."""
    names: list[str] = []
    for stream in streams:
        if "@" in stream:
            names.append(stream)
        else:
            names.extend(f"{symbol.lower()}@{stream}" for symbol in symbols)
    return names


def backoff_delay(attempt: int, initial: float, maximum: float, rng: random.Random) -> float:
    """Return the delay before reconnect ``attempt`` (0-based): jittered in [d/2, d]."""
    return delay(attempt, initial, maximum, rng=rng)


class BinanceSource(Source[BinanceConfig]):
    """Stream trades, aggregate trades, best bid/ask and closed klines from Binance."""

    kind = "binance"

    async def open(self) -> None:
        """Build the subscription URL and the decoder."""
        names = stream_names(self.symbols, self.config.streams)
        if not names:
            raise LevibotError("binance feed: no streams to subscribe (set symbols and streams)")
        sep = "&" if "?" in self.config.url else "?"
        self.url = f"{self.config.url}{sep}streams={'/'.join(names)}"
        self.decoder = BinanceDecoder(self.ctx, self.venue, source=self.kind)
        self.connections = 0
        self._rng = random.Random()
        self._connected = False
        cfg = self.config
        self._rest = BinanceKlines(cfg.rest_url) if cfg.rest_url and cfg.backfill_max_bars else None
        self._last_bar: dict[tuple[str, str], int] = {}  # (symbol, interval) → last start
        m = self.ctx.metrics
        self._m_backfilled = counter(
            m, "levibot_feed_backfilled_bars_total", "Missing klines filled from REST.",
            source=self.kind,
        )  # fmt: skip
        self._m_backfill_failed = counter(
            m, "levibot_feed_backfill_failures_total", "Gaps left unfilled (REST failed).",
            source=self.kind,
        )  # fmt: skip
        self._m_reconnects = counter(
            m, "levibot_feed_reconnects_total", "Websocket reconnects.", source=self.kind
        )
        gauge(
            m, "levibot_feed_connected", "1 while the websocket is connected.",
            lambda: float(self._connected), source=self.kind,
        )  # fmt: skip

    async def run(self, emit: Emit) -> None:
        """Stay connected and emit what arrives, reconnecting with backoff, until cancelled."""
        cfg = self.config
        failures = 0
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=cfg.connect_timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                received = await self._session(session, emit)
                if received:
                    failures = 0
                failures += 1
                if cfg.max_reconnects and failures > cfg.max_reconnects:
                    raise FeedDisconnected(
                        f"binance feed: {failures - 1} reconnect attempts failed ({cfg.url})"
                    )
                delay = backoff_delay(
                    failures - 1, cfg.backoff_initial_s, cfg.backoff_max_s, self._rng
                )
                self._m_reconnects.inc()
                self.ctx.log.info("feed.reconnecting", delay_s=round(delay, 3), attempt=failures)
                await anyio.sleep(delay)

    async def _backfill(self, bar: Bar) -> list[Bar]:
        """Return the klines missing between the last bar of ``bar``'s series and it."""
        key = (bar.symbol, bar.timeframe)
        last, self._last_bar[key] = self._last_bar.get(key), bar.start
        interval = bar.ts_event - bar.start
        if last is None or self._rest is None or bar.start - last <= interval:
            return []
        missing = min((bar.start - last) // interval - 1, self.config.backfill_max_bars)
        try:
            past = await self._rest.recent(
                bar.symbol, self.venue, bar.timeframe, bar.start, missing
            )
        except HistoryError as exc:
            self._m_backfill_failed.inc()
            self.ctx.log.warning("feed.backfill_failed", symbol=bar.symbol, error=str(exc))
            return []
        now = self.ctx.clock.now_ns()
        filled: list[Bar] = [
            msgspec.structs.replace(b, ts_init=now, ts_ingress=bar.ts_ingress)
            for b in past
            if last < b.start < bar.start
        ]
        self._m_backfilled.inc(len(filled))
        self.ctx.log.info("feed.backfilled", symbol=bar.symbol, bars=len(filled), gap=missing)
        return filled

    async def close(self) -> None:
        """Release the REST session."""
        if self._rest is not None:
            await self._rest.close()

    async def _session(self, session: aiohttp.ClientSession, emit: Emit) -> int:
        """Run one connection to its end; return how many frames it delivered."""
        clock, decode = self.ctx.clock, self.decoder.decode
        received = 0
        try:
            async with session.ws_connect(
                self.url, heartbeat=self.config.heartbeat_s, autoping=True, max_msg_size=0
            ) as ws:
                self.connections += 1
                self._connected = True
                self.ctx.log.info("feed.connected", url=self.config.url, n=self.connections)
                async for frame in ws:
                    ts_ingress = clock.now_ns()
                    if frame.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                        received += 1
                        msg = decode(frame.data, ts_ingress)
                        if msg is not None:
                            if isinstance(msg, Bar):
                                for past in await self._backfill(msg):
                                    self.count(past)
                                    await emit(past)
                            self.count(msg)
                            await emit(msg)
                    elif frame.type == aiohttp.WSMsgType.ERROR:
                        self.ctx.log.warning("feed.ws_error", error=str(ws.exception()))
                        break
                self.ctx.log.warning("feed.disconnected", code=ws.close_code, frames=received)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self.ctx.log.warning("feed.connection_failed", error=f"{type(exc).__name__}: {exc}")
        finally:
            self._connected = False
        return received
