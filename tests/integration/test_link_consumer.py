"""Durable push consumers on the core link (``[nats] core_link``), against a real nats-server.

A node's durable consumer delivers to a deliver subject; with the link, that subscription and
the acks (``+ACK``, ``-NAK`` with a delay, ``+TERM``, all publishes to a delivery's reply
subject) ride the link instead of nats-py, and each delivery goes into the local mailboxes
inside the link's read. What must hold is what held on nats-py: every message handled, in
order, through a mailbox too small to take them; a failed handler's message nak'ed and tried
again; a consumer made by an earlier process taken over, one still bound elsewhere refused;
and across a server restart, every message handled once and acked in the end. Durable egress
lingers (``[nats] durable_linger_s``): a burst spread over the linger goes out as one batch.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import nats
import nats.errors
import nats.js.errors
import pytest

from levibot.bus._delivery import Delivery
from levibot.bus._local import LocalBus
from levibot.bus._mailbox import Mailbox
from levibot.bus._nats import NatsMirror
from levibot.messages import Codec
from levibot.metrics import Metrics
from levibot.settings import NatsConfig
from levibot.testenv import NATS_URL
from levibot.testing import NatsServer
from tests.fuzz.support import RecordingLog
from tests.pipeline import Squared

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

CODEC = Codec([Squared])


def config_for(url: str = NATS_URL, **fields: Any) -> NatsConfig:
    ns = f"lc{uuid.uuid4().hex[:8]}"
    return NatsConfig(url=url, namespace=ns, stream=ns.upper(), **fields)


def mirror(config: NatsConfig, node: str = "r", consumer: str = "sink") -> NatsMirror:
    return NatsMirror(
        config, node=node, consumer_name=f"{config.namespace}-{consumer}", codec=CODEC,
        metrics=Metrics(), log=RecordingLog(),
    )  # fmt: skip


def squared(value: int) -> Squared:
    return Squared(
        ts_event=value + 1, ts_init=value + 1, symbol="AAA", value=value, square=value**2
    )


async def publish(js: Any, config: NatsConfig, values: range | list[int]) -> None:
    for v in values:
        msg = squared(v)
        await js.publish(
            f"{config.namespace}.{msg.subject()}",
            CODEC.encode(msg),
            headers={"Nats-Msg-Id": msg.dedup_id(), "Lb-Origin": "test"},
        )


async def until(predicate: Callable[[], Any], timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.01)


async def until_async(predicate: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.05)


class Receiver:
    """A mirror taking ``Squared`` into a mailbox of ``capacity``, an actor that records each
    value (``handle`` decides: True succeeds, False fails the delivery), and its egress (which
    sends the acks)."""

    def __init__(
        self,
        m: NatsMirror,
        capacity: int = 2,
        handle: Callable[[int, Delivery], bool] | None = None,
    ) -> None:
        self.m = m
        self.bus = LocalBus()
        self.box = Mailbox("sink", capacity)
        self.bus.subscribe(self.box, (Squared,))
        self.handle = handle or (lambda _v, _d: True)
        self.got: list[int] = []
        self.attempts: dict[int, list[int]] = {}
        self.held_seen = 0
        self.tasks: list[asyncio.Future[Any]] = []

    async def start(self, *, nowait: bool = True) -> None:
        await self.m.connect()
        await self.m.start_ingress(
            [Squared], self.bus.deliver_remote, self.bus.deliver_remote_nowait if nowait else None
        )
        self.tasks = [
            asyncio.ensure_future(self.m.run_egress()),
            asyncio.ensure_future(self._act()),
        ]

    async def _act(self) -> None:
        while True:
            msg, done = await self.box.get()
            assert isinstance(msg, Squared) and isinstance(done, Delivery)
            self.attempts.setdefault(msg.value, []).append(done.attempt)
            self.held_seen = max(self.held_seen, len(self.m.ingress._held))
            if self.handle(msg.value, done):
                self.got.append(msg.value)
                done()
            else:
                done.fail("sink", RuntimeError(f"refused {msg.value}"))
            if len(self.got) % 25 == 0:
                await asyncio.sleep(0.005)  # a slow actor: the mailbox fills

    async def settled(self) -> bool:
        """True once the server has nothing left to deliver or waiting for its ack (False while
        it does not answer: JetStream just restarted)."""
        try:
            info = await self.m.js.consumer_info(
                self.m.config.stream, self.m.ingress.durables[0], timeout=1.0
            )
        except nats.errors.Error:
            return False
        return bool(info.num_pending == 0 and info.num_ack_pending == 0)

    async def stop(self) -> None:
        await self.m.stop_ingress()
        self.tasks[1].cancel()
        await self.m.close()
        await asyncio.wait_for(self.tasks[0], 10)
        await self.m.drain()


async def test_deliveries_ride_the_link_in_order_through_a_full_mailbox_and_are_acked() -> None:
    config = config_for()
    r = Receiver(mirror(config))
    nc = await nats.connect(NATS_URL)
    count = 300
    try:
        await r.start()
        assert r.m.link is not None and r.m.ingress.link_sids  # the consumer's subscription
        before = r.m.nc.stats["in_msgs"]
        await publish(nc.jetstream(), config, range(count))
        await until(lambda: len(r.got) == count)
        assert r.got == list(range(count))
        assert r.held_seen > 0  # the held path, not only the fast one, carried deliveries
        await until_async(r.settled)  # every one acked, on the link
        # Not one delivery came on nats-py's connection (its API replies only).
        assert r.m.nc.stats["in_msgs"] - before < count // 10
        assert r.m.ingress.m_received.value == count
    finally:
        await r.stop()
        await nc.close()


async def test_a_failed_delivery_is_nakd_and_tried_again_and_strays_are_ignored() -> None:
    """The handler refuses 7 on its first delivery: -NAK with a delay on the link, then the
    second delivery succeeds. A message with no JetStream reply on the deliver subject (a stray
    core publish) is ignored; garbage on the stream is acked at once and counted bad."""
    config = config_for(redeliver_delay_s=0.05, max_deliver=3)

    def handle(value: int, d: Delivery) -> bool:
        return not (value == 7 and d.attempt == 1)

    r = Receiver(mirror(config), capacity=64, handle=handle)
    nc = await nats.connect(NATS_URL)
    try:
        await r.start()
        js = nc.jetstream()
        info = await js.consumer_info(config.stream, r.m.ingress.durables[0])
        await nc.publish(info.config.deliver_subject, b"stray")  # no reply subject
        await js.publish(f"{config.namespace}.lbtest.sq.AAA", b"\x00garbage")
        await publish(js, config, range(10))
        await until(lambda: sorted(r.got) == list(range(10)))
        assert r.attempts[7] == [1, 2]
        assert all(r.attempts[v] == [1] for v in range(10) if v != 7)
        assert r.m.ingress.m_bad.value == 1
        assert r.m.dead_letters.m_redelivered.value == 1
        await until_async(r.settled)
    finally:
        await r.stop()
        await nc.close()


async def test_a_consumer_made_by_nats_py_is_taken_over_and_a_bound_one_refused() -> None:
    """A consumer an earlier process made on nats-py (or an earlier levibot) is bound by the
    link and delivers what was published meanwhile; a second process while it is bound is
    refused (both would get every message)."""
    config = config_for()
    first = Receiver(mirror(msgspec.structs.replace(config, core_link=False)))
    await first.start(nowait=False)
    assert first.m.link is None
    nc = await nats.connect(NATS_URL)
    try:
        await publish(nc.jetstream(), config, range(5))
        await until(lambda: len(first.got) == 5)
        await until_async(first.settled)
        await first.stop()
        await publish(nc.jetstream(), config, range(5, 12))
        second = Receiver(mirror(config))
        await second.start()
        try:
            assert second.m.link is not None
            await until(lambda: second.got == list(range(5, 12)))
            await until_async(second.settled)
            third = mirror(config)
            await third.connect()
            try:
                with pytest.raises(nats.js.errors.Error, match="already bound"):
                    await third.start_ingress([Squared], LocalBus().deliver_remote)
            finally:
                await third.drain()
        finally:
            await second.stop()
    finally:
        await nc.close()


async def test_across_a_server_restart_every_message_is_handled_once_and_acked(
    tmp_path: Path,
) -> None:
    """The server restarts while deliveries are in the mailbox and acks on their way. Both of
    the node's connections reconnect; what was delivered and not acked comes again after
    ``ack_wait`` and the ledger acks it without handling it twice."""
    server = NatsServer(tmp_path / "js")
    server.start()
    config = config_for(server.url, ack_wait_s=1.0, connect_timeout_s=2.0)
    r = Receiver(mirror(config))
    r.m.log = r.m.ingress.log = RecordingLog()
    count = 400
    nc = await nats.connect(server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
    try:
        await r.start()
        await publish(nc.jetstream(), config, range(count))
        await until(lambda: len(r.got) >= 50)
        server.stop()
        server.start()  # the same port, the same store
        await until(lambda: len(set(r.got)) == count, 30)
        await until_async(r.settled, 30)
        assert sorted(r.got) == list(range(count))  # none handled twice
        assert r.m.m_reconnects.value == 2  # nats-py's connection and the link
        # An ack the link refused while down left its message to be redelivered: skipped.
        assert r.m.link is not None
        assert r.m.ingress.m_redelivered.value >= r.m.link.dropped
    finally:
        await r.stop()
        await nc.close()
        server.stop()


@pytest.mark.parametrize(("linger_s", "batches"), [(0.2, [5]), (0.0, [1, 1, 1, 1, 1])])
async def test_durable_egress_lingers_so_a_spread_burst_goes_out_as_one_batch(
    linger_s: float, batches: list[int]
) -> None:
    """Five durable messages enqueued 10 ms apart: with ``durable_linger_s`` they share one
    publish batch (one write, one ack round); without it, each goes out on its own."""
    config = config_for(durable_linger_s=linger_s)
    m = mirror(config)
    await m.connect()
    assert m.durable.publisher is not None
    publish, sizes = m.durable.publisher.publish, []

    async def counted(items: list[Any], timeout: float) -> list[BaseException | None]:
        sizes.append(len(items))
        return await publish(items, timeout)

    m.durable.publisher.publish = counted  # type: ignore[method-assign]
    egress = asyncio.ensure_future(m.run_egress())
    await asyncio.sleep(0.05)  # the egress is waiting for work
    try:
        for v in range(5):
            await m.enqueue(squared(v))
            await asyncio.sleep(0.01)
        await until(lambda: sum(sizes) == 5)
        assert sizes == batches
        info = await m.js.stream_info(config.stream)
        assert info.state.messages == 5
    finally:
        await m.close()
        await egress
        await m.drain()


@pytest.mark.parametrize("linger_s", [0.2, 0.0])
async def test_the_acks_of_own_copies_ride_the_next_batch_within_the_linger(
    linger_s: float,
) -> None:
    """The node's own copy of a published message comes back with the server's ack; with
    ``durable_linger_s`` its ack waits for the next batch and goes out in that batch's write,
    and without one it goes out alone. Both are acked in the end."""
    m = mirror(config_for(durable_linger_s=linger_s))
    receiver = Receiver(m)
    await receiver.start()
    assert m.link is not None
    link, writes = m.link, []
    write = link._write

    def recorded() -> None:
        writes.append(b"".join(link._out))
        write()

    link._write = recorded  # type: ignore[method-assign]
    try:
        await m.enqueue(squared(1))
        # Its own copy is back: its ack is due (and, without a linger, already sent).
        await until(lambda: bool(m.durable.pending_acks) or any(b"$JS.ACK." in w for w in writes))
        await m.enqueue(squared(2))
        await until(lambda: sum(w.count(b"$JS.ACK.") for w in writes) >= 2)
        await until_async(receiver.settled)
        acks = [w for w in writes if b"$JS.ACK." in w]
        carried = [w for w in acks if b"HPUB " in w]
        assert len(carried) == (1 if linger_s else 0)
        assert sum(w.count(b"$JS.ACK.") for w in acks) == 2
        assert not m.durable.pending_acks
        assert receiver.got == []  # own copies are not handled twice
    finally:
        await receiver.stop()
