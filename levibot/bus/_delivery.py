"""A message taken from a durable consumer: settled once every local handler has reported.

The transport hands a ``Delivery`` to the local bus with the message; the bus puts it beside the
message in every subscribed mailbox; each receive loop reports its outcome on it: success by
calling it (``done()``, the same shape as a plain completion callback), failure with ``fail``.
When the last handler has reported, ``settle`` runs once: an ack when all succeeded, otherwise
the transport's failure path (a delayed redelivery, or the dead-letter stream on the last try).

The runtime tells a redeliverable message from a local one by this type: a failure here is
never lost, so the supervisor can go on with the next message instead of stopping the node.
"""

from __future__ import annotations


class Delivery:
    """One transport delivery of a message, shared by the local handlers it was routed to.

    ``key`` identifies the message across redeliveries (its ``Nats-Msg-Id``); ``attempt`` is the
    delivery count (1 on the first try); ``final`` is True when a failure now dead-letters it.
    """

    __slots__ = ("actor", "attempt", "error", "final", "key", "left")

    def __init__(self, key: str, attempt: int = 1, *, final: bool = False) -> None:
        self.key = key
        self.attempt = attempt
        self.final = final
        self.left = 1  # until ``expect``: a delivery no local handler wants settles at once
        self.actor = ""
        self.error: BaseException | None = None

    def expect(self, handlers: int) -> None:
        """Wait for ``handlers`` reports before settling (called by the bus when routing)."""
        self.left = handlers

    def __call__(self) -> None:
        """Report that one handler succeeded."""
        self._report()

    def fail(self, actor: str, exc: BaseException) -> None:
        """Report that ``actor``'s handler raised ``exc`` (the first failure is kept)."""
        if self.error is None:
            self.actor, self.error = actor, exc
        self._report()

    def _report(self) -> None:
        self.left -= 1
        if self.left == 0:
            self.settle()

    def settle(self) -> None:
        """Ack (no ``error``) or take the failure path; called once. Transports override it."""


def error_text(exc: BaseException, limit: int = 500) -> str:
    """Return ``Type: message`` on one line, at most ``limit`` characters, without locals."""
    text = f"{type(exc).__name__}: {exc}".replace("\r", " ").replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."
