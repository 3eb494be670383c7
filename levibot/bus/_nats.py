"""The NATS mirror: batched egress off the hot path, ingress for types produced elsewhere.

Market-rate types ride core NATS (at most once). Durable types (orders, fills, commands,
alerts) ride JetStream with ``Nats-Msg-Id`` set to the message's ``dedup_id()``, so a producer
that re-publishes after a restart is deduplicated by the server. A durable message that arrives
here is acked only after every local subscriber handled it *and* everything those handlers
published has been confirmed by NATS: a kill -9 at any point loses nothing, and re-handling
after redelivery re-publishes identical, deduplicated output.

Egress runs as two tasks: market data on core NATS and durable messages on JetStream
(``_egress``, with a retry budget and a local spill), so a stuck durable publish never holds up a
tick. A handler that raises on a durable message gets it again later and, after
``max_deliver`` tries, the message goes to the dead-letter stream (``_dlq``).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import anyio
import nats
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import api

from levibot.bus import _dlq, _spill
from levibot.bus._dlq import SPARE_DELIVERIES, DeadLetters, JsDelivery, delivery_key
from levibot.bus._egress import CoreEgress, DurableEgress
from levibot.bus._sequence import SEQ, GapCounter, Sequencer
from levibot.bus._settle import SettleMixin
from levibot.bus._spill import Item
from levibot.errors import DecodeError
from levibot.messages import Alert, AlertLevel, Codec, Message
from levibot.metrics import Metrics
from levibot.partition import Partition
from levibot.settings import NatsConfig

ORIGIN = "Lb-Origin"
DURABLE_SUBJECTS = ("lb.order.>", "lb.ctl.>", "lb.alert.>")

Deliver = Callable[[Message, Callable[[], None] | None], Awaitable[int]]


def _minimal(subjects: set[str]) -> list[str]:
    """Drop subjects that another ``prefix.>`` wildcard in the set already covers."""
    wild = [w[:-1] for w in subjects if w.endswith(">")]
    return sorted(s for s in subjects if not any(s != w + ">" and s.startswith(w) for w in wild))


def _patterns(types: Iterable[type[Message]], durable_all: bool) -> dict[str, bool]:
    """Return the subject patterns to subscribe for ``types``, each with its durability."""
    out: dict[str, bool] = {}
    for cls in types:
        if not cls.subject_root:
            raise ValueError(f"{cls.__name__} has no subject_root and cannot cross NATS")
        durable = cls.durable or durable_all
        out[cls.subject_root + ".>"] = durable
        # A subject may be the bare root (lb.portfolio). Core subscriptions cost nothing, so
        # always take it; a durable one needs its own consumer, made only where the type does
        # not override subject() (durable types with their own subject() add a suffix).
        if not durable or cls.subject is Message.subject:
            out[cls.subject_root] = durable
    return out


class NatsMirror(SettleMixin):
    """Mirrors a node's bus onto NATS. One instance per node."""

    def __init__(
        self,
        config: NatsConfig,
        *,
        node: str,
        consumer_name: str,
        codec: Codec,
        metrics: Metrics,
        log: Any,
        partition: Partition = Partition(),
        data_dir: str | Path = "var",
    ) -> None:
        self.config = config
        self.node = node
        self.consumer_name = consumer_name
        self.codec = codec
        self.metrics = metrics
        self.log = log
        self.partition = partition
        self.nc: Any = None
        self.js: Any = None
        self._local: Deliver | None = None  # the local bus, for alerts raised here
        self._subs: list[Any] = []
        self._durable_subs: list[Any] = []
        self._core_headers = {ORIGIN: node}
        self._sequencer = Sequencer(self._core_headers)  # core messages numbered per subject
        self._gaps = GapCounter()
        self._ns = f"{config.namespace}." if config.namespace else ""
        # Ids of durable messages handled lately: a redelivery (an ack lost to a broker crash)
        # is acked and skipped instead of being handled twice. Bounded, oldest forgotten.
        self._handled_ids: dict[str, None] = {}
        self._handled_max = 100_000
        self._inflight: dict[str, None] = {}  # keys of durable deliveries being handled here
        self.m_queue = metrics.gauge(
            "levibot_nats_egress_queue", "Messages waiting to be published to NATS.",
            fn=lambda: len(self.core.queue) + len(self.durable.queue),
        )  # fmt: skip
        self.m_published = metrics.counter(
            "levibot_nats_published_total", "Messages published to NATS."
        )
        self.m_dropped = metrics.counter(
            "levibot_nats_egress_dropped_total", "Market data dropped: egress queue full."
        )
        self.m_errors = metrics.counter(
            "levibot_nats_egress_errors_total", "Failed publishes (retried if durable)."
        )
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
        self.m_reconnects = metrics.counter("levibot_nats_reconnects_total", "Reconnections.")
        self.m_redelivered = metrics.counter(
            "levibot_nats_redelivered_skipped_total", "Durable redeliveries already handled."
        )
        self.m_inflight_redelivered = metrics.counter(
            "levibot_nats_redelivered_inflight_total",
            "Durable redeliveries of a message still being handled here (ack_wait expired).",
        )
        self.m_spilled = metrics.counter(
            "levibot_nats_spilled_total", "Durable publishes not accepted in time: spilled."
        )
        self.spill_path = Path(data_dir) / "spill" / f"{consumer_name}.jsonl"
        self.core = CoreEgress(
            config, encode=self._core_item, published=self.m_published, errors=self.m_errors,
            dropped=self.m_dropped, log=log,
        )  # fmt: skip
        self.durable = DurableEgress(
            config, encode=self._durable_item, spill_path=self.spill_path,
            on_spill=self._on_spill, published=self.m_published, errors=self.m_errors,
            spilled=self.m_spilled, log=log,
        )  # fmt: skip
        self.dead_letters = DeadLetters(
            config, node=node, alert=self._alert_durable, metrics=metrics, log=log
        )

    # -- connection -----------------------------------------------------------------------

    async def connect(self) -> None:
        """Connect, and create the JetStream stream for durable types if it is missing."""

        async def on_error(exc: Exception) -> None:
            self.log.warning("nats.error", error=repr(exc))

        async def on_disconnect() -> None:
            self.log.warning("nats.disconnected")

        async def on_reconnect() -> None:
            self.m_reconnects.inc()
            self.log.info("nats.reconnected")

        self.nc = await nats.connect(
            self.config.url,
            name=self.node,
            no_echo=True,  # the server never sends our own core publications back
            connect_timeout=int(max(1, self.config.connect_timeout_s)),
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.25,
            error_cb=on_error,
            disconnected_cb=on_disconnect,
            reconnected_cb=on_reconnect,
        )
        self.js = self.nc.jetstream()
        durable_types = [
            t for t in self.codec.types if (t.durable or self.config.durable_all) and t.subject_root
        ]
        subjects = {self._ns + s for s in DURABLE_SUBJECTS}
        for pattern in _patterns(durable_types, self.config.durable_all):
            subjects.add(self._ns + pattern)
        try:
            info = await self.js.stream_info(self.config.stream)
            missing = set(_minimal(subjects)) - set(info.config.subjects or ())
            if missing:  # another node's types: the stream carries the union
                info.config.subjects = _minimal(set(info.config.subjects or ()) | subjects)
                await self.js.update_stream(info.config)
        except nats.js.errors.NotFoundError:
            await self.js.add_stream(
                api.StreamConfig(
                    name=self.config.stream,
                    subjects=_minimal(subjects),
                    storage=api.StorageType.FILE,
                    duplicate_window=self.config.duplicate_window_s,
                    max_age=86_400.0,
                )
            )
        self.durable.js = self.dead_letters.js = self.js
        self.core.nc = self.nc
        await _dlq.ensure_stream(self.js, self.config)
        self.log.info("nats.connected", url=self.config.url, stream=self.config.stream)
        await self.resend_spill()

    async def resend_spill(self) -> None:
        """Re-send what an earlier run of this node spilled (kept if still refused)."""
        if not _spill.pending(self.spill_path):
            return
        timeout = self.config.connect_timeout_s

        async def publish(subject: str, data: bytes, headers: dict[str, str]) -> None:
            await self.js.publish(subject, data, timeout=timeout, headers=headers)

        sent, left = await _spill.resend(self.spill_path, publish)
        self.m_published.inc(sent)
        log = self.log.error if left else self.log.info
        log("nats.spill_resent", sent=sent, still_spilled=left, path=str(self.spill_path))

    # -- egress ---------------------------------------------------------------------------

    async def enqueue(self, msg: Message) -> None:
        """Queue ``msg`` for publishing. Market data is dropped when full; durable waits."""
        if msg.durable or self.config.durable_all:
            await self.durable.put(msg)
        else:
            self.core.put(msg)

    async def run_egress(self) -> None:
        """Publish queued messages until ``close`` and the queues are empty.

        Core and durable egress are separate tasks; so is the settling of failed deliveries.
        """
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.durable.run)
            tg.start_soon(self.dead_letters.run)
            await self.core.run()

    def _encode(self, msg: Message) -> bytes | None:
        try:
            return self.codec.encode(msg)
        except Exception as exc:  # a message that cannot be encoded is a bug: say so
            self.m_errors.inc()
            self.log.error("nats.encode_failed", type=type(msg).__name__, error=repr(exc))
            return None

    def _core_item(self, msg: Message) -> Item | None:
        """Return the core publish of ``msg``, numbered on its subject (None if unencodable)."""
        data = self._encode(msg)
        if data is None:
            return None
        subject = self._ns + msg.subject()
        return subject, data, self._sequencer.headers(subject)

    def _durable_item(self, msg: Message) -> Item | None:
        """Return the JetStream publish of ``msg`` (None, logged, if it cannot be encoded)."""
        data = self._encode(msg)
        if data is None:
            return None
        # Market types have no domain id: an identical payload is the same fact (replay is
        # deterministic, so a restarted producer re-publishes identical bytes).
        msg_id = (
            msg.dedup_id() if msg.durable else hashlib.blake2b(data, digest_size=12).hexdigest()
        )
        return self._ns + msg.subject(), data, {"Nats-Msg-Id": msg_id, ORIGIN: self.node}

    async def _on_spill(self, count: int, error: str, first: bool) -> None:
        if not first:
            return  # one alert per spell of refusals; each spill is logged and counted
        now = time.time_ns()
        text = (
            f"durable publishes refused by NATS ({error}); {count} message(s) spilled to "
            f"{self.spill_path}; re-sent at the next start or by `levibot dlq resend`"
        )
        alert = Alert(
            ts_event=now, ts_init=now, alert_id=f"spill-{self.node}-{now}",
            level=AlertLevel.CRITICAL, source=f"nats:{self.node}", text=text, code="NATS_SPILL",
        )  # fmt: skip
        await self._deliver_alert(alert)
        try:  # core NATS: the stream stores it if it can; never spilled, never retried
            data = self.codec.encode(alert)
            await self.nc.publish(self._ns + alert.subject(), data, headers=self._core_headers)
        except Exception as exc:
            self.log.warning("nats.alert_failed", error=repr(exc))

    async def _alert_durable(self, alert: Alert) -> None:
        await self._deliver_alert(alert)
        await self.enqueue(alert)

    async def _deliver_alert(self, alert: Alert) -> None:
        if self._local is not None and Alert in self.codec.types:
            await self._local(alert, None)

    def _remember(self, msg_id: str | None) -> None:
        if msg_id:
            self._handled_ids[msg_id] = None
            if len(self._handled_ids) > self._handled_max:
                del self._handled_ids[next(iter(self._handled_ids))]

    def _delivered(self, d: JsDelivery) -> None:
        self._inflight.pop(d.key, None)
        self._remember(d.key)
        self.durable.ack_later(d.raw)

    def _failed(self, d: JsDelivery) -> None:
        self._inflight.pop(d.key, None)
        self.dead_letters.failed(d)

    # -- ingress --------------------------------------------------------------------------

    async def start_ingress(
        self,
        types: Iterable[type[Message]],
        deliver: Deliver,
    ) -> None:
        """Subscribe to ``types``: core subjects by callback, durable ones by push consumer."""
        wanted = tuple(types)
        self._local = deliver
        for pattern, durable in sorted(_patterns(wanted, self.config.durable_all).items()):
            pattern = self._ns + pattern
            if durable:
                await self._start_durable(pattern, wanted, deliver)
            else:
                self._subs.append(
                    await self.nc.subscribe(pattern, cb=self._core_cb(wanted, deliver))
                )
        await self.nc.flush()  # the server has our interest before we report ready
        self.log.info("nats.ingress", types=[t.__name__ for t in wanted])

    def _decode(self, raw: Msg, wanted: tuple[type[Message], ...]) -> Message | None:
        if raw.headers and raw.headers.get(ORIGIN) == self.node:
            return None  # our own message, e.g. a JetStream redelivery: never echo
        try:
            msg = self.codec.decode(raw.data)
        except DecodeError as exc:
            self.m_bad.inc()
            self.log.warning("nats.bad_message", subject=raw.subject, error=str(exc))
            return None
        if not isinstance(msg, wanted):
            return None  # another type sharing the subject root
        symbol = getattr(msg, "symbol", None)
        if symbol is not None and not self.partition.owns(symbol):
            return None
        return msg

    def _core_cb(
        self, wanted: tuple[type[Message], ...], deliver: Deliver
    ) -> Callable[[Msg], Awaitable[None]]:
        async def cb(raw: Msg) -> None:
            headers = raw.headers
            gap = self._gaps.observe(headers.get(SEQ) if headers else None, raw.subject)
            msg = self._decode(raw, wanted)
            if msg is not None:
                if gap:  # the missing ones were on this subject: this node's to count
                    self.m_gaps.inc(gap)
                self.m_received.inc()
                await deliver(msg, None)

        return cb

    async def _start_durable(
        self,
        pattern: str,
        wanted: tuple[type[Message], ...],
        deliver: Deliver,
    ) -> None:
        # A durable push consumer: the server sends as soon as a message is stored (a pull
        # consumer's long poll would add up to its expiry to every idle-to-busy transition),
        # in order, at most max_ack_pending unacked at once.
        suffix = pattern[len(self._ns) :].replace(".", "_").replace(">", "all")
        if not pattern.endswith(">"):
            suffix += "_root"

        durable = f"{self.consumer_name}_{suffix}"
        max_deliver = self.config.max_deliver
        pending = self.metrics.gauge(
            "levibot_nats_consumer_pending",
            "Messages in the stream not yet delivered to this durable consumer (its lag), as of "
            "the last delivery.",
            consumer=durable,
        )

        async def cb(raw: Msg) -> None:
            key = delivery_key(raw)
            if key in self._handled_ids:
                self.m_redelivered.inc()
                await raw.ack()  # handled before the ack was lost: never twice
                return
            if key in self._inflight:
                # ack_wait expired while it waited in a busy mailbox: the delivery still in
                # flight settles it (the server takes an ack from any delivery of a message).
                self.m_inflight_redelivered.inc()
                return
            msg = self._decode(raw, wanted)
            if msg is None:
                await raw.ack()  # not ours, or garbage: never redeliver it
                return
            self.m_received.inc()
            pending.set(raw.metadata.num_pending)
            self._inflight[key] = None
            delivery = JsDelivery(
                raw, key, consumer=durable, max_deliver=max_deliver, on_ok=self._delivered,
                on_fail=self._failed,
            )  # fmt: skip
            await deliver(msg, delivery)

        server_max = max_deliver + SPARE_DELIVERIES
        config = api.ConsumerConfig(
            ack_wait=self.config.ack_wait_s,
            max_ack_pending=self.config.fetch_batch * 8,
            deliver_policy=api.DeliverPolicy.ALL,
            max_deliver=server_max,
        )
        await self._bound_deliveries(durable, server_max)
        sub = await self.js.subscribe(
            pattern,
            durable=durable,
            stream=self.config.stream,
            cb=cb,
            manual_ack=True,
            config=config,
        )
        self._subs.append(sub)
        self._durable_subs.append(sub)

    async def _bound_deliveries(self, durable: str, max_deliver: int) -> None:
        """Give an existing consumer (made before max_deliver was set) the bound too."""
        try:
            info = await self.js.consumer_info(self.config.stream, durable)
        except nats.js.errors.NotFoundError:
            return  # created below with the bound
        if info.config.max_deliver != max_deliver:
            info.config.max_deliver = max_deliver
            await self.js.add_consumer(self.config.stream, info.config)
            self.log.info("nats.consumer_updated", consumer=durable, max_deliver=max_deliver)

    async def stop_ingress(self) -> None:
        """Stop taking messages from NATS; unacked durable ones will be redelivered later."""
        for sub in self._subs:
            try:
                await sub.unsubscribe()
            except Exception as exc:
                self.log.debug("nats.unsubscribe_failed", error=repr(exc))
        self._subs.clear()

    async def close(self) -> None:
        """Stop egress once its queue is published, then drain the connection."""
        self.core.close()
        self.durable.close()
        self.dead_letters.close()

    async def drain(self) -> None:
        """Drain and close the connection (after ``run_egress`` has returned)."""
        if self.nc is not None and not self.nc.is_closed:
            try:
                await self.nc.drain()
            except Exception as exc:
                self.log.warning("nats.drain_failed", error=repr(exc))


async def publish_once(config: NatsConfig, msg: Message, *, origin: str = "cli") -> None:
    """Publish one durable message (a command from the command line) and wait for its ack.

    The stream must exist, i.e. a node has connected to this NATS with this configuration.
    """
    if not msg.durable:
        raise ValueError(f"{type(msg).__name__} is not durable")
    ns = f"{config.namespace}." if config.namespace else ""
    nc = await nats.connect(config.url, connect_timeout=int(max(1, config.connect_timeout_s)))
    try:
        await nc.jetstream().publish(
            ns + msg.subject(),
            Codec([type(msg)]).encode(msg),
            timeout=config.connect_timeout_s,
            headers={"Nats-Msg-Id": msg.dedup_id(), ORIGIN: origin},
        )
    finally:
        await nc.drain()
