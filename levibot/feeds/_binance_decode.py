"""Binance websocket payloads → ``Tick``/``Quote``/``Bar``, with sequence checks per symbol.

Handled (combined-stream envelope ``{"stream": ..., "data": ...}`` or a raw event):

- ``trade`` → ``Tick`` (``t`` must go up by one per symbol; a jump is a gap);
- ``aggTrade`` → ``Tick`` (``a`` likewise; ``m`` true means the buyer was the maker, so the
  aggressor sold);
- ``bookTicker`` → ``Quote`` (``u`` must increase; it legitimately skips, since only top-of-book
  changes are pushed, so skips are not gaps; spot frames have no time, we use the receive time);
- ``kline_<tf>`` → ``Bar`` only once closed (``x`` true); a closed kline that does not follow
  the previous one of its symbol and interval is a gap.

Everything else (``depthUpdate``, ...) is counted as unhandled and ignored: we keep no order
books. A frame that does not parse is counted and logged; the stream goes on. A message older
than the last one seen (an id at or below the previous) is counted as out of order and dropped.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from levibot.feeds._base import MarketData, counter
from levibot.messages import Bar, Quote, Side, Tick
from levibot.metrics import Counter

_MS = 1_000_000


class _Envelope(msgspec.Struct):
    stream: str = ""
    data: msgspec.Raw = msgspec.Raw(b"")
    e: str = ""  # a raw (non-combined) event carries its type here


# Validation in the decoder (C): a price is finite and > 0, a size finite and >= 0; NaN fails
# both comparisons, inf the upper bound.
_MAX = 1.7976931348623157e308
Price = Annotated[float, msgspec.Meta(gt=0, le=_MAX)]
Size = Annotated[float, msgspec.Meta(ge=0, le=_MAX)]
# Ids and times become int64 fields of bus messages (msgpack refuses anything wider), and times
# in ms are multiplied by 10^6 into ns: bound both so that no frame yields an unencodable message.
_INT64 = 2**63 - 1
Id = Annotated[int, msgspec.Meta(ge=0, le=_INT64)]
TimeMs = Annotated[int, msgspec.Meta(ge=0, le=_INT64 // _MS)]
# A symbol and an interval become NATS subject tokens (lb.md.tick.<venue>.<symbol>): no
# whitespace or control characters, no ".", "*" or ">". Binance lists non-ASCII symbols too.
Symbol = Annotated[str, msgspec.Meta(pattern=r"\A[^\s.*>\x00-\x1f\x7f]{1,64}\Z")]
Interval = Annotated[str, msgspec.Meta(pattern=r"\A[0-9]{1,4}[smhdwM]\Z")]


class _Trade(msgspec.Struct):
    s: Symbol
    t: Id
    p: Price
    q: Size
    T: TimeMs
    m: bool


class _AggTrade(msgspec.Struct):
    s: Symbol
    a: Id
    p: Price
    q: Size
    T: TimeMs
    m: bool


class _BookTicker(msgspec.Struct):
    s: Symbol
    u: Id
    b: Size  # an empty side of the book is quoted as 0
    B: Size
    a: Size
    A: Size
    T: TimeMs = 0  # futures only: transaction time


class _KlineBody(msgspec.Struct):
    t: TimeMs
    T: TimeMs
    i: Interval
    o: Price
    h: Price
    l: Price  # noqa: E741 - Binance's field name
    c: Price
    v: Size
    n: Id
    x: bool


class _Kline(msgspec.Struct):
    s: Symbol
    k: _KlineBody


_ENVELOPE = msgspec.json.Decoder(_Envelope)
_DECODERS: dict[str, msgspec.json.Decoder[Any]] = {
    "trade": msgspec.json.Decoder(_Trade, strict=False),
    "aggTrade": msgspec.json.Decoder(_AggTrade, strict=False),
    "bookTicker": msgspec.json.Decoder(_BookTicker, strict=False),
    "kline": msgspec.json.Decoder(_Kline, strict=False),
}
_STREAM_NAMES: dict[object, str] = {
    _Trade: "trade", _AggTrade: "aggTrade", _BookTicker: "bookTicker",
}  # fmt: skip
#: log the first few parse failures, then one in this many
LOG_EVERY = 1000


class DecodeStats:
    """What the decoder saw, besides the messages it produced (mirrored into metrics)."""

    def __init__(self) -> None:
        self.parse_errors = 0
        self.unhandled: dict[str, int] = {}
        self.gaps: dict[str, int] = {}  # symbol → sequence gaps
        self.missing: dict[str, int] = {}  # symbol → ids (or bars) skipped in those gaps
        self.out_of_order = 0
        self.open_klines = 0  # kline updates of a bar still open: not emitted


class BinanceDecoder:
    """Turn Binance frames into market-data messages; count everything else."""

    def __init__(self, ctx: Any, venue: str, source: str = "binance") -> None:
        self.ctx = ctx
        self.venue = venue
        self.stats = DecodeStats()
        # (event struct or kline interval, symbol) → last id / kline open time
        self._last: dict[tuple[object, str], int] = {}
        m = ctx.metrics
        self._m_parse = counter(
            m, "levibot_feed_parse_errors_total", "Frames that did not parse.", source=source
        )
        self._m_ooo = counter(
            m,
            "levibot_feed_out_of_order_total",
            "Messages older than one already seen, dropped.",
            source=source,
        )
        self._m_gaps = counter(
            m,
            "levibot_feed_sequence_gaps_total",
            "Sequence gaps (missed ids or bars).",
            source=source,
        )
        self._m_unhandled: dict[str, Counter] = {}
        self._source = source

    def decode(self, raw: str | bytes, ts_ingress: int) -> MarketData | None:
        """Return the message for one frame, or None (unhandled, open kline, bad, stale)."""
        try:
            env = _ENVELOPE.decode(raw)
            if len(env.data):
                body: Any = env.data
                kind = env.stream.partition("@")[2] if env.stream else ""
                if not kind:
                    kind = _ENVELOPE.decode(body).e
            else:
                body, kind = raw, env.e
            if kind.startswith("kline"):
                kind = "kline"
            decoder = _DECODERS.get(kind)
            if decoder is None:
                # Count by event type where the frame names one (depthUpdate), else by stream.
                self._unhandled(_ENVELOPE.decode(body).e or kind.partition("@")[0] or "unknown")
                return None
            event = decoder.decode(body)
            return self._convert(event, ts_ingress)
        # RecursionError: msgspec gives up on deep nesting (even in fields we skip) with it.
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError, RecursionError) as exc:
            self._parse_failed(raw, exc)
            return None

    def _convert(self, ev: Any, ts_ingress: int) -> MarketData | None:
        clock = self.ctx.clock
        kind = type(ev)
        if kind is _AggTrade or kind is _Trade:
            seq = ev.a if kind is _AggTrade else ev.t
            if not self._in_sequence(kind, ev.s, seq, 1):
                return None
            ts = ev.T * _MS
            clock.observe(ts)
            return Tick(
                ts_event=ts, ts_init=clock.now_ns(), ts_ingress=ts_ingress, symbol=ev.s,
                venue=self.venue, price=ev.p, size=ev.q, side=Side.SELL if ev.m else Side.BUY,
                trade_id=seq,
            )  # fmt: skip
        if kind is _BookTicker:
            if not self._in_sequence(kind, ev.s, ev.u, 0):
                return None
            ts = ev.T * _MS if ev.T else ts_ingress
            clock.observe(ts)
            return Quote(
                ts_event=ts, ts_init=clock.now_ns(), ts_ingress=ts_ingress, symbol=ev.s,
                venue=self.venue, bid=ev.b, bid_size=ev.B, ask=ev.a, ask_size=ev.A,
            )  # fmt: skip
        k = ev.k
        if k.t > k.T:  # the bar would close before it opens
            raise ValueError(f"kline closes ({k.T}) before it opens ({k.t})")
        if not k.x:
            self.stats.open_klines += 1
            return None
        interval = (k.T + 1 - k.t) * _MS
        if not self._in_sequence(k.i, ev.s, k.t * _MS, interval):
            return None
        end = (k.T + 1) * _MS
        clock.observe(end)
        return Bar(
            ts_event=end, ts_init=clock.now_ns(), ts_ingress=ts_ingress, symbol=ev.s,
            venue=self.venue, timeframe=k.i, start=k.t * _MS, open=k.o, high=k.h, low=k.l,
            close=k.c, volume=k.v, trades=k.n,
        )  # fmt: skip

    def _in_sequence(self, kind: object, symbol: str, seq: int, step: int) -> bool:
        """Check ``seq`` against the last one of (kind, symbol); count gaps, reject stale ones.

        ``step`` is the expected increment; 0 means "must only increase" (no gap detection).
        """
        key = (kind, symbol)
        last = self._last.get(key)
        if last is not None:
            if seq <= last:
                self.stats.out_of_order += 1
                self._m_ooo.inc()
                return False
            if step and seq != last + step:
                missing = (seq - last) // step - 1
                self.stats.gaps[symbol] = self.stats.gaps.get(symbol, 0) + 1
                self.stats.missing[symbol] = self.stats.missing.get(symbol, 0) + missing
                self._m_gaps.inc()
                stream = _STREAM_NAMES.get(kind, f"kline_{kind}")
                self.ctx.log.warning(
                    "feed.sequence_gap", stream=stream, symbol=symbol, last=last, got=seq,
                    missing=missing,
                )  # fmt: skip
        self._last[key] = seq
        return True

    def _unhandled(self, kind: str) -> None:
        self.stats.unhandled[kind] = self.stats.unhandled.get(kind, 0) + 1
        counter_ = self._m_unhandled.get(kind)
        if counter_ is None:
            counter_ = self._m_unhandled[kind] = counter(
                self.ctx.metrics,
                "levibot_feed_unhandled_total",
                "Frames of a type the feed ignores.",
                source=self._source,
                kind=kind,
            )
        counter_.inc()

    def _parse_failed(self, raw: str | bytes, exc: Exception) -> None:
        self.stats.parse_errors += 1
        self._m_parse.inc()
        n = self.stats.parse_errors
        if n <= 10 or n % LOG_EVERY == 0:
            text = raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
            self.ctx.log.warning("feed.parse_failed", error=str(exc), frame=text[:200], count=n)
