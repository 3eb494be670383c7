"""Fuzz the Binance frame decoder: a valid market-data message or None, never an exception.

Frames come from random JSON, from the format fixture and from the real recordings in
``../shared/data/binance`` (read in place), mutated byte by byte or field by field. Whatever
the decoder yields must be sane: finite, positive prices, non-negative sizes, int64 ids and
times, subject-safe symbols, and bytes the bus codec can encode.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from levibot.clock import LiveClock
from levibot.feeds._binance_decode import BinanceDecoder
from levibot.messages import CORE_TYPES, Bar, Codec, Quote, Tick
from levibot.testing import RecordingContext
from tests.fuzz.support import RecordingLog, budget

FIXTURE = Path(__file__).parents[1] / "fixtures" / "binance" / "combined.ws"
RECORDINGS = Path(__file__).parents[2] / ".." / "shared" / "data" / "binance"  # not in the repo
CODEC = Codec(CORE_TYPES)
INT64 = (-(2**63), 2**63 - 1)
RECV_NS = 1_700_000_000_000_000_000


def frames_of(path: Path) -> list[str]:
    """Return the JSON frames of a recording (``URL <-> ts`` line, then ``ts: json`` lines)."""
    lines = path.read_text().splitlines()[1:]
    return [line.partition(": ")[2] for line in lines if line.strip()]


FIXTURE_FRAMES = frames_of(FIXTURE)
RECORDED_FRAMES = (
    [f for p in sorted(RECORDINGS.glob("*.ws.1.0")) for f in frames_of(p)]
    if RECORDINGS.is_dir()
    else []
)


def templates() -> list[dict[str, Any]]:
    """Return the fixture's combined-stream frames that are JSON (one of each kind), to edit."""
    out = []
    for frame in FIXTURE_FRAMES:
        try:
            out.append(json.loads(frame))
        except ValueError:  # the fixture's truncated frame
            continue
    return out


TEMPLATES = templates()


def decoder() -> BinanceDecoder:
    ctx = RecordingContext("feed", clock=LiveClock())
    ctx.log = RecordingLog()
    return BinanceDecoder(ctx, "BINANCE")


def assert_sane(msg: object) -> None:
    """Fail unless ``msg`` is None or a market-data message every consumer can trust."""
    if msg is None:
        return
    assert isinstance(msg, Tick | Quote | Bar), msg
    ints = [msg.ts_event, msg.ts_init, msg.ts_ingress]
    if isinstance(msg, Tick):
        assert math.isfinite(msg.price) and msg.price > 0, msg
        assert math.isfinite(msg.size) and msg.size >= 0, msg
        ints.append(msg.trade_id)
    elif isinstance(msg, Quote):
        for value in (msg.bid, msg.bid_size, msg.ask, msg.ask_size):
            assert math.isfinite(value) and value >= 0, msg
    else:
        for value in (msg.open, msg.high, msg.low, msg.close):
            assert math.isfinite(value) and value > 0, msg
        assert math.isfinite(msg.volume) and msg.volume >= 0, msg
        assert msg.start < msg.ts_event, msg  # a bar closes after it opens
        ints += [msg.start, msg.trades]
    assert all(INT64[0] <= i <= INT64[1] for i in ints), msg
    tokens = msg.subject().split(".")
    assert len(tokens) == 5 and all(tokens), msg.subject()  # lb.md.<kind>.<a>.<b>
    assert not any(c.isspace() or c in "*>" or ord(c) < 32 for c in msg.subject()), msg
    assert CODEC.decode(CODEC.encode(msg)) == msg or msg != msg  # encodable; NaN never equal


def decode_all(frames: list[str | bytes]) -> None:
    d = decoder()
    for frame in frames:
        assert_sane(d.decode(frame, RECV_NS))


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
    | st.sampled_from(["trade", "aggTrade", "bookTicker", "kline", "btcusdt@trade"]),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(["stream", "data", "e", "s", "k"]) | st.text(max_size=3),
                      inner, max_size=5),
    max_leaves=15,
)  # fmt: skip

nasty_values = st.one_of(
    st.sampled_from(
        ["NaN", "nan", "Infinity", "-Infinity", "inf", "-inf", "1e999", "-1e999", "1e308",
         "-0", "0", "-1", "", " 1", "0x10", "1_000", "١٢٣", "null", "true", "1.5e-320"]
    ),
    st.sampled_from([1e308, -1e308, 5e-324, 0.0, -0.0, -1, 2**63, 2**64, -(2**63) - 1, 10**30]),
    st.integers(),
    st.floats(allow_nan=False),
    st.booleans(),
    st.none(),
    st.text(max_size=12),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)  # fmt: skip


@budget(300)
@given(value=json_values, as_bytes=st.booleans())
def test_random_json_yields_a_sane_message_or_none(value: Any, as_bytes: bool) -> None:
    text = json.dumps(value)
    decode_all([text.encode() if as_bytes else text])


@budget(400)
@given(
    template=st.sampled_from(TEMPLATES),
    edits=st.lists(
        st.tuples(st.booleans(), st.integers(0, 40), st.booleans(), nasty_values),
        min_size=1, max_size=3,
    ),
    combined=st.booleans(),
)  # fmt: skip
def test_frames_with_fields_replaced_or_missing_yield_sane_messages(
    template: dict[str, Any], edits: list[tuple[bool, int, bool, Any]], combined: bool
) -> None:
    event = json.loads(json.dumps(template["data"]))  # a deep copy
    for in_kline, key, drop, value in edits:
        target = event["k"] if in_kline and isinstance(event.get("k"), dict) else event
        if not target:  # an earlier edit emptied it
            continue
        name = sorted(target)[key % len(target)]
        if drop:
            del target[name]
        else:
            target[name] = value
    frame = {"stream": template["stream"], "data": event} if combined else event
    decode_all([json.dumps(frame)])


