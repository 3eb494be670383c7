"""Fuzz the core-NATS frame decode (``levibot.bus._frame``, ``Ingress.decode_frame``).

Frames built from the golden messages, then mutated, truncated, or with a message replaced by
garbage: the ingress returns only wanted, owned messages, counts and logs each bad message or
bad frame once, and never raises. An intact frame gives back exactly its wanted, owned messages.
"""

from __future__ import annotations

from pathlib import Path

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from levibot.bus._frame import FrameEncoder
from levibot.bus._ingress import Ingress
from levibot.bus._sequence import Sequencer
from levibot.messages import CORE_TYPES, Codec, Message
from levibot.metrics import Metrics
from levibot.partition import Partition
from levibot.settings import NatsConfig
from tests.fuzz.support import RecordingLog, budget

GOLDEN = sorted((Path(__file__).parents[1] / "golden").glob("*.msgpack"))
CODEC = Codec(CORE_TYPES)
MESSAGES = [CODEC.decode(p.read_bytes()) for p in GOLDEN]


def ingress(partition: Partition, node: str = "node-a") -> Ingress:
    return Ingress(
        NatsConfig(), node=node, consumer_name="fuzz", codec=CODEC, metrics=Metrics(),
        log=RecordingLog(), partition=partition, on_ok=lambda raw: None, on_fail=lambda d: None,
    )  # fmt: skip


def owned(msg: Message, partition: Partition) -> bool:
    symbol = getattr(msg, "symbol", None)
    return symbol is None or partition.owns(symbol)


@budget(300)
@given(
    msgs=st.lists(st.sampled_from(MESSAGES), min_size=1, max_size=6),
    wanted=st.sets(st.sampled_from(CORE_TYPES), min_size=1).map(tuple),
    count=st.integers(1, 4),
    index=st.integers(0, 3),
)
def test_an_intact_frame_gives_back_its_wanted_owned_messages_in_order(
    msgs: list[Message], wanted: tuple[type[Message], ...], count: int, index: int
) -> None:
    partition = Partition(index % count, count)
    ing = ingress(partition)
    data = FrameEncoder().encode("node-b", "inc1", 1, msgs)
    out = ing.decode_frame(data, "lb.x", wanted)
    assert out == [m for m in msgs if isinstance(m, wanted) and owned(m, partition)]
    assert ing.m_bad.value == 0 and ing.log.events == []
    # Our own frame never echoes.
    assert ingress(partition, node="node-b").decode_frame(data, "lb.x", wanted) == []


@budget(300)
@given(
    msgs=st.lists(st.sampled_from(MESSAGES), min_size=1, max_size=4),
    kind=st.sampled_from(["mutated", "truncated", "garbage_message", "random", "header"]),
    at=st.integers(0, 10_000),
    junk=st.binary(max_size=8),
    wanted=st.sets(st.sampled_from(CORE_TYPES), min_size=1).map(tuple),
)
def test_a_damaged_frame_costs_its_bad_messages_only_and_never_raises(
    msgs: list[Message],
    kind: str,
    at: int,
    junk: bytes,
    wanted: tuple[type[Message], ...],
) -> None:
    good = FrameEncoder().encode("node-b", "inc1", 1, msgs)
    if kind == "mutated":
        i = at % len(good)
        data = good[:i] + junk + good[i + 1 :]
    elif kind == "truncated":
        data = good[: at % len(good)]
    elif kind == "garbage_message":  # one message replaced by bytes that are no message
        raws = [CODEC.encode(m) for m in msgs]
        raws[at % len(raws)] = msgspec.msgpack.encode({"type": "levibot.Nope", "x": junk})
        data = msgspec.msgpack.encode(("node-b", "inc1", 1, [msgspec.Raw(r) for r in raws]))
    elif kind == "header":  # the frame's own fields of the wrong types
        data = msgspec.msgpack.encode((1, junk, "x", []))
    else:
        data = b"\x94" + junk
    ing = ingress(Partition())
    out = ing.decode_frame(data, "lb.x", wanted)
    bad = int(ing.m_bad.value)
    assert ing.log.events == ["nats.bad_message"] * bad  # each bad one counted and logged
    assert all(isinstance(m, wanted) for m in out)
    assert len(out) + bad <= max(len(msgs), 1) or kind == "mutated"
    if kind == "garbage_message":
        assert bad == 1
        assert out == [
            m for i, m in enumerate(msgs) if i != at % len(msgs) and isinstance(m, wanted)
        ]


def test_frames_carry_the_sequence_and_a_lost_frame_counts_its_messages() -> None:
    seq = Sequencer({})
    enc = FrameEncoder()
    frames = []
    for size in (3, 2, 4, 1):  # numbers 1-3, 4-5, 6-9, 10
        frames.append(
            enc.encode("node-b", seq.incarnation, seq.take("lb.bar", size), MESSAGES[:size])
        )
    ing = ingress(Partition())
    for data in (frames[0], frames[2], frames[3]):  # the second frame is lost on the way
        ing.decode_frame(data, "lb.bar", tuple(CORE_TYPES))
    assert ing.m_gaps.value == 2
    assert ing.decode_frame(frames[1], "lb.bar", tuple(CORE_TYPES))  # late: delivered, no gap
    assert ing.m_gaps.value == 2
