"""``CoreLink`` (``levibot.bus._link``), the lean core connection, against a real nats-server.

Against the shared server: messages in order across reads (payloads from empty to 200 KB),
headers both ways with nats-py on the other end (the protocol's HPUB/HMSG as a reference client
speaks them), wildcard subscriptions, unsubscribe, a bad header name. Against a private server
on a free port: a server that goes away and comes back (publishes refused while it is down, the
subscription made again on reconnect), and one that stops answering pings.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest

from levibot.bus._link import CoreLink, LinkDown, encode_headers, parse_headers
from levibot.testenv import NATS_URL
from levibot.testing import NatsServer, free_port
from tests.fuzz.support import RecordingLog

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

Got = list[tuple[str, bytes, dict[str, str] | None]]


def subject() -> str:
    return f"lblink.{uuid.uuid4().hex[:8]}"


async def until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.01)


def collector() -> tuple[Got, Any]:
    got: Got = []
    return got, lambda s, _reply, data, headers: got.append((s, data, headers))


async def test_messages_arrive_in_order_whole_across_reads() -> None:
    sub, pub = await CoreLink(NATS_URL).connect(), await CoreLink(NATS_URL).connect()
    try:
        name = subject()
        got, cb = collector()
        sub.subscribe(name, cb)
        await sub.flush()
        payloads = [b"", b"x", os.urandom(200_000), *(b"%d" % i for i in range(2_000))]
        for p in payloads:
            await pub.publish(name, p)
        await until(lambda: len(got) == len(payloads))
        assert [g[1] for g in got] == payloads
        assert {g[0] for g in got} == {name} and all(g[2] is None for g in got)
    finally:
        await sub.close()
        await pub.close()


async def test_headers_both_ways_with_nats_py_on_the_other_end() -> None:
    link = await CoreLink(NATS_URL).connect()
    nc = await nats.connect(NATS_URL)
    try:
        to_link, to_py = subject(), subject()
        got: Got = []
        replies: list[str] = []

        def cb(s: str, reply: str, data: bytes, headers: Any) -> None:
            got.append((s, data, headers))
            replies.append(reply)

        link.subscribe(to_link + ".>", cb)  # a wildcard subscription
        await link.flush()
        seen: list[Any] = []

        async def on_py(msg: Any) -> None:
            seen.append(msg)

        await nc.subscribe(to_py, cb=on_py)
        await nc.flush()
        await nc.publish(
            to_link + ".a.b", b"payload", reply="r.1", headers={"Origin": "n1", "X-Seq": "7"}
        )
        await nc.publish(to_link + ".c", b"plain")
        await link.publish(to_py, b"back", headers={"Origin": "n2", "traceparent": "00-ab-cd-01"})
        await until(lambda: len(got) == 2 and len(seen) == 1)
        assert got[0] == (to_link + ".a.b", b"payload", {"Origin": "n1", "X-Seq": "7"})
        assert got[1] == (to_link + ".c", b"plain", None)
        assert replies == ["r.1", ""]
        assert seen[0].data == b"back"
        assert seen[0].headers == {"Origin": "n2", "traceparent": "00-ab-cd-01"}
    finally:
        await link.close()
        await nc.close()


async def test_unsubscribe_stops_delivery_and_bad_input_is_refused() -> None:
    link = await CoreLink(NATS_URL).connect()
    pub = await CoreLink(NATS_URL).connect()  # no echo: a link never gets its own publishes
    try:
        name = subject()
        got, cb = collector()
        sid = link.subscribe(name, cb)
        await link.flush()
        await pub.publish(name, b"1")
        await link.publish(name, b"own")  # not echoed
        await until(lambda: len(got) == 1)
        link.unsubscribe(sid)
        await link.flush()
        await pub.publish(name, b"2")
        await pub.flush()
        await asyncio.sleep(0.05)
        assert [g[1] for g in got] == [b"1"]
        with pytest.raises(ValueError, match="header name"):
            await link.publish(name, b"x", headers={"Bad Name": "v"})
        with pytest.raises(ValueError, match="max_payload"):
            await link.publish(name, b"x" * (link.max_payload + 1))
    finally:
        await link.close()
        await pub.close()
    with pytest.raises(ValueError, match="scheme"):
        CoreLink("http://127.0.0.1:4222")


async def test_a_callback_that_raises_does_not_break_the_connection() -> None:
    link, pub = await CoreLink(NATS_URL).connect(), await CoreLink(NATS_URL).connect()
    try:
        name = subject()
        got: list[bytes] = []

        def cb(_s: str, _r: str, data: bytes, _h: Any) -> None:
            if data == b"boom":
                raise RuntimeError("a bug in a handler")
            got.append(data)

        link.subscribe(name, cb)
        await link.flush()
        for data in (b"a", b"boom", b"b"):
            await pub.publish(name, data)
        await until(lambda: got == [b"a", b"b"])
        assert link.connected
    finally:
        await link.close()
        await pub.close()


async def test_a_server_that_goes_away_and_comes_back(tmp_path: Path) -> None:
    server = NatsServer(tmp_path / "js")
    server.start()
    events: list[str] = []
    link = await CoreLink(
        server.url, reconnect_wait_s=0.05, on_disconnect=lambda: events.append("down"),
        on_reconnect=lambda: events.append("up"),
    ).connect()  # fmt: skip
    try:
        name = subject()
        got, cb = collector()
        link.subscribe(name, cb)
        await link.flush()
        other = await nats.connect(server.url, max_reconnect_attempts=0)
        await other.publish(name, b"before")
        await until(lambda: len(got) == 1)
        await other.close()
        server.stop()
        await until(lambda: not link.connected)
        with pytest.raises(LinkDown):
            await link.publish(name, b"while down")  # at most once: refused, counted
        assert link.dropped == 1
        server.start()  # the same port
        await until(lambda: link.connected, 15)
        await link.flush()  # the subscription was made again with the CONNECT
        other = await nats.connect(server.url, max_reconnect_attempts=0)
        await other.publish(name, b"after")
        await until(lambda: len(got) == 2)
        await other.close()
        assert [g[1] for g in got] == [b"before", b"after"]
        assert events == ["down", "up"]
    finally:
        await link.close()
        server.stop()


async def test_paused_reads_are_no_verdict_on_the_server() -> None:
    """While the link's reads are paused (a full mailbox holding a backlog back), no PONG can be
    read: the keep-alive must not count its pings as unanswered and drop a live server. Once
    reading again, the pongs are read and the connection carries on."""
    events: list[str] = []
    link = await CoreLink(
        NATS_URL, ping_interval_s=0.05, max_outstanding_pings=2,
        on_disconnect=lambda: events.append("down"),
    ).connect()  # fmt: skip
    pub = await CoreLink(NATS_URL).connect()
    try:
        name = subject()
        got, cb = collector()
        link.subscribe(name, cb)
        await link.flush()
        link.pause_reading()
        await pub.publish(name, b"while paused")
        await asyncio.sleep(0.5)  # ten ping intervals
        assert link.connected and events == [] and got == []
        link.resume_reading()
        await until(lambda: len(got) == 1)
        await link.flush()
        assert events == []
    finally:
        await link.close()
        await pub.close()


async def test_a_server_that_stops_answering_is_dropped_and_reconnected(tmp_path: Path) -> None:
    server = NatsServer(tmp_path / "js")
    server.start()
    events: list[str] = []
    link = await CoreLink(
        server.url, ping_interval_s=0.1, max_outstanding_pings=2, reconnect_wait_s=0.05,
        on_disconnect=lambda: events.append("down"), on_reconnect=lambda: events.append("up"),
    ).connect()  # fmt: skip
    try:
        assert server.proc is not None
        await asyncio.sleep(0.35)  # pings answered: still the first connection
        assert events == []
        server.proc.send_signal(19)  # SIGSTOP: the socket stays open, nothing answers
        try:
            await until(lambda: "down" in events, 10)
        finally:
            server.proc.send_signal(18)  # SIGCONT
        await until(lambda: events == ["down", "up"], 15)
        await link.flush()
    finally:
        await link.close()
        server.stop()


async def test_connecting_to_nothing_fails_clearly() -> None:
    with pytest.raises((ConnectionError, OSError)):
        await CoreLink(f"nats://127.0.0.1:{free_port()}", connect_timeout_s=1).connect()


def test_the_header_block_round_trips_and_reads_a_status_line() -> None:
    block = encode_headers({"A": "1", "B": "two words", "C": "line\r\nbreak"})
    assert block.startswith(b"NATS/1.0\r\n") and block.endswith(b"\r\n\r\n")
    assert parse_headers(block[:-4]) == {"A": "1", "B": "two words", "C": "line  break"}
    assert parse_headers(b"NATS/1.0 503") == {"Status": "503"}
    status = parse_headers(b"NATS/1.0 408 Request Timeout\r\nX: y")
    assert status == {"Status": "408", "Description": "Request Timeout", "X": "y"}


async def test_a_mirror_on_the_link_delivers_every_bar_in_order_to_a_slow_actor() -> None:
    """Node to node over the link (``[nats] core_link``): bars (which block, never conflate)
    into a mailbox of 2 whose reader is slow. The link's reads pause while a full mailbox holds
    bars back, so none is lost or reordered, and the server never sees a slow consumer."""
    from levibot.bus._local import LocalBus
    from levibot.bus._mailbox import Mailbox
    from levibot.bus._nats import NatsMirror
    from levibot.messages import Bar, Codec
    from levibot.metrics import Metrics
    from levibot.settings import NatsConfig

    ns = f"link{uuid.uuid4().hex[:8]}"
    config = NatsConfig(url=NATS_URL, namespace=ns, stream=ns.upper(), core_link=True)

    def mirror(node: str) -> NatsMirror:
        return NatsMirror(
            config, node=node, consumer_name=f"{ns}-{node}", codec=Codec([Bar]),
            metrics=Metrics(), log=RecordingLog(),
        )  # fmt: skip

    sender, receiver = mirror("a"), mirror("b")
    await sender.connect()
    await receiver.connect()
    assert sender.link is not None and receiver.ingress.link is receiver.link
    bus = LocalBus()
    box = Mailbox("slow", 2)
    bus.subscribe(box, (Bar,))
    await receiver.start_ingress([Bar], bus.deliver_remote, bus.deliver_remote_nowait)
    count, got, held_seen = 400, [], 0

    async def slow_actor() -> None:
        nonlocal held_seen
        while len(got) < count:
            msg, _done = await box.get()
            got.append(msg.open)
            held_seen = max(held_seen, len(receiver.ingress._held))
            if len(got) % 20 == 0:
                await asyncio.sleep(0.01)

    egress = asyncio.ensure_future(sender.run_egress())
    actor = asyncio.ensure_future(slow_actor())
    try:
        for i in range(count):
            bar = Bar(
                ts_event=i + 1, ts_init=i + 1, symbol="BTCUSDT", venue="SYNTH", timeframe="1s",
                start=i, open=float(i), high=float(i), low=float(i), close=float(i), volume=1.0,
            )  # fmt: skip
            await sender.enqueue(bar)
            if i % 50 == 49:
                await asyncio.sleep(0)
        await asyncio.wait_for(actor, 30)
    finally:
        await sender.close()
        await egress
        await receiver.stop_ingress()
        await sender.drain()
        await receiver.drain()
    assert got == [float(i) for i in range(count)]
    assert held_seen > 0  # the held path, not only the fast one, carried bars
    assert box.dropped == 0 and receiver.ingress.m_received.value == count


async def test_the_mirror_uses_the_link_by_default_but_not_in_a_split_replay() -> None:
    from levibot.bus._nats import NatsMirror
    from levibot.messages import Bar, Codec
    from levibot.metrics import Metrics
    from levibot.settings import NatsConfig

    ns = f"link{uuid.uuid4().hex[:8]}"
    base = NatsConfig(url=NATS_URL, namespace=ns, stream=ns.upper())
    links = {}
    for name, config in {
        "default": base,
        "off": NatsConfig(url=NATS_URL, namespace=ns, stream=ns.upper(), core_link=False),
        "split replay": NatsConfig(url=NATS_URL, namespace=ns, stream=ns.upper(), settle_nodes=2),
    }.items():
        m = NatsMirror(
            config, node=name, consumer_name=f"{ns}-x", codec=Codec([Bar]), metrics=Metrics(),
            log=RecordingLog(),
        )  # fmt: skip
        await m.connect()
        links[name] = m.link is not None and m.core.nc is m.link
        await m.drain()
    assert links == {"default": True, "off": False, "split replay": False}


@pytest.fixture
def restricted_server(tmp_path: Path) -> Iterator[str]:
    """A nats-server whose user ``reader`` may subscribe to ``ok.>`` only; yields its URL
    (``writer`` may do anything)."""
    server = NatsServer(
        tmp_path,
        "authorization { users: [\n"
        '  {user: reader, password: "pw", permissions: {subscribe: "ok.>", publish: "_"}},\n'
        '  {user: writer, password: "pw"}\n'
        "] }\n",
    )
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


async def test_a_refused_subscription_is_logged_and_the_rest_flows(restricted_server: str) -> None:
    """As each group's NATS user in deploy/: the refused SUB is the server's -ERR, logged; the
    connection stays up and the allowed subscription delivers."""
    log = RecordingLog()
    reader = await CoreLink(restricted_server, user="reader", password="pw", log=log).connect()
    writer = await CoreLink(restricted_server.replace("//", "//writer:pw@")).connect()
    try:
        got, cb = collector()
        reader.subscribe("denied", cb)
        reader.subscribe("ok.x", cb)
        await reader.flush()
        for name in ("denied", "ok.x"):
            await writer.publish(name, name.encode())
        await until(lambda: len(got) == 1)
        assert got[0][:2] == ("ok.x", b"ok.x")
        assert "nats.link_error" in log.events and reader.connected
    finally:
        await reader.close()
        await writer.close()
