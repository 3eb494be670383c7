"""Poison durable messages: delayed redelivery, then the dead-letter stream and an alert.

A durable message whose local handler raised is nak'ed with a delay (``[nats]
redeliver_delay_s``, doubling, at most 30 s) and tried again, up to ``max_deliver`` times. The
failure on the last try moves it to the dead-letter stream and terminates it (``term``): the
consumer goes on with the next message and an ``Alert`` tells the operators.

The dead-letter stream (``<NAMESPACE>_DLQ``; subjects ``<namespace>.lb.dlq.<consumer>``) keeps
the original payload and headers (``Nats-Msg-Id`` is kept as ``Lb-Dlq-Msg-Id``; JetStream
would read it itself) plus the original subject, stream and sequence, the consumer, the actor,
the delivery count and the error (type and message, never locals). Its own ``Nats-Msg-Id`` is
derived from the original stream sequence, so a node that dies between the dead-letter write and
the ``term`` does not dead-letter the message twice.

``max_deliver`` counts the server's deliveries, whatever caused the earlier ones. The consumers
are created with ``SPARE_DELIVERIES`` more than that: a redelivery that no handler failure caused
(the node holding it was killed, its ack_wait expired in a busy mailbox) is still handled, and a
failure from ``max_deliver`` on is dead-lettered at once. Only a node that dies on each of the
last spare deliveries too leaves the message to the server's bound (it stops redelivering; the
message stays in the stream, unacked, and JetStream emits its MAX_DELIVERIES advisory).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import api

from levibot import backoff
from levibot.bus._delivery import Delivery, error_text
from levibot.messages import Alert, AlertLevel
from levibot.settings import NatsConfig

H_SUBJECT = "Lb-Dlq-Subject"
H_STREAM = "Lb-Dlq-Stream"
H_SEQ = "Lb-Dlq-Seq"
H_CONSUMER = "Lb-Dlq-Consumer"
H_ACTOR = "Lb-Dlq-Actor"
H_DELIVERIES = "Lb-Dlq-Deliveries"
H_ERROR = "Lb-Dlq-Error"
H_NODE = "Lb-Dlq-Node"
H_MSG_ID = "Lb-Dlq-Msg-Id"
REPLAY_ORIGIN = "dlq-replay"  # never a node id: every node takes a replayed message
MAX_REDELIVER_DELAY_S = 30.0
SPARE_DELIVERIES = 5  # server-side bound = max_deliver + this (see above)
SIZE_POLL_S = 10.0  # how often a node reads the dead-letter stream's size for its gauge


def _ns(config: NatsConfig) -> str:
    return f"{config.namespace}." if config.namespace else ""


def dlq_stream(config: NatsConfig) -> str:
    """Return the dead-letter stream's name: ``dlq_stream``, or derived from the namespace."""
    if config.dlq_stream:
        return config.dlq_stream
    base = re.sub(r"[^A-Za-z0-9_-]", "_", config.namespace).upper() or "LEVIBOT"
    return f"{base}_DLQ"


def dlq_subject(config: NatsConfig, consumer: str = ">") -> str:
    """Return the subject dead letters of ``consumer`` go to (all of them by default)."""
    return f"{_ns(config)}lb.dlq.{consumer}"


async def ensure_stream(js: Any, config: NatsConfig) -> None:
    """Create the dead-letter stream, or add this namespace's subject to it."""
    name, subject = dlq_stream(config), dlq_subject(config)
    try:
        info = await js.stream_info(name)
        if subject not in (info.config.subjects or ()):
            info.config.subjects = [*(info.config.subjects or ()), subject]
            await js.update_stream(info.config)
    except nats.js.errors.NotFoundError:
        await js.add_stream(
            api.StreamConfig(
                name=name,
                subjects=[subject],
                storage=api.StorageType.FILE,
                duplicate_window=config.duplicate_window_s,
            )
        )


def delivery_key(raw: Msg) -> str:
    """Return what identifies ``raw`` across redeliveries: its message id, else its sequence."""
    msg_id = raw.headers.get("Nats-Msg-Id") if raw.headers else None
    if msg_id:
        return str(msg_id)
    meta = raw.metadata
    return f"{meta.stream}:{meta.sequence.stream}"


