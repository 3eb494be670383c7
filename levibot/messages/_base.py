"""The message base: immutable, tagged msgspec Structs with nanosecond timestamps."""

from __future__ import annotations

import enum
from typing import Any, ClassVar

import msgspec


class Overflow(enum.Enum):
    """What a full mailbox does with one more message of a type."""

    CONFLATE = "conflate"  # latest per key wins; the replaced message is counted as dropped
    BLOCK = "block"  # the publisher waits: back-pressure, never a loss


class Message(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    gc=False,
    tag_field="type",
    tag=lambda name: f"levibot.{name}",
):
    """Base for every bus message.

    ``ts_event`` is when the fact happened (exchange time for market data), ``ts_init`` when this
    message was created and ``ts_ingress`` the local receive time of the tick that caused it, so
    any downstream message knows its end-to-end latency (``ts_init - ts_ingress``). All are
    integer nanoseconds since the Unix epoch.

    Wire rule: add fields only at the end and with defaults; a breaking change is a new tag.
    """

    ts_event: int
    ts_init: int
    ts_ingress: int = 0

    # Routing metadata, per class. Subclasses override what differs.
    overflow: ClassVar[Overflow] = Overflow.BLOCK
    durable: ClassVar[bool] = False  # JetStream (acked, deduplicated) rather than core NATS
    subject_root: ClassVar[str] = ""

    def subject(self) -> str:
        """Return the NATS subject this message is published on."""
        return self.subject_root

    def conflation_key(self) -> Any:
        """Return the key under which a newer message replaces an older one (CONFLATE only)."""
        return None

    def dedup_id(self) -> str:
        """Return the JetStream message id: equal for a re-published copy of the same fact."""
        raise TypeError(f"{type(self).__name__} is not durable")


class SymbolMessage(Message, frozen=True, kw_only=True):
    """A message about one instrument; partitioned and conflated by symbol."""

    symbol: str

    def conflation_key(self) -> Any:
        return (type(self), self.symbol)
