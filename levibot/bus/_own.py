"""A node's own durable messages, delivered back by its durable consumer: acked once handled here.

A durable type that one of the node's actors consumes is taken from NATS even when another of
its actors produces it (``Node.remote_types``): a restarted process gets what its predecessor
published and never handled. The copy NATS delivers back to the publishing process itself is
not handled again (its local copy went into the local mailboxes before it went out), but it must
not be acked before that local copy is handled either: a kill -9 in between would leave it acked
in the stream and lost.

So an own copy is held until everything that was in a local mailbox, or being handled, when it
arrived has been handled (``Backlog``, from the node), and then acked as a handled delivery is,
once durable egress has confirmed what the node published before (``DurableEgress.ack_later``).
Held copies are checked every ``interval_s``, so their acks go out together; a node under load
acks them as its mailboxes move, without waiting for an idle moment.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import anyio

#: Returns a test that turns true once every message now in a local mailbox, or being handled,
#: has been handled.
Backlog = Callable[[], Callable[[], bool]]


def handled() -> bool:
    """The backlog test when nothing local is queued or being handled: true at once."""
    return True


def _no_backlog() -> Callable[[], bool]:
    return handled


class OwnCopies:
    """Holds the node's own durable deliveries until their local copies are handled."""

    def __init__(
        self, ack: Callable[[Any], None], backlog: Backlog | None = None, interval_s: float = 0.01
    ) -> None:
        self.ack = ack  # a handled delivery's ack: ``DurableEgress.ack_later``
        self.backlog = backlog or _no_backlog  # a mirror without a node: ack on arrival
        self.interval_s = interval_s
        self.held: deque[tuple[Callable[[], bool], Any]] = deque()
        self.closing = False
        self._wakeup = anyio.Event()

    def add(self, raw: Any) -> None:
        """Take an own copy: acked at once if the local backlog is already handled, else held."""
        handled = self.backlog()
        if not self.held and handled():
            self.ack(raw)
            return
        self.held.append((handled, raw))
        self._wakeup.set()

    def release(self) -> None:
        """Ack the held copies whose local backlog has been handled, oldest first (a later
        copy's backlog includes an earlier one's)."""
        held = self.held
        while held and held[0][0]():
            self.ack(held.popleft()[1])

    def close(self) -> None:
        """Release what can be (the node has drained its mailboxes) and let ``run`` return.
        A copy still held stays unacked: the next process gets it again."""
        self.release()
        self.closing = True
        self._wakeup.set()

    async def run(self) -> None:
        """Release held copies every ``interval_s`` until ``close``."""
        while not self.closing:
            if not self.held:
                self._wakeup = anyio.Event()
                await self._wakeup.wait()
                continue
            await anyio.sleep(self.interval_s)
            self.release()