class JsDelivery(Delivery):
    """A JetStream delivery: acked through ``on_ok``, failures through ``on_fail``."""

    __slots__ = ("consumer", "on_fail", "on_ok", "raw")

    def __init__(
        self,
        raw: Msg,
        key: str,
        *,
        consumer: str,
        max_deliver: int,
        on_ok: Callable[[JsDelivery], None],
        on_fail: Callable[[JsDelivery], None],
    ) -> None:
        attempt = raw.metadata.num_delivered
        super().__init__(key, attempt, final=attempt >= max_deliver)
        self.raw = raw
        self.consumer = consumer
        self.on_ok = on_ok
        self.on_fail = on_fail

    def settle(self) -> None:
        """Ack after egress when every handler succeeded; else redeliver or dead-letter."""
        if self.error is None:
            self.on_ok(self)
        else:
            self.on_fail(self)


Alerting = Callable[[Alert], Awaitable[None]]


class DeadLetters:
    """Settles failed deliveries off the receive loops: nak with delay, or dead-letter."""

    def __init__(
        self, config: NatsConfig, *, node: str, alert: Alerting, metrics: Any, log: Any
    ) -> None:
        self.config = config
        self.node = node
        self.alert = alert
        self.log = log
        self.js: Any = None
        self.closing = False
        self._failed: deque[JsDelivery] = deque()
        self._wakeup = asyncio.Event()
        self.m_redelivered = metrics.counter(
            "levibot_nats_redelivery_requested_total",
            "Durable messages nak'ed after a handler failed, to be tried again.",
        )
        self.m_dead = metrics.counter(
            "levibot_nats_dead_lettered_total", "Durable messages moved to the dead-letter stream."
        )
        self.m_size = metrics.gauge(
            "levibot_nats_dead_letters",
            "Messages of this namespace in the dead-letter stream (read every 10 s; NaN: unknown).",
        )
        self.m_size.set(float("nan"))

    def failed(self, delivery: JsDelivery) -> None:
        """Queue a delivery whose handler raised (called from a receive loop)."""
        self._failed.append(delivery)
        self._wakeup.set()

    def close(self) -> None:
        """Let ``run`` return once every queued failure is settled."""
        self.closing = True
        self._wakeup.set()

    async def run(self) -> None:
        """Settle failed deliveries until ``close``; keep the stream's size gauge fresh."""
        while True:
            while self._failed:
                await self._settle(self._failed.popleft())
            if self.closing:
                return
            self._wakeup.clear()
            await self.read_size()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), SIZE_POLL_S)

    async def read_size(self) -> None:
        """Set the size gauge from the stream (this namespace's subjects only)."""
        if self.js is None:
            return
        try:
            info = await self.js.stream_info(
                dlq_stream(self.config), subjects_filter=dlq_subject(self.config)
            )
        except Exception as exc:  # NATS away: the gauge keeps its last value
            self.log.debug("nats.dlq_size_failed", error=repr(exc))
            return
        self.m_size.set(float(sum((info.state.subjects or {}).values())))

    async def _settle(self, d: JsDelivery) -> None:
        assert d.error is not None
        error = error_text(d.error)
        if not d.final:
            delay = backoff.delay(
                d.attempt - 1, self.config.redeliver_delay_s, MAX_REDELIVER_DELAY_S, jitter=False
            )
            self.m_redelivered.inc()
            try:
                await d.raw.nak(delay=delay)
            except Exception as exc:  # unacked: the server redelivers it after ack_wait
                self.log.warning("nats.nak_failed", error=repr(exc))
            return
        await self.dead_letter(d.raw, consumer=d.consumer, actor=d.actor, error=error)

    async def dead_letter(self, raw: Msg, *, consumer: str, actor: str, error: str) -> None:
        """Write ``raw`` to the dead-letter stream, terminate it and raise an alert."""
        meta = raw.metadata
        headers = {k: v for k, v in (raw.headers or {}).items() if not k.startswith("Nats-")}
        msg_id = (raw.headers or {}).get("Nats-Msg-Id", "")
        headers.update({
            H_SUBJECT: raw.subject, H_STREAM: meta.stream, H_SEQ: str(meta.sequence.stream),
            H_CONSUMER: consumer, H_ACTOR: actor or "-", H_DELIVERIES: str(meta.num_delivered),
            H_ERROR: error, H_NODE: self.node, H_MSG_ID: msg_id,
            "Nats-Msg-Id": f"dlq:{meta.stream}:{meta.sequence.stream}",
        })  # fmt: skip
        try:
            ack = await self.js.publish(
                dlq_subject(self.config, consumer),
                raw.data,
                timeout=self.config.connect_timeout_s,
                headers=headers,
            )
        except Exception as exc:  # the next delivery fails again and tries again
            self.log.error("nats.dead_letter_failed", subject=raw.subject, error=repr(exc))
            try:
                await raw.nak(delay=self.config.redeliver_delay_s)
            except Exception as nak_exc:
                self.log.warning("nats.nak_failed", error=repr(nak_exc))
            return
        try:
            await raw.term()
        except Exception as exc:  # redelivered later: deduplicated in the DLQ, then termed
            self.log.warning("nats.term_failed", error=repr(exc))
        self.m_dead.inc()
        self.log.error(
            "nats.dead_lettered", subject=raw.subject, consumer=consumer, actor=actor,
            deliveries=meta.num_delivered, error=error, dlq_seq=ack.seq,
        )  # fmt: skip
        now = time.time_ns()
        text = (
            f"dead letter: {raw.subject} failed {meta.num_delivered} times in {actor or '?'} "
            f"({error}); `levibot dlq show {ack.seq}`"
        )
        await self.alert(
            Alert(
                ts_event=now, ts_init=now, alert_id=f"dlq-{meta.stream}-{meta.sequence.stream}",
                level=AlertLevel.CRITICAL, source=f"nats:{consumer}", text=text, code="DEAD_LETTER",
            )
        )  # fmt: skip


