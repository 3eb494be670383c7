"""A node's egress to NATS: core (market data) and durable (JetStream), each its own task.

Core egress publishes at most once: a full queue drops market data (counted), a failed publish
is counted and dropped, and nothing waits for the server. What is queued when the loop turns
goes out in frames (``_frame``), one per run of messages under one subject root: one encode,
one PUB, no headers.

Durable egress: JetStream publishes in order, each batch within a retry budget, then spilled.
A batch is in flight at once, its acks gathered on one subscription (``_jspub``).

Durable messages have their own queue and task, apart from market data (core NATS): a publish
the server does not accept delays the durable messages behind it, never a tick. A batch is
retried with backoff for at most ``[nats] publish_retry_s`` seconds or ``publish_attempts``
tries; what is still refused then goes to the local spill file (``_spill``), counts as
confirmed (it is on local disk), and an alert is raised. While the server keeps refusing, the
following batches get a single try each, so the durable pipeline does not stall for a whole
budget per batch; the first accepted publish ends that state.

Incoming durable messages are acked only after everything the node enqueued before their
handling finished is confirmed (published or spilled): ``pending_acks`` holds them by sequence.

After a quiet spell, durable egress lingers ``[nats] durable_linger_s`` before it publishes (and
acks): at the rate orders and fills come, each would otherwise take a write, a server ack, a
delivery back and an ack of its own. Acks that fall due with nothing to publish linger too, so
that the next batch carries them in its write: the node's own copies of a batch come back with
its server acks, and their acks would otherwise take a write of their own, one per batch.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
from nats.aio.msg import Msg

from levibot.backoff import Backoff
from levibot.bus import _spill
from levibot.bus._delivery import error_text
from levibot.bus._frame import FrameEncoder
from levibot.bus._jspub import JetStreamPublisher
from levibot.bus._sequence import Sequencer
from levibot.bus._spill import Item
from levibot.bus._subjects import ORIGIN
from levibot.messages import Codec, Message
from levibot.settings import NatsConfig

#: Called when messages were spilled: (count, last error, True on the first spill of a spell).
OnSpill = Callable[[int, str, bool], Awaitable[None]]

#: True while the node's own actors still have messages to handle (``Node._idle`` negated).
LocalBusy = Callable[[], bool]


def _always_busy() -> bool:
    return True


async def settle_first(turns: int, local_busy: LocalBusy) -> None:
    """Let the local pipeline run on before a batch goes out, for at most ``turns`` loop turns.

    What the node's actors are about to publish joins this batch (one write instead of several:
    on a VM each write that wakes the server costs tens of µs), and the mirror stays off the hot
    path instead of interleaving with it. But once no local mailbox holds a message and no actor
    is handling one, nothing more is coming this turn, and waiting longer only adds latency.
    """
    for _ in range(turns):
        if not local_busy():
            return
        await asyncio.sleep(0)


class Encoding:
    """Turns a message into its publish: subject, payload and headers, core or JetStream."""

    def __init__(self, codec: Codec, *, node: str, ns: str, errors: Any, log: Any) -> None:
        self.codec = codec
        self.node = node
        self.ns = ns
        self.log = log
        self.m_errors = errors
        self.core_headers = {ORIGIN: node}
        self.sequencer = Sequencer(self.core_headers)  # core messages numbered per subject
        self._frames = FrameEncoder()

    def payload(self, msg: Message) -> bytes | None:
        """Return the bytes of ``msg``; None (logged, counted) when it cannot be encoded."""
        try:
            return self.codec.encode(msg)
        except Exception as exc:  # a message that cannot be encoded is a bug: say so
            self.m_errors.inc()
            self.log.error("nats.encode_failed", type=type(msg).__name__, error=repr(exc))
            return None

    def core(self, msgs: list[Message]) -> list[tuple[str, bytes, int]]:
        """Return the core publishes of ``msgs``: one frame per run of messages under the same
        subject root (``lb.md.tick.>``), on the subject of its first message, in order (a
        receiver sees the order they were published in), each with its message count; the
        unencodable are left out, logged. A message on a bare root subject (``lb.portfolio``)
        is a run of its own subject: a ``root.>`` subscription does not see that subject."""
        runs: list[tuple[str, list[Message]]] = []
        ns = self.ns
        last: Any = None
        for msg in msgs:
            subject = ns + msg.subject()
            root = type(msg).subject_root
            # Runs are keyed by root for subjects under it, else by the subject itself.
            key = root if len(subject) > len(ns) + len(root) else subject
            if key == last:
                runs[-1][1].append(msg)
            else:
                runs.append((subject, [msg]))
                last = key
        out = []
        for subject, group in runs:
            try:
                data = self._encode_frame(subject, group)
            except Exception:  # a message that cannot be encoded: find it, send the others
                group = [m for m in group if self.payload(m) is not None]
                if not group:
                    continue
                data = self._encode_frame(subject, group)
            out.append((subject, data, len(group)))
        return out

    def _encode_frame(self, subject: str, msgs: list[Message]) -> bytes:
        seq = self.sequencer
        data = self._frames.encode(self.node, seq.incarnation, seq.peek(subject), msgs)
        seq.take(subject, len(msgs))  # only once encoded: a failed frame leaves no false gap
        return data

    def durable(self, msg: Message) -> Item | None:
        """Return the JetStream publish of ``msg`` (None, logged, if it cannot be encoded)."""
        data = self.payload(msg)
        if data is None:
            return None
        # Market types have no domain id: an identical payload is the same fact (replay is
        # deterministic, so a restarted producer re-publishes identical bytes).
        msg_id = (
            msg.dedup_id() if msg.durable else hashlib.blake2b(data, digest_size=12).hexdigest()
        )
        return self.ns + msg.subject(), data, {"Nats-Msg-Id": msg_id, ORIGIN: self.node}


class CoreEgress:
    """The core-NATS half of a node's egress. ``encode`` turns a batch into frames (``_frame``):
    (subject, payload, message count) each."""

    def __init__(
        self,
        config: NatsConfig,
        *,
        encode: Callable[[list[Message]], list[tuple[str, bytes, int]]],
        published: Any,
        errors: Any,
        dropped: Any,
        log: Any,
    ) -> None:
        self.config = config
        self.encode = encode
        self.log = log
        self.nc: Any = None
        self.queue: deque[Message] = deque()
        self.busy = False
        self.closing = False
        self.local_busy: LocalBusy = _always_busy  # set by the node (``settle_first``)
        # The core link's: a batch is written as soon as it is published, not at the end of
        # the loop turn (one turn off a hop). nats-py's flusher task writes on a turn of its own.
        self.write_now: Callable[[], None] | None = None
        self._wakeup = asyncio.Event()
        self.m_published = published  # counters shared with the mirror
        self.m_errors = errors
        self.m_dropped = dropped

    @property
    def idle(self) -> bool:
        """True when nothing is queued or being published."""
        return not self.queue and not self.busy

    def put(self, msg: Message) -> None:
        """Queue ``msg``, or drop it (counted) when the queue is full."""
        if len(self.queue) >= self.config.egress_queue:
            self.m_dropped.inc()
            return
        self.queue.append(msg)
        self._wakeup.set()

    def close(self) -> None:
        """Let ``run`` return once its queue is published."""
        self.closing = True
        self._wakeup.set()

    async def run(self) -> None:
        """Publish queued messages in batches until ``close`` and the queue is empty."""
        batch_size = self.config.egress_batch
        while True:
            if not self.queue:
                if self.closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                await settle_first(self.config.egress_yield, self.local_busy)
                continue
            n = min(batch_size, len(self.queue))
            batch = [self.queue.popleft() for _ in range(n)]
            self.busy = True
            for subject, data, count in self.encode(batch):
                try:
                    await self.nc.publish(subject, data)
                    self.m_published.inc(count)
                except Exception as exc:  # at most once: counted and dropped
                    self.m_errors.inc()
                    self.m_dropped.inc(count)
                    self.log.debug("nats.publish_failed", error=repr(exc))
            if self.write_now is not None:
                self.write_now()
            self.busy = False


class DurableEgress:
    """The durable half of a node's egress. ``encode`` turns a message into a publish."""

    def __init__(
        self,
        config: NatsConfig,
        *,
        encode: Callable[[Message], Item | None],
        spill_path: Path,
        on_spill: OnSpill,
        published: Any,
        errors: Any,
        spilled: Any,
        log: Any,
    ) -> None:
        self.config = config
        self.encode = encode
        self.spill_path = spill_path
        self.on_spill = on_spill
        self.log = log
        self.publisher: JetStreamPublisher | None = None  # set when the mirror connects
        self.queue: deque[Message] = deque()
        self.enqueued = 0  # sequence number of the last message queued
        self.confirmed = 0  # every message up to this sequence is published or spilled
        self.pending_acks: deque[tuple[int, Msg]] = deque()
        self.refusing = False  # the last batch was spilled: one try per batch until one passes
        self.closing = False
        self.local_busy: LocalBusy = _always_busy  # set by the node (``settle_first``)
        # ``[nats] durable_linger_s``, but none in a split replay, which waits for this egress
        # to be idle after every event.
        self.linger_s = config.durable_linger_s if config.settle_nodes <= 1 else 0.0
        self._wakeup = asyncio.Event()
        self._space = asyncio.Event()
        self._inflight: list[Item] = []
        self.m_published = published  # counters shared with the mirror
        self.m_errors = errors
        self.m_spilled = spilled

    @property
    def idle(self) -> bool:
        """True when nothing is queued, in flight or waiting for its ack."""
        return not self.queue and self.confirmed == self.enqueued and not self.pending_acks

    async def put(self, msg: Message) -> None:
        """Queue ``msg``; wait while the queue is full (back-pressure, never a loss)."""
        while len(self.queue) >= self.config.egress_queue and not self.closing:
            self._space.clear()
            await self._space.wait()
        self.queue.append(msg)
        self.enqueued += 1
        self._wakeup.set()

    def ack_later(self, raw: Msg) -> None:
        """Ack ``raw`` once everything queued so far is confirmed."""
        self.pending_acks.append((self.enqueued, raw))
        self._wakeup.set()

    def close(self) -> None:
        """Let ``run`` return once its queue is published."""
        self.closing = True
        self._wakeup.set()
        self._space.set()

    async def run(self) -> None:
        """Publish queued messages in batches until ``close`` and the queue is empty."""
        lingered = False  # what is due now has waited a linger already
        try:
            while True:
                if not self.queue:
                    if self._acks_due():
                        if self.linger_s and not lingered and not self.closing:
                            await anyio.sleep(self.linger_s)  # a batch queued meanwhile takes them
                            lingered = True
                        else:
                            await self._release_acks()  # alone: nothing came to carry them
                            lingered = False
                        continue
                    if self.closing:
                        return
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    if self.linger_s and not self.closing:
                        await anyio.sleep(self.linger_s)  # what comes meanwhile joins the batch
                        lingered = True
                    else:
                        await settle_first(self.config.egress_yield, self.local_busy)
                    continue
                await self._release_acks()  # those due ride in this batch's write
                lingered = False
                n = min(self.config.egress_batch, len(self.queue))
                batch = [self.queue.popleft() for _ in range(n)]
                self._space.set()
                items = [i for i in map(self.encode, batch) if i is not None]
                self._inflight = items
                await self._publish(items)
                self._inflight = []
                self.confirmed += n
        finally:
            self._spill_leftovers()

    def _spill_leftovers(self) -> None:
        # Cancelled (a drain that timed out, a second signal): what is not confirmed goes to the
        # spill synchronously. The loop is shutting down, so blocking here stalls no one.
        items = [*self._inflight, *(i for i in map(self.encode, self.queue) if i is not None)]
        if items:
            _spill.append_sync(self.spill_path, items, "node stopped before the server accepted")
            self.m_spilled.inc(len(items))
            self.log.error("nats.spilled_at_stop", count=len(items), path=str(self.spill_path))
            self.queue.clear()
            self._inflight = []

    async def _publish(self, items: list[Item]) -> None:
        backoff = Backoff(0.05, 2.0, jitter=False)
        started = time.monotonic()
        budget_s = self.config.publish_retry_s
        # Refusing, or stopping (the drain must end): one try, then the spill, re-sent later.
        attempts = 1 if self.refusing or self.closing else self.config.publish_attempts
        timeout = min(self.config.connect_timeout_s, budget_s)
        for attempt in range(1, attempts + 1):
            assert self.publisher is not None  # run starts after connect
            results = await self.publisher.publish(items, timeout)
            failed = [i for i, r in zip(items, results, strict=True) if r is not None]
            self.m_published.inc(len(items) - len(failed))
            if not failed:
                if self.refusing:
                    self.refusing = False
                    self.log.info("nats.publish_recovered")
                return
            self.m_errors.inc(len(failed))
            error = next(error_text(r) for r in results if r is not None)
            left = budget_s - (time.monotonic() - started)
            if attempt == attempts or left <= 0 or self.closing:
                await self._spill(failed, error)
                return
            # Retrying is safe: the server deduplicates on Nats-Msg-Id.
            wait = backoff.next()
            self.log.warning("nats.durable_retry", count=len(failed), backoff_s=wait)
            await anyio.sleep(min(wait, left))
            items = self._inflight = failed

    async def _spill(self, items: list[Item], error: str) -> None:
        first = not self.refusing
        self.refusing = True
        await _spill.append(self.spill_path, items, error)
        self.m_spilled.inc(len(items))
        self.log.error("nats.spilled", count=len(items), error=error, path=str(self.spill_path))
        await self.on_spill(len(items), error, first)

    def _acks_due(self) -> bool:
        """True when the oldest held ack's messages are all confirmed."""
        return bool(self.pending_acks) and self.pending_acks[0][0] <= self.confirmed

    async def _release_acks(self) -> None:
        while self._acks_due():
            _, raw = self.pending_acks.popleft()
            try:
                await raw.ack()
            except Exception as exc:  # unacked: it will be redelivered and deduplicated
                self.log.warning("nats.ack_failed", error=repr(exc))
