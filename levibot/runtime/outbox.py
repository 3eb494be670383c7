"""``Outbox``: the last durable messages an actor published, persisted with its state.

Why: an actor that keeps state (risk, order) publishes its outputs, then saves the state that
reflects them. ``publish`` only queues a message for NATS; the server confirms it a round trip
later, or seconds later on a slow link. A ``kill -9`` in between leaves a state that knows a
fact (an intent approved, a fill booked) that the stream never got: the input that caused it
is redelivered, recognised as a duplicate and dropped, and nothing re-sends the output; an
output caused by market data (an exit fill) has no redelivery at all.

So the outputs go into the state too: the outbox keeps the last ``limit`` durable messages,
the actor saves it with its state, and re-publishes it when it starts. A re-published message
carries its message id, so JetStream drops it inside its duplicate window
(``[nats] duplicate_window_s``), and every consumer is idempotent beyond it (fill ids, client
order ids, upserts). ``limit`` must exceed what can be queued but unconfirmed when the process
dies: a few messages per handled input, times the inputs handled during one slow publish.

Persist, then publish (``hold=True``, an actor that saves its state): what a handling
publishes is held (``hold``) and sent once the state that made it is saved (``release``).
Published at once instead, an output could be confirmed by JetStream before its save, and a
``kill -9`` between the two left a fact on the stream that the restarted actor did not know: a
redelivered intent filled again at a later price under the same fill id, which the stream
dropped as a duplicate, or a redelivered order was decided again, perhaps otherwise, under the
same id. Now a kill before the save loses the output everywhere (the redelivered input makes it
again), and one after it leaves the outbox to re-send it. A save that raised releases nothing:
what it held stays, recorded here, and goes out after the next save that succeeds.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Generic, TypeVar

from levibot.messages import Message

M = TypeVar("M", bound=Message)

__all__ = ["Outbox"]


class Outbox(Generic[M]):
    """A bounded record of the durable messages published, oldest first; with ``hold``, the
    messages published since the last save, held until it is done."""

    def __init__(self, limit: int, restored: Iterable[M] = (), *, hold: bool = False) -> None:
        self._items: deque[M] = deque(restored, maxlen=limit)
        self._hold = hold
        #: What ``hold`` kept, in publishing order, for the next ``release``.
        self.unsent: list[Message] = []

    def record(self, msg: M) -> None:
        """Remember ``msg`` if it is durable (core messages are at most once anyway)."""
        if type(msg).durable:
            self._items.append(msg)

    def hold(self, msg: Message) -> bool:
        """Record ``msg`` (if durable); return True when it is held for ``release``, False when
        the caller publishes it now (no persistence: nothing is saved, nothing waits)."""
        if type(msg).durable:
            self._items.append(msg)  # type: ignore[arg-type]  # a durable one is an M
        if self._hold:
            self.unsent.append(msg)
            return True
        return False

    async def release(self, publish: Callable[[Message], Awaitable[None]]) -> None:
        """Publish what was held, in order: call it once the state that made it is saved."""
        unsent, self.unsent = self.unsent, []
        for msg in unsent:
            await publish(msg)

    def to_list(self) -> list[M]:
        """Return the recorded messages, oldest first (what the state persists)."""
        return list(self._items)

    def __len__(self) -> int:
        return len(self._items)

    async def replay(self, publish: Callable[[M], Awaitable[None]]) -> int:
        """Publish every recorded message again, in order; return how many."""
        for msg in list(self._items):
            await publish(msg)
        return len(self._items)
