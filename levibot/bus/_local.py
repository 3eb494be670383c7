"""The in-process bus: ``publish`` delivers to local mailboxes first, then to the mirror."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from levibot.bus._delivery import Delivery
from levibot.bus._mailbox import Done, Mailbox, MailboxClosed
from levibot.messages import Message, Overflow
from levibot.partition import Partition

#: The egress hook: hands a locally published message to the NATS mirror.
Egress = Callable[[Message], Awaitable[None]]


class Subscription:
    """One mailbox's interest in some message types; ``partition`` filters by symbol."""

    __slots__ = ("mailbox", "partition", "types")

    def __init__(
        self, mailbox: Mailbox, types: tuple[type[Message], ...], partition: Partition | None
    ) -> None:
        self.mailbox = mailbox
        self.types = types
        self.partition = partition if partition is not None and partition.count > 1 else None


class _Countdown:
    """Calls ``done`` once every local subscriber has handled a remote delivery."""

    __slots__ = ("done", "left")

    def __init__(self, left: int, done: Callable[[], None]) -> None:
        self.left = left
        self.done = done

    def __call__(self) -> None:
        self.left -= 1
        if self.left == 0:
            self.done()


class LocalBus:
    """Routes messages by type to subscribed mailboxes, in process, with no serialisation."""

    def __init__(self) -> None:
        self._subs: list[Subscription] = []
        self._routes: dict[type[Message], tuple[Subscription, ...]] = {}
        # Per type, the mailboxes it goes to when no route filters by partition (else None):
        # publish's fast path, without building a target list per message.
        self._fanout: dict[type[Message], tuple[Mailbox, ...] | None] = {}
        self.egress: Egress | None = None
        self.dropped_closed = 0  # published into a mailbox already closed by shutdown

    def subscribe(
        self,
        mailbox: Mailbox,
        types: tuple[type[Message], ...],
        partition: Partition | None = None,
    ) -> Subscription:
        """Deliver messages of ``types`` (and their subclasses) to ``mailbox``."""
        sub = Subscription(mailbox, types, partition)
        self._subs.append(sub)
        self._routes.clear()
        self._fanout.clear()
        return sub

    def routes(self, type_: type[Message]) -> tuple[Subscription, ...]:
        """Return the subscriptions a message of ``type_`` goes to (cached per type)."""
        routes = self._routes.get(type_)
        if routes is None:
            routes = tuple(s for s in self._subs if issubclass(type_, s.types))
            self._routes[type_] = routes
        return routes

    def _targets(self, msg: Message) -> list[Mailbox]:
        out = []
        for sub in self.routes(type(msg)):
            if sub.partition is not None and not sub.partition.owns(getattr(msg, "symbol", "")):
                continue
            out.append(sub.mailbox)
        return out

    async def _deliver(self, msg: Message, targets: list[Mailbox], done: Done) -> None:
        conflatable = msg.overflow is Overflow.CONFLATE
        for mailbox in targets:
            if conflatable and mailbox.conflate:
                mailbox.offer(msg, done)
            elif not mailbox.try_put(msg, done):
                try:
                    await mailbox.put(msg, done)
                except MailboxClosed:
                    self.dropped_closed += 1

    async def publish(self, msg: Message) -> None:
        """Deliver ``msg`` to every local subscriber, then hand it to the mirror if any.

        ``CONFLATE`` types never wait; ``BLOCK`` types wait while a mailbox is full.
        """
        try:
            mailboxes = self._fanout[type(msg)]
        except KeyError:
            routes = self.routes(type(msg))
            unfiltered = all(r.partition is None for r in routes)
            mailboxes = tuple(r.mailbox for r in routes) if unfiltered else None
            self._fanout[type(msg)] = mailboxes
        if mailboxes is None:
            await self._deliver(msg, self._targets(msg), None)
        elif mailboxes:
            conflatable = msg.overflow is Overflow.CONFLATE
            for mailbox in mailboxes:
                if conflatable and mailbox.conflate:
                    mailbox.offer(msg)
                elif not mailbox.try_put(msg):
                    await self._deliver(msg, [mailbox], None)
        if self.egress is not None:
            await self.egress(msg)

    async def deliver_remote(self, msg: Message, done: Callable[[], None] | None) -> int:
        """Deliver a message that came from NATS to local subscribers only (never re-published).

        ``done`` is called once every local subscriber has handled it (at once if none). A
        ``Delivery`` goes into the mailboxes itself, so that a failed handler can report on it.
        Return the number of local subscribers it went to.
        """
        targets = self._targets(msg)
        if not targets:
            if done is not None:
                done()
            return 0
        if isinstance(done, Delivery):
            done.expect(len(targets))
            await self._deliver(msg, targets, done)
        else:
            await self._deliver(msg, targets, _Countdown(len(targets), done) if done else None)
        return len(targets)

    def deliver_remote_nowait(
        self, msg: Message, done: Delivery | None = None
    ) -> Coroutine[Any, Any, None] | None:
        """Deliver a message from NATS to local subscribers without waiting.

        Return None when every subscriber took it (or conflated it), else a coroutine that
        waits until the full mailboxes take it too: the caller awaits it before it delivers
        anything more, so that the order holds (``CoreLink`` ingress, called inside a read).
        A durable message comes with its ``Delivery``, settled as with ``deliver_remote``.
        """
        targets = self._targets(msg)
        if done is not None:
            if not targets:
                done()
                return None
            done.expect(len(targets))
        full: list[Mailbox] | None = None
        conflatable = msg.overflow is Overflow.CONFLATE
        for mailbox in targets:
            if conflatable and mailbox.conflate:
                mailbox.offer(msg, done)
            elif not mailbox.try_put(msg, done):
                if full is None:
                    full = []
                full.append(mailbox)
        return None if full is None else self._deliver(msg, full, done)

    def stats(self) -> dict[str, Any]:
        """Return depth and drops per mailbox."""
        return {s.mailbox.name: (len(s.mailbox), s.mailbox.dropped) for s in self._subs}