@budget(300)
@given(
    frames=st.lists(st.sampled_from(FIXTURE_FRAMES), min_size=1, max_size=6),
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.binary(max_size=4)), max_size=4),
)
def test_mutated_fixture_frames_yield_sane_messages(
    frames: list[str], flips: list[tuple[int, bytes]]
) -> None:
    mutated: list[str | bytes] = []
    for i, frame in enumerate(frames):
        data = bytearray(frame.encode())
        for at, new in flips[i % 2 :: 2]:  # the mutations spread over the frames
            at %= len(data)
            data[at : at + 1] = new
        mutated.append(bytes(data))
    decode_all(mutated)


@pytest.mark.skipif(not RECORDED_FRAMES, reason=f"{RECORDINGS} is absent (not mounted)")
@budget(300)
@given(
    start=st.integers(0, 10**6),
    length=st.integers(1, 30),
    flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 10**6), st.binary(max_size=3)),
                   max_size=6),
    truncate=st.none() | st.integers(0, 400),
)  # fmt: skip
def test_mutated_recorded_frames_yield_sane_messages(
    start: int, length: int, flips: list[tuple[int, int, bytes]], truncate: int | None
) -> None:
    start %= len(RECORDED_FRAMES)
    frames: list[str | bytes] = [f.encode() for f in RECORDED_FRAMES[start : start + length]]
    for which, at, new in flips:
        data = bytearray(frames[which % len(frames)])
        at %= len(data)
        data[at : at + 1] = new
        frames[which % len(frames)] = bytes(data)
    if truncate is not None:
        frames[-1] = frames[-1][:truncate]
    decode_all(frames)


@pytest.mark.skipif(not RECORDED_FRAMES, reason=f"{RECORDINGS} is absent (not mounted)")
def test_every_recorded_frame_decodes_sanely_and_the_handled_ones_yield_messages() -> None:
    d = decoder()
    out = [d.decode(frame, RECV_NS) for frame in RECORDED_FRAMES]
    for msg in out:
        assert_sane(msg)
    assert d.stats.parse_errors == 0
    assert sum(isinstance(m, Quote) for m in out) > 100  # the fuzzing above starts from these
    assert sum(isinstance(m, Tick) for m in out) > 10


# -- regressions: inputs the fuzzing found, pinned ----------------------------------------

DEEP = 100_000  # nesting past msgspec's recursion bound on 3.11 (1,000) and 3.13 (10,000)


@pytest.mark.parametrize(
    "frame",
    [
        # RecursionError out of msgspec, uncaught: the feed crashed on a deeply nested frame.
        '{"stream":"btcusdt@trade","data":{"e":"trade","x":' + "[" * DEEP + "]" * DEEP + "}}",
        '{"zz":' + "[" * DEEP + "]" * DEEP + "}",
        # A 30-digit trade time became a 36-digit ts_event: msgpack refused it on egress.
        '{"e":"trade","s":"BTCUSDT","t":1,"p":"1","q":"1","T":1000000000000000000000000000000,'
        '"m":false}',
        # A negative id and time were taken as they came.
        '{"e":"trade","s":"BTCUSDT","t":-5,"p":"1","q":"1","T":-1,"m":false}',
        # Symbols that are no NATS subject token (lb.md.tick.BINANCE.<symbol>).
        '{"e":"trade","s":"BTC USDT","t":1,"p":"1","q":"1","T":1,"m":false}',
        '{"e":"trade","s":"BTC.USDT","t":1,"p":"1","q":"1","T":1,"m":false}',
        '{"e":"trade","s":"BTC\\r\\nPUB x 0","t":1,"p":"1","q":"1","T":1,"m":false}',
        '{"e":"aggTrade","s":">","a":1,"p":"1","q":"1","T":1,"m":false}',
        '{"e":"trade","s":"","t":1,"p":"1","q":"1","T":1,"m":false}',
        # A closed kline that ends before it starts, and one whose interval is a subject path.
        '{"e":"kline","s":"BTCUSDT","k":{"t":60000,"T":59999,"i":"1m","o":"1","h":"1",'
        '"l":"1","c":"1","v":"1","n":1,"x":true}}',
        '{"e":"kline","s":"BTCUSDT","k":{"t":0,"T":59999,"i":"1m.x","o":"1","h":"1",'
        '"l":"1","c":"1","v":"1","n":1,"x":true}}',
        # Already refused before the fuzzing, pinned: non-finite or negative numbers as strings
        # (strict=False converts strings to floats).
        '{"e":"trade","s":"BTCUSDT","t":1,"p":"NaN","q":"1","T":1,"m":false}',
        '{"e":"trade","s":"BTCUSDT","t":1,"p":"1","q":"Infinity","T":1,"m":false}',
        '{"e":"bookTicker","s":"BTCUSDT","u":1,"b":"-1","B":"1","a":"1","A":"1"}',
    ],
)
def test_regression_bad_frames_are_counted_as_parse_errors(frame: str) -> None:
    d = decoder()
    assert d.decode(frame, RECV_NS) is None
    assert d.stats.parse_errors == 1
