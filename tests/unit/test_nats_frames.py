"""Core egress frames: runs under one subject root, in publication order, decoded back whole."""

from __future__ import annotations

from pathlib import Path

import msgspec

from levibot.bus._egress import Encoding
from levibot.bus._frame import FrameDecoder, is_frame
from levibot.messages import CORE_TYPES, Codec, Message
from levibot.metrics import Metrics
from tests.fuzz.support import RecordingLog

CODEC = Codec(CORE_TYPES)
GOLDEN = Path(__file__).parents[1] / "golden"


def golden(name: str, **changes: object) -> Message:
    msg = CODEC.decode((GOLDEN / f"{name}.msgpack").read_bytes())
    return msgspec.structs.replace(msg, **changes) if changes else msg


def encoding() -> Encoding:
    errors = Metrics().counter("errors_total", "")
    return Encoding(CODEC, node="n1", ns="ns.", errors=errors, log=RecordingLog())


def test_runs_under_one_root_share_a_frame_and_keep_the_order_of_publication() -> None:
    msgs = [
        golden("Tick", symbol="AAA"), golden("Tick", symbol="BBB"),  # one run: ticks
        golden("Bar"),  # another root
        golden("Tick", symbol="CCC"),  # ticks again: a new run, after the bar
        golden("PortfolioSnapshot"), golden("PortfolioSnapshot"),  # bare root: its own subject
    ]  # fmt: skip
    frames = encoding().core(msgs)
    assert [(subject, count) for subject, _, count in frames] == [
        ("ns.lb.md.tick.binance.AAA", 2),
        ("ns.lb.md.bar.1h.BTCUSDT", 1),
        ("ns.lb.md.tick.binance.CCC", 1),
        ("ns.lb.portfolio", 2),
    ]
    decoder = FrameDecoder(CODEC)
    back = []
    for _, data, _ in frames:
        assert is_frame(data)
        origin, _, _, decoded = decoder.decode(data)
        assert origin == "n1"
        back += decoded
    assert back == msgs


def test_frames_number_their_messages_in_a_series_per_subject() -> None:
    enc = encoding()
    decoder = FrameDecoder(CODEC)
    firsts = []
    for _ in range(3):
        [(_, data, _)] = enc.core([golden("Tick", symbol="AAA")] * 2)
        _, incarnation, first, _ = decoder.decode(data)
        firsts.append(first)
    assert firsts == [1, 3, 5] and incarnation == enc.sequencer.incarnation


def test_an_unencodable_message_is_left_out_and_the_rest_still_go() -> None:
    enc = encoding()
    bad = golden("Tick", symbol="BBB", price=10**30)  # too wide for msgpack
    frames = enc.core([golden("Tick", symbol="AAA"), bad, golden("Tick", symbol="CCC")])
    assert [count for _, _, count in frames] == [2]
    assert enc.m_errors.value == 1 and enc.log.events == ["nats.encode_failed"]
