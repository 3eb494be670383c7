"""Per-subject sequence numbers on core NATS, so a receiver can count what it never got.

Core NATS delivers at most once: a subscriber cut off for a moment, or one the server drops as
a slow consumer, misses messages without anyone knowing. Each sender numbers its core messages
per subject (in its frames, ``_frame``; ``Lb-Seq: <incarnation>.<n>`` on a single message),
the incarnation a random id of the process, so a restarted sender starts a new series rather
than looking like a rewind. A receiver remembers
the last number per incarnation and subject, and a jump of ``k`` is ``k - 1`` messages lost on
the way: counted in ``levibot_nats_ingress_gaps_total``. What a receiver could not have seen
(published while it was not running at all, or by a sender killed with a full queue) is not
a gap; the sender's own drop counters cover the latter.
"""

from __future__ import annotations

import secrets

SEQ = "Lb-Seq"


class Sequencer:
    """Number outgoing core messages per subject."""

    def __init__(self, origin_headers: dict[str, str]) -> None:
        self.incarnation = secrets.token_hex(4)
        self._base = origin_headers
        self._next: dict[str, int] = {}

    def peek(self, subject: str) -> int:
        """Return the next number on ``subject`` without taking it."""
        return self._next.get(subject, 0) + 1

    def take(self, subject: str, count: int = 1) -> int:
        """Reserve the next ``count`` numbers on ``subject`` (a frame's messages); return the
        first."""
        first = self._next.get(subject, 0) + 1
        self._next[subject] = first + count - 1
        return first

    def headers(self, subject: str) -> dict[str, str]:
        """Return the headers of the next message on ``subject``."""
        return {**self._base, SEQ: f"{self.incarnation}.{self.take(subject)}"}


class GapCounter:
    """Count the messages missing between consecutive numbers of a sender's subject."""

    def __init__(self, max_series: int = 100_000) -> None:
        self._last: dict[tuple[str, str], int] = {}
        self._max = max_series

    def observe(self, seq: str | None, subject: str) -> int:
        """Record number ``seq`` (a header value, or None) on ``subject``; return the gap."""
        if not seq:
            return 0
        incarnation, _, n_text = seq.partition(".")
        try:
            n = int(n_text)
        except ValueError:
            return 0  # not ours, or garbage: not a gap
        return self.observe_run(incarnation, n, 1, subject)

    def observe_run(self, incarnation: str, first: int, count: int, subject: str) -> int:
        """Record numbers ``first`` .. ``first + count - 1`` of a sender's ``subject`` (a
        frame); return how many were missing before ``first``."""
        key = (incarnation, subject)
        last = self._last.get(key)
        if last is None and len(self._last) >= self._max:
            self._last.pop(next(iter(self._last)))  # forget the oldest series
        end = first + count - 1
        self._last[key] = end if last is None or end > last else last
        return first - last - 1 if last is not None and first > last + 1 else 0
