"""The Binance frame decoder on our format fixtures: every path, no network."""

from __future__ import annotations

from pathlib import Path

from levibot.clock import LiveClock
from levibot.feeds._binance_decode import BinanceDecoder
from levibot.feeds.binance import backoff_delay, stream_names
from levibot.messages import Bar, Quote, Side, Tick
from levibot.testing import RecordingContext

FIXTURE = Path(__file__).parents[1] / "fixtures" / "binance" / "combined.ws"
MS = 1_000_000


def read_recording(path: Path) -> tuple[str, list[tuple[float, str]]]:
    """Return (url, [(receive time, frame)]) of a recording: ``URL <-> ts`` then ``ts: json``."""
    lines = path.read_text().splitlines()
    url = lines[0].split(" <-> ")[0]
    frames = []
    for line in lines[1:]:
        if line.strip():
            ts, _, frame = line.partition(": ")
            frames.append((float(ts), frame))
    return url, frames


def decode_fixture() -> tuple[BinanceDecoder, RecordingContext, list[Tick | Quote | Bar]]:
    ctx = RecordingContext("feed", clock=LiveClock())
    decoder = BinanceDecoder(ctx, "BINANCE")
    out = []
    for recv, frame in read_recording(FIXTURE)[1]:
        msg = decoder.decode(frame, int(recv * 1e9))
        if msg is not None:
            out.append(msg)
    return decoder, ctx, out


def test_decoder_turns_trades_quotes_and_closed_klines_into_messages() -> None:
    _, _, out = decode_fixture()
    assert [type(m).__name__ for m in out] == [
        "Tick", "Tick", "Tick", "Tick", "Quote", "Tick", "Bar", "Tick", "Tick",
    ]  # fmt: skip
    first, second = out[0], out[1]
    assert isinstance(first, Tick) and isinstance(second, Tick)
    assert (first.symbol, first.price, first.size, first.trade_id) == (
        "BTCUSDT",
        37000.10,
        0.015,
        100,
    )
    assert first.ts_event == 1700000000090 * MS  # trade time T, not event time E
    assert first.ts_ingress == 1_700_000_000_100_000_000  # the receive time we were given
    assert (first.side, second.side) == (Side.BUY, Side.SELL)  # m: buyer is maker → sell


def test_spot_book_ticker_has_no_time_so_the_quote_uses_receive_time() -> None:
    _, _, out = decode_fixture()
    quote = next(m for m in out if isinstance(m, Quote))
    assert (quote.bid, quote.bid_size, quote.ask, quote.ask_size) == (
        36999.90,
        1.25,
        37000.20,
        0.40,
    )
    assert quote.ts_event == quote.ts_ingress == 1_700_000_000_140_000_000


def test_only_a_closed_kline_becomes_a_bar() -> None:
    decoder, _, out = decode_fixture()
    bars = [m for m in out if isinstance(m, Bar)]
    assert len(bars) == 1 and decoder.stats.open_klines == 1
    bar = bars[0]
    assert (bar.start, bar.ts_event) == (1699999980000 * MS, 1700000040000 * MS)
    assert (bar.timeframe, bar.open, bar.high, bar.low, bar.close) == (
        "1m", 36990.0, 37001.0, 36985.5, 37000.4,
    )  # fmt: skip
    assert (bar.volume, bar.trades) == (3.15, 17)


def test_bad_unknown_stale_and_gapped_frames_are_counted_not_raised() -> None:
    decoder, ctx, _ = decode_fixture()
    stats = decoder.stats
    assert stats.parse_errors == 2  # truncated JSON, a price that is not a number
    assert stats.unhandled == {"depthUpdate": 1, "forceOrder": 1}
    assert stats.out_of_order == 1  # the older bookTicker update
    assert (stats.gaps, stats.missing) == ({"BTCUSDT": 2}, {"BTCUSDT": 4})
    m = ctx.metrics
    assert m.value("levibot_feed_parse_errors_total") == 2
    assert m.value("levibot_feed_unhandled_total", kind="depthUpdate") == 1
    assert m.value("levibot_feed_sequence_gaps_total") == 2
    assert m.value("levibot_feed_out_of_order_total") == 1


def test_raw_non_combined_frames_are_decoded_by_their_event_type() -> None:
    ctx = RecordingContext("feed", clock=LiveClock())
    decoder = BinanceDecoder(ctx, "BINANCE")
    raw = (
        '{"e":"aggTrade","E":1,"s":"SOLUSDT","a":7,"p":"20.5","q":"3","f":1,"l":2,"T":5,"m":false}'
    )
    tick = decoder.decode(raw.encode(), 99)
    assert isinstance(tick, Tick) and (tick.symbol, tick.price, tick.trade_id) == (
        "SOLUSDT",
        20.5,
        7,
    )
    assert decoder.decode(b"[1, 2]", 99) is None and decoder.stats.parse_errors == 1
    assert (
        decoder.decode(b'{"e":"trade","s":"X","t":1,"p":"-1","q":"1","T":1,"m":false}', 9) is None
    )
    assert decoder.stats.parse_errors == 2  # a negative price is refused


def test_stream_names_expand_kinds_per_symbol_and_keep_full_names() -> None:
    assert stream_names(("BTCUSDT", "ETHUSDT"), ("trade", "nknusdt@depth@100ms")) == [
        "btcusdt@trade", "ethusdt@trade", "nknusdt@depth@100ms",
    ]  # fmt: skip


def test_backoff_doubles_up_to_the_cap_with_jitter() -> None:
    import random

    rng = random.Random(1)
    delays = [backoff_delay(a, 0.5, 4.0, rng) for a in range(6)]
    ceilings = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert len(set(delays)) == len(delays)  # jittered: no two alike
