"""A node's ingress from NATS: core subscriptions, durable push consumers and the ack ledger.

Core messages come in frames (``_frame``; single messages are taken too), decoded and
delivered at once (at most once; gaps in the senders' sequence numbers are counted). On the
core link (``_link``) that happens inside its read, without waiting, for core messages and
durable push deliveries alike: a full mailbox holds the rest back in order and pauses the
link's reads until they are in. A durable
message is delivered with a ``JsDelivery``: it is acked only after every local handler
succeeded and everything they published was confirmed (``on_ok``), and a failure goes to the
dead-letter path (``on_fail``). The ledger remembers the durable messages handled lately, so a
redelivery (an ack lost to a broker crash) is acked and skipped instead of being handled twice,
and one still being handled is not handled again.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any

import nats.js.errors
from nats.aio.msg import Msg
from nats.js import api
from nats.js.client import DEFAULT_JS_SUB_PENDING_BYTES_LIMIT, DEFAULT_JS_SUB_PENDING_MSGS_LIMIT

from levibot.bus._dlq import SPARE_DELIVERIES, JsDelivery, delivery_key
from levibot.bus._frame import FrameDecoder, is_frame
from levibot.bus._link import CoreLink, LinkDown
from levibot.bus._sequence import SEQ, GapCounter
from levibot.bus._subjects import ORIGIN, consumer_name, namespace, patterns
from levibot.errors import DecodeError
from levibot.messages import Codec, Message
from levibot.metrics import Metrics
from levibot.partition import Partition
from levibot.settings import NatsConfig

#: Hands a message from NATS to the local bus, with its delivery (None for core messages).
Deliver = Callable[[Message, Callable[[], None] | None], Awaitable[int]]

#: Hands a message to the local bus without waiting (a durable one with its delivery): None
#: once every local subscriber took it, else a coroutine that finishes the delivery
#: (``LocalBus.deliver_remote_nowait``).
DeliverNowait = Callable[[Message, JsDelivery | None], Coroutine[Any, Any, None] | None]

#: What is done with a durable delivery: hand its message to the local bus with its
#: ``JsDelivery``, ack it at once (True), or nothing now (False).
Admitted = tuple[Message, JsDelivery] | bool

_JS_ACK = "$JS.ACK."  # the reply subjects of JetStream deliveries


class Ingress:
    """Takes a node's remote types from NATS and hands them to the local bus."""

    def __init__(
        self,
        config: NatsConfig,
        *,
        node: str,
        consumer_name: str,
        codec: Codec,
        metrics: Metrics,
        log: Any,
        partition: Partition,
        on_ok: Callable[[Msg], None],
        on_fail: Callable[[JsDelivery], None],
        on_own: Callable[[Msg], None] | None = None,
    ) -> None:
        self.config = config
        self.node = node
        self.consumer_name = consumer_name
        self.codec = codec
        self.metrics = metrics
        self.log = log
        self.partition = partition
        self.on_ok = on_ok  # a delivery every handler succeeded on: ack it after egress
        self.on_fail = on_fail  # a delivery a handler failed on: redeliver or dead-letter
        # A durable message this process published, delivered back: acked once its local copy
        # is handled (``_own``); without a holder, at once.
        self.on_own: Callable[[Msg], None] = on_own or on_ok
        self.nc: Any = None
        self.js: Any = None
        # Core subscriptions ride this lean connection when the mirror has one (``_link``).
        self.link: CoreLink | None = None
        self.link_sids: list[int] = []
        # Messages a full local mailbox holds back on the link, in order, with their deliveries
        # and what is left of handing them over, the link's reading paused until they are in
        # (``_hand``).
        self._held: deque[tuple[Message, JsDelivery | None, Coroutine[Any, Any, None] | None]] = (
            deque()
        )
        self._drainer: asyncio.Task[None] | None = None
        self.subs: list[Any] = []
        self.durables: list[str] = []  # the names of this node's durable consumers
        self._ns = namespace(config)
        self._gaps = GapCounter()
        self._frames = FrameDecoder(codec)
        # Ids of durable messages handled lately: a redelivery (an ack lost to a broker crash)
        # is acked and skipped instead of being handled twice. Bounded, oldest forgotten.
        self._handled_ids: dict[str, None] = {}
        self._handled_max = 100_000
        self._inflight: dict[str, None] = {}  # keys of durable deliveries being handled here
        self.m_received = metrics.counter(
            "levibot_nats_received_total", "Messages received from NATS and delivered."
        )
        self.m_bad = metrics.counter(
            "levibot_nats_ingress_bad_total", "Malformed or unknown messages from NATS."
        )
        self.m_gaps = metrics.counter(
            "levibot_nats_ingress_gaps_total",
            "Core messages lost on the way here (gaps in their senders' sequence numbers).",
        )
        self.m_redelivered = metrics.counter(
            "levibot_nats_redelivered_skipped_total", "Durable redeliveries already handled."
        )
        self.m_inflight_redelivered = metrics.counter(
            "levibot_nats_redelivered_inflight_total",
            "Durable redeliveries of a message still being handled here (ack_wait expired).",
        )

    async def start(
        self,
        types: Iterable[type[Message]],
        deliver: Deliver,
        deliver_nowait: DeliverNowait | None = None,
    ) -> None:
        """Subscribe to ``types``: core subjects by callback, durable ones by push consumer;
        both on the link when there is one and ``deliver_nowait`` is given."""
        wanted = tuple(types)
        link = self.link if deliver_nowait is not None else None
        subjects = sorted(patterns(wanted, self.config.durable_all).items())
        for pattern, durable in subjects:
            pattern = self._ns + pattern
            if durable:
                continue
            if link is not None and deliver_nowait is not None:
                cb_now = self._link_cb(wanted, deliver_nowait)
                self.link_sids.append(link.subscribe(pattern, cb_now))
            else:
                cb = self._core_cb(wanted, deliver)
                self.subs.append(await self.nc.subscribe(pattern, cb=cb))
        # The server has our core interest before we report ready (core NATS keeps nothing for
        # a subscriber that is not there yet). Durable consumers come after: the stream keeps
        # their messages, and a backlog they deliver can fill a mailbox and pause the link's
        # reads, which a flush after them would wait behind.
        await self.nc.flush()
        if link is not None:
            await link.flush()
        for pattern, durable in subjects:
            if durable:
                await self._start_durable(self._ns + pattern, wanted, deliver, deliver_nowait)
        self.log.info("nats.ingress", types=[t.__name__ for t in wanted])

    async def stop(self) -> None:
        """Stop taking messages from NATS; unacked durable ones will be redelivered later."""
        if self.link is not None:
            for sid in self.link_sids:
                self.link.unsubscribe(sid)
        self.link_sids.clear()
        if self._drainer is not None:
            self._drainer.cancel()
        # What a full mailbox held back is dropped: core at most once, a durable delivery left
        # unacked for the next process.
        for _, delivery, rest in self._held:
            if rest is not None:
                rest.close()
            if delivery is not None:
                self._inflight.pop(delivery.key, None)
        self._held.clear()
        for sub in self.subs:
            try:
                await sub.unsubscribe()
            except Exception as exc:
                self.log.debug("nats.unsubscribe_failed", error=repr(exc))
        self.subs.clear()

    # -- decoding -------------------------------------------------------------------------

    def decode(self, raw: Msg, wanted: tuple[type[Message], ...]) -> Message | None:
        """Return the message in ``raw`` if this node takes it; None (bad ones counted) else."""
        return self.decode_parts(raw.subject, raw.data, raw.headers, wanted)

    def decode_parts(
        self,
        subject: str,
        data: bytes,
        headers: dict[str, str] | None,
        wanted: tuple[type[Message], ...],
    ) -> Message | None:
        """``decode`` for a message given as its subject, payload and headers."""
        if headers and headers.get(ORIGIN) == self.node:
            return None  # our own message, e.g. a JetStream redelivery: never echo
        try:
            msg = self.codec.decode(data)
        except DecodeError as exc:
            self.m_bad.inc()
            self.log.warning("nats.bad_message", subject=subject, error=str(exc))
            return None
        if not isinstance(msg, wanted):
            return None  # another type sharing the subject root
        symbol = getattr(msg, "symbol", None)
        if symbol is not None and not self.partition.owns(symbol):
            return None
        return msg

    def decode_frame(
        self, data: bytes, subject: str, wanted: tuple[type[Message], ...]
    ) -> list[Message]:
        """Return the messages of frame ``data`` this node takes (bad ones counted, logged).

        Gaps before the frame in its sender's numbering are counted when it holds a message
        for this node (the others' losses are theirs to count).
        """
        try:
            origin, incarnation, first, decoded = self._frames.decode(data)
        except DecodeError as exc:
            self.m_bad.inc()
            self.log.warning("nats.bad_message", subject=subject, error=str(exc))
            return []
        gap = self._gaps.observe_run(incarnation, first, len(decoded), subject)
        if origin == self.node:
            return []  # our own (no_echo makes this rare): never echo
        owns = self.partition.owns if self.partition.count > 1 else None
        out = []
        for msg in decoded:
            if isinstance(msg, DecodeError):
                self.m_bad.inc()
                self.log.warning("nats.bad_message", subject=subject, error=str(msg))
            elif isinstance(msg, wanted) and (
                owns is None or (symbol := getattr(msg, "symbol", None)) is None or owns(symbol)
            ):
                out.append(msg)
        if gap and out:
            self.m_gaps.inc(gap)
        return out

    # -- core -----------------------------------------------------------------------------

    def core_messages(
        self,
        subject: str,
        data: bytes,
        headers: dict[str, str] | None,
        wanted: tuple[type[Message], ...],
    ) -> list[Message]:
        """Return the messages of a core NATS message this node takes, counted as received:
        a frame's, or a single message (another client's, an alert)."""
        if is_frame(data):
            msgs = self.decode_frame(data, subject, wanted)
        else:
            gap = self._gaps.observe(headers.get(SEQ) if headers else None, subject)
            msg = self.decode_parts(subject, data, headers, wanted)
            if msg is None:
                return []
            if gap:  # the missing ones were on this subject: this node's to count
                self.m_gaps.inc(gap)
            msgs = [msg]
        if msgs:
            self.m_received.inc(len(msgs))
        return msgs

    def _core_cb(
        self, wanted: tuple[type[Message], ...], deliver: Deliver
    ) -> Callable[[Msg], Awaitable[None]]:
        async def cb(raw: Msg) -> None:
            for msg in self.core_messages(raw.subject, raw.data, raw.headers, wanted):
                await deliver(msg, None)

        return cb

    def _link_cb(
        self, wanted: tuple[type[Message], ...], deliver_nowait: DeliverNowait
    ) -> Callable[[str, str, bytes, dict[str, str] | None], None]:
        """The link's callback for core subjects, run inside its read (``_hand``)."""

        def cb(subject: str, _reply: str, data: bytes, headers: dict[str, str] | None) -> None:
            for msg in self.core_messages(subject, data, headers, wanted):
                self._hand(msg, None, deliver_nowait)

        return cb

    def _hand(
        self, msg: Message, delivery: JsDelivery | None, deliver_nowait: DeliverNowait
    ) -> None:
        """Deliver a message from the link's read at once where there is room.

        A message a full mailbox cannot take, and every one after it, is held in order; the
        link stops reading until a task has put them all in (back-pressure to the server, as
        nats-py's callback task gives by awaiting, without its pending queue).
        """
        held = self._held
        if held:
            held.append((msg, delivery, None))
            return
        rest = deliver_nowait(msg, delivery)
        if rest is not None:
            held.append((msg, delivery, rest))
            self._start_drainer(deliver_nowait)

    def _start_drainer(self, deliver_nowait: DeliverNowait) -> None:
        if self._drainer is None:
            assert self.link is not None
            self.link.pause_reading()
            self._drainer = asyncio.get_running_loop().create_task(self._drain(deliver_nowait))

    async def _drain(self, deliver_nowait: DeliverNowait) -> None:
        held = self._held
        try:
            while held:
                msg, delivery, rest = held[0]
                if rest is None:
                    rest = deliver_nowait(msg, delivery)
                if rest is not None:
                    await rest
                held.popleft()
        finally:
            self._drainer = None
            if self.link is not None:
                self.link.resume_reading()

    # -- durable --------------------------------------------------------------------------

    def delivered(self, d: JsDelivery) -> None:
        """Every handler succeeded on ``d``: remember it and ack it once egress confirms."""
        self._inflight.pop(d.key, None)
        self._remember(d.key)
        self.on_ok(d.raw)

    def failed(self, d: JsDelivery) -> None:
        """A handler failed on ``d``: hand it to the redelivery / dead-letter path."""
        self._inflight.pop(d.key, None)
        self.on_fail(d)

    def _remember(self, msg_id: str | None) -> None:
        if msg_id:
            self._handled_ids[msg_id] = None
            if len(self._handled_ids) > self._handled_max:
                del self._handled_ids[next(iter(self._handled_ids))]

    def _admit(
        self,
        raw: Msg,
        wanted: tuple[type[Message], ...],
        consumer: str,
        max_deliver: int,
        pending: Any,
    ) -> Admitted:
        """Decide what to do with durable delivery ``raw`` of ``consumer`` (either connection's)."""
        key = delivery_key(raw)
        if key in self._handled_ids:
            self.m_redelivered.inc()
            return True  # handled before the ack was lost: never twice
        if key in self._inflight:
            # ack_wait expired while it waited in a busy mailbox: the delivery still in
            # flight settles it (the server takes an ack from any delivery of a message).
            self.m_inflight_redelivered.inc()
            return False
        if raw.headers and raw.headers.get(ORIGIN) == self.node:
            self.on_own(raw)  # its local copy went to our actors when it was published
            return False
        msg = self.decode(raw, wanted)
        if msg is None:
            return True  # not ours, or garbage: never redeliver it
        self.m_received.inc()
        pending.set(raw.metadata.num_pending)
        self._inflight[key] = None
        delivery = JsDelivery(
            raw, key, consumer=consumer, max_deliver=max_deliver, on_ok=self.delivered,
            on_fail=self.failed,
        )  # fmt: skip
        return msg, delivery

    async def _start_durable(
        self,
        pattern: str,
        wanted: tuple[type[Message], ...],
        deliver: Deliver,
        deliver_nowait: DeliverNowait | None,
    ) -> None:
        # A durable push consumer: the server sends as soon as a message is stored (a pull
        # consumer's long poll would add up to its expiry to every idle-to-busy transition),
        # in order, at most max_ack_pending unacked at once, to its deliver subject; our
        # subscription there takes them (on the link when there is one) and acks each on its
        # reply subject.
        durable = consumer_name(self.consumer_name, pattern, self._ns)
        max_deliver = self.config.max_deliver
        pending = self.metrics.gauge(
            "levibot_nats_consumer_pending",
            "Messages in the stream not yet delivered to this durable consumer (its lag), as of "
            "the last delivery.",
            consumer=durable,
        )
        deliver_subject = await self._push_consumer(pattern, durable)
        self.durables.append(durable)
        link = self.link
        if link is not None and deliver_nowait is not None:
            client: Any = link  # a delivery's acks go back on the connection it came on

            def on_link(
                subject: str, reply: str, data: bytes, headers: dict[str, str] | None
            ) -> None:
                if not reply.startswith(_JS_ACK):  # a status message; none is asked for
                    self.log.debug("nats.consumer_status", consumer=durable, headers=headers)
                    return
                raw = Msg(client, subject, reply, data, headers)
                got = self._admit(raw, wanted, durable, max_deliver, pending)
                if got is True:
                    self._ack_nowait(link, reply)
                elif got:
                    self._hand(got[0], got[1], deliver_nowait)

            self.link_sids.append(link.subscribe(deliver_subject, on_link))
            return

        async def cb(raw: Msg) -> None:
            got = self._admit(raw, wanted, durable, max_deliver, pending)
            if got is True:
                await raw.ack()
            elif got:
                await deliver(*got)

        sub = await self.nc.subscribe(
            deliver_subject, cb=cb, pending_msgs_limit=DEFAULT_JS_SUB_PENDING_MSGS_LIMIT,
            pending_bytes_limit=DEFAULT_JS_SUB_PENDING_BYTES_LIMIT,
        )  # fmt: skip
        self.subs.append(sub)

    def _ack_nowait(self, link: CoreLink, reply: str) -> None:
        try:
            link.publish_nowait(reply)
        except LinkDown as exc:  # unacked: it will be redelivered and skipped again
            self.log.warning("nats.ack_failed", error=repr(exc))

    async def _push_consumer(self, pattern: str, durable: str) -> str:
        """Create durable push consumer ``durable`` on ``pattern``, or take the existing one
        (bounded to ``max_deliver`` if it was made before that was set); return its deliver
        subject. One already bound to a subscription (another process) is refused."""
        stream = self.config.stream
        server_max = self.config.max_deliver + SPARE_DELIVERIES
        try:
            info = await self.js.consumer_info(stream, durable)
        except nats.js.errors.NotFoundError:
            config = api.ConsumerConfig(
                durable_name=durable,
                deliver_subject=self.nc.new_inbox(),
                filter_subject=pattern,
                ack_wait=self.config.ack_wait_s,
                max_ack_pending=self.config.fetch_batch * 8,
                deliver_policy=api.DeliverPolicy.ALL,
                max_deliver=server_max,
            )
            info = await self.js.add_consumer(stream, config)
            return str(info.config.deliver_subject)
        if info.push_bound:
            raise nats.js.errors.Error(f"consumer {durable} is already bound to a subscription")
        if info.config.max_deliver != server_max:
            info.config.max_deliver = server_max
            await self.js.add_consumer(stream, info.config)
            self.log.info("nats.consumer_updated", consumer=durable, max_deliver=server_max)
        if not info.config.deliver_subject:
            raise nats.js.errors.Error(f"consumer {durable} is not a push consumer")
        return str(info.config.deliver_subject)

    async def durable_pending(self) -> int:
        """Return the messages this node's durable consumers have not had delivered, or have
        not acked yet (asked of the server)."""
        total = 0
        for durable in self.durables:
            info = await self.js.consumer_info(self.config.stream, durable)
            total += info.num_pending + info.num_ack_pending
        return total
