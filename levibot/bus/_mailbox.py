"""A bounded actor inbox with per-type overflow: conflate market data, block the rest."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from levibot.messages import Message, Overflow

#: Called once the message has been handled (JetStream deliveries ack through it).
Done = Callable[[], None] | None


class MailboxClosed(Exception):
    """The mailbox is closed and empty: the actor's receive loop ends."""


class Mailbox:
    """A FIFO of at most ``capacity`` messages.

    When full, a ``CONFLATE`` message replaces the pending message with the same conflation key,
    or else evicts the oldest pending conflatable message (both counted in ``dropped``); if
    nothing is conflatable it is dropped itself. A ``BLOCK`` message makes the publisher wait.
    With ``conflate=False`` (replay, backtest) every type blocks, so nothing is ever lost.

    Slots are two-element lists ``[msg, done]`` so that conflation can replace a pending message
    in place; an evicted slot becomes a tombstone (``msg is None``) that ``get`` skips.
    """

    __slots__ = (
        "_closed",
        "_conflatable",
        "_getter",
        "_keyed",
        "_putters",
        "_slots",
        "capacity",
        "conflate",
        "dropped",
        "name",
        "size",
    )

    def __init__(self, name: str, capacity: int, *, conflate: bool = True) -> None:
        if capacity < 1:
            raise ValueError("mailbox capacity must be >= 1")
        self.name = name
        self.capacity = capacity
        self.conflate = conflate
        self.size = 0
        self.dropped = 0
        self._slots: deque[Any] = deque()  # [msg, done] lists; (msg, done) in ReplayMailbox
        self._conflatable: deque[list[Any]] = deque()
        self._keyed: dict[Any, list[Any]] = {}
        self._getter: asyncio.Future[None] | None = None
        self._putters: deque[asyncio.Future[None]] = deque()
        self._closed = False

    def __len__(self) -> int:
        return self.size

    @property
    def closed(self) -> bool:
        """True once ``close`` was called (it may still hold messages to drain)."""
        return self._closed

    def _append(self, msg: Message, done: Done) -> None:
        slot = [msg, done]
        self._slots.append(slot)
        self.size += 1
        if self.conflate and msg.overflow is Overflow.CONFLATE:
            self._conflatable.append(slot)
            self._keyed[msg.conflation_key()] = slot
        getter = self._getter
        if getter is not None and not getter.done():
            getter.set_result(None)

    def offer(self, msg: Message, done: Done = None) -> bool:
        """Enqueue without waiting; return False if ``msg`` had to be dropped.

        Only valid for messages that may conflate; a full mailbox conflates or drops.
        """
        if self._closed:
            self.dropped += 1
            return False
        if self.size < self.capacity:
            self._append(msg, done)
            return True
        self.dropped += 1
        slot = self._keyed.get(msg.conflation_key())
        if slot is not None:
            slot[0] = msg  # the newer value replaces the pending one in place
            return True
        if self._evict_one():
            self._append(msg, done)
            return True
        return False

    def _evict_one(self) -> bool:
        """Drop the oldest pending conflatable message; return False if there is none."""
        while self._conflatable:
            victim = self._conflatable.popleft()
            if victim[0] is not None:
                key = victim[0].conflation_key()
                if self._keyed.get(key) is victim:
                    del self._keyed[key]
                victim[0] = None  # tombstone: get() skips it
                self.size -= 1
                return True
        return False

    def try_put(self, msg: Message, done: Done = None) -> bool:
        """Enqueue if there is room right now; the publisher's fast path."""
        if self.size < self.capacity and not self._closed:
            self._append(msg, done)
            return True
        return False

    async def put(self, msg: Message, done: Done = None) -> None:
        """Enqueue, waiting while the mailbox is full (back-pressure).

        A full mailbox first gives up its oldest market data: a message that must not be lost
        never waits behind one that may be. (Two actors feeding each other, risk and order,
        would otherwise block each other for good under overload.)
        """
        if self.size >= self.capacity and not self._closed and self._evict_one():
            self.dropped += 1
        while self.size >= self.capacity and not self._closed:
            fut = asyncio.get_running_loop().create_future()
            self._putters.append(fut)
            try:
                await fut
            finally:
                if not fut.done():
                    fut.cancel()
        if self._closed:
            raise MailboxClosed(self.name)
        self._append(msg, done)

    def _pop(self) -> list[Any]:
        while True:
            slot: list[Any] = self._slots.popleft()
            msg = slot[0]
            if msg is None:
                continue
            self.size -= 1
            # Conflatable slots are queued in the same order as all slots, so a consumed one is
            # always the head of ``_conflatable``; dropping it there keeps that deque bounded.
            if self._conflatable and self._conflatable[0] is slot:
                self._conflatable.popleft()
                key = msg.conflation_key()
                if self._keyed.get(key) is slot:
                    del self._keyed[key]
            if self._putters:
                self._wake_putter()
            return slot

    def _wake_putter(self) -> None:
        while self._putters:
            fut = self._putters.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    async def get(self) -> tuple[Message, Done]:
        """Return the next message; raise ``MailboxClosed`` once closed and empty."""
        while self.size == 0:
            if self._closed:
                raise MailboxClosed(self.name)
            self._getter = asyncio.get_running_loop().create_future()
            try:
                await self._getter
            finally:
                self._getter = None
        slot = self._pop()
        return slot[0], slot[1]

    def get_nowait(self) -> tuple[Message, Done]:
        """Return the next message without waiting; the mailbox must not be empty."""
        slot = self._pop()
        return slot[0], slot[1]

    def get_nowait_batch(self, limit: int) -> list[tuple[Message, Done]]:
        """Return up to ``limit`` pending messages without waiting."""
        out: list[tuple[Message, Done]] = []
        while self.size and len(out) < limit:
            slot = self._pop()
            out.append((slot[0], slot[1]))
        return out

    def close(self) -> None:
        """Refuse new messages; the receive loop ends once the pending ones are handled."""
        self._closed = True
        getter = self._getter
        if getter is not None and not getter.done():
            getter.set_result(None)
        while self._putters:
            fut = self._putters.popleft()
            if not fut.done():
                fut.set_result(None)


