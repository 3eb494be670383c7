"""The NATS mirror: batched egress off the hot path, ingress for types produced elsewhere.

This module holds the connection and puts the parts together: subject planning
(``_subjects``), egress (``_egress``), ingress and its ack ledger (``_ingress``), failed
deliveries (``_dlq``) and the distributed settle of a split replay (``_settle``).

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

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
import nats
from nats.aio.msg import Msg

from levibot.bus import _dlq, _spill, _trace
from levibot.bus._dlq import DeadLetters
from levibot.bus._egress import CoreEgress, DurableEgress, Encoding, LocalBusy
from levibot.bus._ingress import Deliver, DeliverNowait, Ingress
from levibot.bus._jspub import JetStreamPublisher
from levibot.bus._link import CoreLink
from levibot.bus._own import Backlog, OwnCopies
from levibot.bus._settle import SettleMixin
from levibot.bus._subjects import ORIGIN, ensure_stream, namespace
from levibot.bus._subjects import minimal as _minimal
from levibot.bus._subjects import patterns as _patterns
from levibot.bus.connect import connect_options
from levibot.messages import Alert, AlertLevel, Codec, Message
from levibot.metrics import Metrics
from levibot.partition import Partition
from levibot.settings import NatsConfig

__all__ = ["ORIGIN", "Deliver", "NatsMirror", "_minimal", "_patterns", "publish_once"]


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
        tracer: Any = None,
        local_busy: LocalBusy | None = None,
        core_out: Mapping[type[Message], bool] | None = None,
        backlog: Backlog | None = None,
    ) -> None:
        self.config = config
        # Whether core messages of a type go out (``[nats] mirror``: the node decides it for the
        # types its actors emit); a type it does not name goes out, as with mirror = "all".
        self.core_out: dict[type[Message], bool] = dict(core_out or {})
        self.tracer = tracer  # levibot.tracing.Tracer when [tracing] is on (``_trace``)
        self.node = node
        self.consumer_name = consumer_name
        self.codec = codec
        self.log = log
        self.partition = partition
        self.nc: Any = None
        self.js: Any = None
        self.link: CoreLink | None = None  # core traffic's connection with [nats] core_link
        self._local: Deliver | None = None  # the local bus, for alerts raised here
        self._ns = namespace(config)
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
        self.m_reconnects = metrics.counter("levibot_nats_reconnects_total", "Reconnections.")
        self.m_spilled = metrics.counter(
            "levibot_nats_spilled_total", "Durable publishes not accepted in time: spilled."
        )
        self.spill_path = Path(data_dir) / "spill" / f"{consumer_name}.jsonl"
        self.encoding = Encoding(codec, node=node, ns=self._ns, errors=self.m_errors, log=log)
        self.core = CoreEgress(
            config, encode=self.encoding.core, published=self.m_published, errors=self.m_errors,
            dropped=self.m_dropped, log=log,
        )  # fmt: skip
        self.durable = DurableEgress(
            config, encode=self.encoding.durable, spill_path=self.spill_path,
            on_spill=self._on_spill, published=self.m_published, errors=self.m_errors,
            spilled=self.m_spilled, log=log,
        )  # fmt: skip
        if local_busy is not None:  # the node's: egress waits for its actors, no longer
            self.core.local_busy = self.durable.local_busy = local_busy
        self.dead_letters = DeadLetters(
            config, node=node, alert=self._alert_durable, metrics=metrics, log=log
        )
        # The node's own durable messages delivered back: acked once handled here (``_own``).
        self.own = OwnCopies(self.durable.ack_later, backlog)
        self.ingress = Ingress(
            config, node=node, consumer_name=consumer_name, codec=codec, metrics=metrics,
            log=log, partition=partition, on_ok=self.durable.ack_later,
            on_fail=self.dead_letters.failed, on_own=self.own.add,
        )  # fmt: skip
        self.m_bad = self.ingress.m_bad  # the fuzz test reads it here
        self._subs = self.ingress.subs  # every subscription, the settle one included
        if tracer is not None:
            _trace.wrap_encoding(self, tracer)

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
            **connect_options(self.config),  # the group's NATS user, TLS
        )
        self.js = self.nc.jetstream()
        await ensure_stream(self.js, self.config, self.codec.types)
        self.dead_letters.js = self.ingress.js = self.js
        self.core.nc = self.ingress.nc = self.nc
        # Not while tracing (trace contexts ride nats-py's callbacks), nor in a split replay,
        # whose settle rounds rely on one connection carrying the data and the rounds in order.
        if self.config.core_link and self.tracer is None and self.config.settle_nodes <= 1:
            await self._connect_link()
        # Durable publishes go on the link too when there is one: their acks are read there.
        self.durable.publisher = JetStreamPublisher(self.link or self.nc)
        if self.tracer is not None:
            _trace.wrap_connection(self)
        await _dlq.ensure_stream(self.js, self.config)
        self.log.info("nats.connected", url=self.config.url, stream=self.config.stream)
        await self.resend_spill()

    async def _connect_link(self) -> None:
        """Open the lean core connection (``_link``): core egress publishes, core ingress
        subscribes, durable egress publishes (``_jspub``) and the durable consumers' deliveries
        arrive and are acked (``_ingress``) on it from now on."""

        def on_reconnect() -> None:
            self.m_reconnects.inc()
            self.log.info("nats.link_reconnected")

        options = connect_options(self.config)
        self.link = await CoreLink(
            self.config.url, name=f"{self.node}-core", user=options.get("user", ""),
            password=options.get("password", ""), tls=options.get("tls"),
            connect_timeout_s=self.config.connect_timeout_s, log=self.log,
            on_reconnect=on_reconnect,
        ).connect()  # fmt: skip
        self.core.nc = self.ingress.link = self.link
        self.core.write_now = self.link.write_now
        self.log.info("nats.core_link", url=self.config.url)

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
        """Queue ``msg`` for publishing. Market data is dropped when full, and not sent when
        no actor elsewhere consumes it (``core_out``); durable waits."""
        if msg.durable or self.config.durable_all:
            await self.durable.put(msg)
        elif self.core_out.get(type(msg), True):
            self.core.put(msg)

    async def run_egress(self) -> None:
        """Publish queued messages until ``close`` and the queues are empty.

        Core and durable egress are separate tasks; so are the settling of failed deliveries
        and the acks of the node's own durable messages (``_own``).
        """
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.durable.run)
            tg.start_soon(self.dead_letters.run)
            tg.start_soon(self.own.run)
            await self.core.run()

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
            headers = self.encoding.core_headers
            await self.nc.publish(self._ns + alert.subject(), data, headers=headers)
        except Exception as exc:
            self.log.warning("nats.alert_failed", error=repr(exc))

    async def _alert_durable(self, alert: Alert) -> None:
        await self._deliver_alert(alert)
        await self.enqueue(alert)

    async def _deliver_alert(self, alert: Alert) -> None:
        if self._local is not None and Alert in self.codec.types:
            await self._local(alert, None)

    # -- ingress --------------------------------------------------------------------------

    async def start_ingress(
        self, types: Any, deliver: Deliver, deliver_nowait: DeliverNowait | None = None
    ) -> None:
        """Subscribe to ``types``: core subjects by callback (on the link, delivered with
        ``deliver_nowait``, when there is one), durable ones by push consumer."""
        if self.tracer is not None:
            deliver = _trace.wrap_deliver(deliver, self.tracer)
        self._local = deliver
        await self.ingress.start(types, deliver, deliver_nowait)

    def _decode(self, raw: Msg, wanted: tuple[type[Message], ...]) -> Message | None:
        return self.ingress.decode(raw, wanted)

    async def stop_ingress(self) -> None:
        """Stop taking messages from NATS; unacked durable ones will be redelivered later."""
        await self.ingress.stop()

    # -- stop -----------------------------------------------------------------------------

    async def close(self) -> None:
        """Stop egress once its queue is published, then drain the connection."""
        self.own.close()  # before durable egress: its acks go out through it
        self.core.close()
        self.durable.close()
        self.dead_letters.close()

    async def drain(self) -> None:
        """Drain and close the connection (after ``run_egress`` has returned)."""
        if self.link is not None:
            await self.link.close()
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
    ns = namespace(config)
    nc = await nats.connect(
        config.url,
        connect_timeout=int(max(1, config.connect_timeout_s)),
        **connect_options(config),
    )
    try:
        await nc.jetstream().publish(
            ns + msg.subject(),
            Codec([type(msg)]).encode(msg),
            timeout=config.connect_timeout_s,
            headers={"Nats-Msg-Id": msg.dedup_id(), ORIGIN: origin},
        )
    finally:
        await nc.drain()
