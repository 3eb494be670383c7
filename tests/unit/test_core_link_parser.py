"""``CoreLink``'s reader (``levibot.bus._link``) on byte streams cut anywhere, and its writes.

The server writes whatever it has, so a message, a header block or a control line can be split
across reads at any byte. Whatever the cuts, the callbacks see the same messages (with their
reply subjects); a PING is
answered; a stream that is not the NATS protocol drops the connection (to reconnect) instead of
raising out of the read. What a loop turn publishes goes out in one write, or at once with
``write_now``. The real server is in tests/integration/test_core_link.py.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from levibot.bus._link import CoreLink, LinkDown, encode_headers


class Transport:
    """What the reader writes back and whether it dropped the connection."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def abort(self) -> None:
        self.aborted = True

    def get_write_buffer_size(self) -> int:
        return 0


def link() -> tuple[CoreLink, Transport, list[Any]]:
    got: list[Any] = []
    lk = CoreLink("nats://127.0.0.1:4222")
    lk.transport = transport = Transport()
    lk.connected = True
    lk._subs[1] = ("a.>", lambda s, r, d, h: got.append((s, r, d, h)))
    lk._subs[2] = ("b", lambda s, r, d, h: got.append((s, r, d, h)))
    lk._send = lambda command: transport.write(command)  # type: ignore[method-assign]
    return lk, transport, got


messages = st.lists(
    st.tuples(
        st.sampled_from([("a.x", 1), ("b", 2), ("c", 9)]),  # sid 9: not subscribed (any more)
        st.binary(max_size=64),
        st.none() | st.dictionaries(st.sampled_from(["K", "Origin", "X-Y"]), st.text(
            alphabet=st.characters(codec="ascii", exclude_characters="\r\n"), max_size=8,
        ).map(str.strip), max_size=2),
        st.booleans(),  # with a reply subject
    ),
    max_size=12,
)  # fmt: skip


def stream(msgs: list[Any]) -> tuple[bytes, list[Any]]:
    """The server's bytes for ``msgs`` (with a PING and an +OK among them), and what the
    callbacks should see."""
    out, expected = [b"INFO {}\r\n", b"+OK\r\n"], []
    for (subject, sid), payload, headers, reply in msgs:
        r = b" _INBOX.1" if reply else b""
        if headers is None:
            out.append(
                b"MSG %s %d%s %d\r\n%s\r\n" % (subject.encode(), sid, r, len(payload), payload)
            )
        else:
            block = encode_headers(headers)
            size = len(block) + len(payload)
            out.append(b"HMSG %s %d%s %d %d\r\n%s%s\r\n"
                       % (subject.encode(), sid, r, len(block), size, block, payload))  # fmt: skip
        out.append(b"PING\r\n")
        if sid != 9:
            expected.append((subject, r.decode().strip(), payload,
                             {k.strip(): v for k, v in headers.items()}
                             if headers is not None else None))  # fmt: skip
    return b"".join(out), expected


@given(msgs=messages, cuts=st.lists(st.integers(0, 10_000), max_size=20))
def test_any_cut_of_the_stream_gives_the_same_messages(msgs: list[Any], cuts: list[int]) -> None:
    data, expected = stream(msgs)
    lk, transport, got = link()
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    for start, end in itertools.pairwise(points):
        lk.data_received(data[start:end])
    assert got == expected
    assert transport.written.count(b"PONG\r\n") == len(msgs)  # every PING answered
    assert not transport.aborted and not lk._buf


GARBAGE = [b"MSG a 1 notanumber\r\n", b"MSG\r\n", b"HMSG a 1 x y\r\n", b"\x00\xff\r\n"]


@given(garbage=st.sampled_from(GARBAGE))
def test_a_stream_that_is_not_nats_drops_the_connection(garbage: bytes) -> None:
    lk, transport, got = link()
    lk.data_received(garbage + b"MSG b 2 1\r\nx\r\n")
    assert transport.aborted and got == [] and not lk._buf


def test_a_turns_publishes_go_out_in_one_write_and_write_now_sends_at_once() -> None:
    async def go() -> list[bytes]:
        lk = CoreLink("nats://127.0.0.1:4222")
        lk.transport = transport = Transport()
        lk._alive = lk.connected = True
        await lk.publish("a", b"1")
        await lk.publish("b", b"22", reply="r", headers={"K": "v"})
        assert transport.written == []  # not before the loop turns
        await asyncio.sleep(0)
        await lk.publish("c", b"3")
        lk.write_now()  # the core egress, its batch published
        written = list(transport.written)
        await asyncio.sleep(0)  # the write scheduled for the turn finds nothing left
        assert transport.written == written
        lk.connected = False
        with pytest.raises(LinkDown):
            await lk.publish("d", b"4")
        assert lk.dropped == 1
        return written

    assert asyncio.run(go()) == [
        b"PUB a 1\r\n1\r\nHPUB b r 18 20\r\nNATS/1.0\r\nK: v\r\n\r\n22\r\n",
        b"PUB c 1\r\n3\r\n",
    ]