class ReplayMailbox(Mailbox):
    """A lossless mailbox drained by a replay scheduler instead of a receive loop.

    Nothing conflates. The first message appended while it is not queued queues it: ``wake``
    is called with the mailbox, and the scheduler sets ``queued`` back to False once it has
    drained it. ``put`` on a full mailbox first calls ``relieve`` (the scheduler drains what it
    can from there, rather than the publisher waiting for a receive loop that does not exist)
    and then appends even past ``capacity``: a publisher inside the drain must not wait for
    itself, and a replay settles after every event, so what one event causes bounds the excess.
    """

    __slots__ = ("pending", "queued", "relieve", "wake")

    def __init__(
        self,
        name: str,
        capacity: int,
        *,
        wake: Callable[[ReplayMailbox], None],
        relieve: Callable[[], Awaitable[None]],
    ) -> None:
        super().__init__(name, capacity, conflate=False)
        # The queued (msg, done) pairs, oldest first: the replay scheduler's ``settle`` pops
        # them itself (with ``size``), as ``get_nowait`` does, without a call per message.
        self.pending = self._slots
        self.queued = False
        self.wake = wake
        self.relieve = relieve

    # Slots are ``(msg, done)`` tuples: nothing conflates, so none is ever replaced in place.
    def _append(self, msg: Message, done: Done) -> None:
        self._slots.append((msg, done))
        self.size += 1
        if not self.queued:
            self.queued = True
            self.wake(self)

    def try_put(self, msg: Message, done: Done = None) -> bool:
        """Enqueue if there is room right now (``_append`` inlined: the replay's hot path)."""
        if self.size < self.capacity and not self._closed:
            self._slots.append((msg, done))
            self.size += 1
            if not self.queued:
                self.queued = True
                self.wake(self)
            return True
        return False

    def get_nowait(self) -> tuple[Message, Done]:
        """Return the next message without waiting; the mailbox must not be empty."""
        self.size -= 1
        return self._slots.popleft()  # type: ignore[no-any-return]

    def get_nowait_batch(self, limit: int) -> list[tuple[Message, Done]]:
        """Return up to ``limit`` pending messages without waiting."""
        slots = self._slots
        if self.size <= limit:
            self.size = 0
            batch = list(slots)
            slots.clear()
            return batch
        self.size -= limit
        return [slots.popleft() for _ in range(limit)]

    async def put(self, msg: Message, done: Done = None) -> None:
        """Enqueue; when full, let the scheduler drain first (never waits for a reader)."""
        if self.size >= self.capacity and not self._closed:
            await self.relieve()
        if self._closed:
            raise MailboxClosed(self.name)
        self._append(msg, done)


class TapMailbox(Mailbox):
    """A replay mailbox that hands each message, as it is put, to a synchronous ``handle``.

    For a consumer that never publishes and only keeps what it gets in arrival order (the
    backtest recorder): arrival order through a FIFO is publish order, so handling at publish
    time keeps it, for no queueing, no wake-up and no drain. It never holds a message.
    """

    __slots__ = ("handle",)

    def __init__(self, name: str, handle: Callable[[Message], None]) -> None:
        super().__init__(name, 1, conflate=False)
        self.handle = handle

    def try_put(self, msg: Message, done: Done = None) -> bool:
        """Handle ``msg`` now (False once closed)."""
        if self._closed:
            return False
        self.handle(msg)
        if done is not None:
            done()
        return True

    async def put(self, msg: Message, done: Done = None) -> None:
        """Handle ``msg`` now; raise ``MailboxClosed`` once closed."""
        if not self.try_put(msg, done):
            raise MailboxClosed(self.name)

    def offer(self, msg: Message, done: Done = None) -> bool:
        """Handle ``msg`` now (False once closed, counted as dropped)."""
        if self.try_put(msg, done):
            return True
        self.dropped += 1
        return False
