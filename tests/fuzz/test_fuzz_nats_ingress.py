"""Fuzz the NATS ingress decode (headers + payload): garbage is counted and dropped, never raised.

``NatsMirror._decode`` is the one function between a NATS message and an actor's mailbox; it
needs no connection, so it is fuzzed directly on ``nats.aio.msg.Msg`` objects.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
from hypothesis import given
from hypothesis import strategies as st
from nats.aio.msg import Msg

from levibot.bus._nats import ORIGIN, NatsMirror
from levibot.messages import CORE_TYPES, Codec, Message
from levibot.metrics import Metrics
from levibot.partition import Partition
from levibot.settings import NatsConfig
from tests.fuzz.support import RecordingLog, budget

GOLDEN = sorted((Path(__file__).parents[1] / "golden").glob("*.msgpack"))
NODE = "node-a"
CODEC = Codec(CORE_TYPES)


def mirror(partition: Partition) -> NatsMirror:
    return NatsMirror(
        NatsConfig(),
        node=NODE,
        consumer_name="fuzz",
        codec=CODEC,
        metrics=Metrics(),
        log=RecordingLog(),
        partition=partition,
    )


@st.composite
def payloads(draw: st.DrawFn) -> bytes:
    """A golden message, one mutated, one with a field replaced, or random bytes."""
    golden = draw(st.sampled_from(GOLDEN)).read_bytes()
    kind = draw(st.sampled_from(["golden", "mutated", "field", "random"]))
    if kind == "golden":
        return golden
    if kind == "mutated":
        at = draw(st.integers(0, len(golden) - 1))
        return golden[:at] + draw(st.binary(max_size=4)) + golden[at + 1 :]
    if kind == "field":
        fields: dict[str, Any] = msgspec.msgpack.decode(golden)
        name = draw(st.sampled_from(sorted(fields)))
        fields[name] = draw(st.none() | st.integers() | st.floats() | st.text(max_size=10))
        try:
            return msgspec.msgpack.encode(fields)
        except OverflowError:  # an int wider than msgpack allows: not sendable anyway
            return golden
    return draw(st.binary(max_size=200))


header_values = st.text(max_size=20) | st.sampled_from([NODE, "node-b", ""])
headers = st.none() | st.dictionaries(
    st.sampled_from([ORIGIN, "Nats-Msg-Id", "X-Other"]) | st.text(max_size=10),
    header_values,
    max_size=3,
)


@budget(300)
@given(
    data=payloads(),
    hdrs=headers,
    subject=st.text(max_size=30),
    wanted=st.sets(st.sampled_from(CORE_TYPES), min_size=1).map(tuple),
    count=st.integers(1, 4),
    index=st.integers(0, 3),
)
def test_ingress_decode_returns_a_wanted_owned_message_or_none(
    data: bytes,
    hdrs: dict[str, str] | None,
    subject: str,
    wanted: tuple[type[Message], ...],
    count: int,
    index: int,
) -> None:
    partition = Partition(index % count, count)
    m = mirror(partition)
    msg = m._decode(Msg(None, subject=subject, data=data, headers=hdrs), wanted)
    bad = m.m_bad.value
    assert bad in (0, 1)
    assert m.log.events == ["nats.bad_message"] * int(bad)  # each bad one counted and logged
    if msg is not None:
        assert isinstance(msg, wanted)
        assert bad == 0
        assert not (hdrs and hdrs.get(ORIGIN) == NODE)  # our own messages never echo
        symbol = getattr(msg, "symbol", None)
        assert symbol is None or partition.owns(symbol)