# -- reading and managing the stream (``levibot dlq``) ---------------------------------------


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    """One entry of the dead-letter stream."""

    seq: int  # its sequence in the dead-letter stream: the id ``levibot dlq`` takes
    subject: str  # the original subject (namespace included)
    consumer: str
    actor: str
    deliveries: int
    error: str
    node: str
    msg_id: str  # the original Nats-Msg-Id
    time: str  # when it was dead-lettered (ISO 8601, UTC)
    headers: dict[str, str]  # every header as stored
    data: bytes

    @classmethod
    def from_raw(cls, raw: Any) -> DeadLetter:
        """Build from a ``get_msg`` answer."""
        h = {k: str(v) for k, v in (raw.headers or {}).items()}
        return cls(
            seq=int(raw.seq), subject=h.get(H_SUBJECT, ""), consumer=h.get(H_CONSUMER, ""),
            actor=h.get(H_ACTOR, ""), deliveries=int(h.get(H_DELIVERIES, "0") or 0),
            error=h.get(H_ERROR, ""), node=h.get(H_NODE, ""), msg_id=h.get(H_MSG_ID, ""),
            time=raw.time.isoformat() if raw.time else "", headers=h, data=raw.data or b"",
        )  # fmt: skip


async def letters(js: Any, config: NatsConfig) -> list[DeadLetter]:
    """Return every dead letter of this namespace, oldest first."""
    name, subject = dlq_stream(config), dlq_subject(config)
    try:
        info = await js.stream_info(name)
    except nats.js.errors.NotFoundError:
        return []
    out: list[DeadLetter] = []
    seq = info.state.first_seq
    while info.state.messages and seq <= info.state.last_seq:
        try:
            raw = await js.get_msg(name, seq=seq, subject=subject, next=True)
        except nats.js.errors.NotFoundError:
            break
        out.append(DeadLetter.from_raw(raw))
        seq = int(raw.seq) + 1
    return out


async def letter(js: Any, config: NatsConfig, seq: int) -> DeadLetter | None:
    """Return dead letter ``seq``, or None when there is none of this namespace."""
    try:
        raw = await js.get_msg(dlq_stream(config), seq=seq)
    except nats.js.errors.NotFoundError:
        return None
    found = DeadLetter.from_raw(raw)
    return found if raw.subject.startswith(dlq_subject(config, "")) else None


async def replay(js: Any, config: NatsConfig, dead: DeadLetter) -> str:
    """Publish ``dead`` again on its original subject and remove it; return its new msg id.

    The new ``Nats-Msg-Id`` (the original one with a replay suffix) keeps the stream's
    deduplication from dropping it; the origin header is not a node's, so every node takes it.
    """
    headers = {k: v for k, v in dead.headers.items() if not k.startswith(("Lb-Dlq-", "Nats-"))}
    msg_id = f"{dead.msg_id or 'dlq'}:replay:{uuid.uuid4().hex[:12]}"
    headers.update({"Nats-Msg-Id": msg_id, "Lb-Origin": REPLAY_ORIGIN})
    await js.publish(dead.subject, dead.data, timeout=config.connect_timeout_s, headers=headers)
    await js.delete_msg(dlq_stream(config), dead.seq)
    return msg_id


async def purge(js: Any, config: NatsConfig) -> int:
    """Remove every dead letter of this namespace; return how many there were."""
    try:
        info = await js.stream_info(dlq_stream(config), subjects_filter=dlq_subject(config))
    except nats.js.errors.NotFoundError:
        return 0
    count = sum((info.state.subjects or {}).values()) if info.state.subjects else 0
    await js.purge_stream(dlq_stream(config), subject=dlq_subject(config))
    return int(count)
