"""Reading the append-only ``events`` table back: the store's log of every non-market message.

The store writes each message's JSON (its ``type`` tag included) with a sequence number
(``seq``) in the order it received them (``levibot.storage.rows``). This module reads them back
as messages, in that order:

* ``read_events``: every event up to an instant, page by page (time travel, audits);
* ``tail_events``: the newest events of some types (a read model warming up at start).

A row whose body no longer decodes (a type removed since, a hand-edited row) is skipped and
counted in ``EventPage.bad``, never fatal: one bad row must not hide the rest of the log.
JSONB keeps numbers as exact decimals, so floats come back bit for bit.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any, Union

import msgspec

from levibot.messages import CORE_TYPES, Message

#: Every message type the log can hold, by its wire tag (``levibot.Fill``).
EVENT_TYPES: dict[str, type[Message]] = {str(t.__struct_config__.tag): t for t in CORE_TYPES}
_decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(Union[tuple(EVENT_TYPES.values())])  # noqa: UP007


class StoredEvent(msgspec.Struct, frozen=True):
    """One row of the log: its sequence number and the message."""

    seq: int
    message: Message


class EventPage(msgspec.Struct):
    """Counts of what a read went through (filled in as it goes)."""

    rows: int = 0
    bad: int = 0
    last_seq: int = 0


def tag_of(type_: type[Message]) -> str:
    """Return the ``type`` column value of messages of ``type_``."""
    return str(type_.__struct_config__.tag)


def decode_body(body: str | bytes) -> Message | None:
    """Return the message stored in ``body``; None when it does not decode."""
    try:
        msg: Message = _decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    return msg


def _names(types: Iterable[type[Message]] | None) -> list[str]:
    return sorted(tag_of(t) for t in types) if types is not None else sorted(EVENT_TYPES)


async def read_events(
    conn: Any,
    *,
    until_ns: int | None = None,
    types: Iterable[type[Message]] | None = None,
    after_seq: int = 0,
    page: int = 5_000,
    counts: EventPage | None = None,
) -> AsyncIterator[StoredEvent]:
    """Yield the logged events in ``seq`` order, those created (``ts_init``) by ``until_ns``.

    ``until_ns`` None: all of them. A message made by ``until_ns`` happened by then, so only
    rows with ``ts_event <= until_ns`` are fetched (the server filters, paging on ``seq``), and
    of those the ones created later are dropped here. ``counts`` receives the totals.
    """
    counts = counts if counts is not None else EventPage()
    names = _names(types)
    limit = until_ns if until_ns is not None else 2**63 - 1
    seq = after_seq
    while True:
        rows = await conn.fetch(
            "SELECT seq, body::text AS body FROM events WHERE seq > $1 AND type = ANY($2) "
            "AND ts_event <= $3 ORDER BY seq LIMIT $4",
            seq, names, limit, page,
        )  # fmt: skip
        for row in rows:
            seq = row["seq"]
            counts.rows += 1
            msg = decode_body(row["body"])
            if msg is None:
                counts.bad += 1
                continue
            if until_ns is not None and msg.ts_init > until_ns:
                continue
            counts.last_seq = seq
            yield StoredEvent(seq, msg)
        if len(rows) < page:
            return


async def tail_events(
    conn: Any, types: Iterable[type[Message]], limit: int, counts: EventPage | None = None
) -> list[StoredEvent]:
    """Return the newest ``limit`` events of ``types``, oldest first."""
    counts = counts if counts is not None else EventPage()
    if limit <= 0:
        return []
    rows = await conn.fetch(
        "SELECT seq, body::text AS body FROM events WHERE type = ANY($1) "
        "ORDER BY seq DESC LIMIT $2",
        _names(types), limit,
    )  # fmt: skip
    out: list[StoredEvent] = []
    for row in reversed(rows):
        counts.rows += 1
        counts.last_seq = max(counts.last_seq, row["seq"])
        msg = decode_body(row["body"])
        if msg is None:
            counts.bad += 1
            continue
        out.append(StoredEvent(row["seq"], msg))
    return out
