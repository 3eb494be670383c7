"""The local spill: durable publishes the server did not accept within their retry budget.

One JSON object a line (``subject``, ``headers``, ``data`` in base64, ``error``, ``ts``), appended
and fsynced from a worker thread, never on the event loop. A spilled message keeps its
``Nats-Msg-Id``, so re-sending one the server did take after all (an ack lost on the way) is
deduplicated within the stream's duplicate window. ``resend`` moves the file aside first, so a
node may go on spilling into a fresh file while an operator re-sends the old one.
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import msgspec

#: One durable publish: subject (namespace included), payload, headers.
Item = tuple[str, bytes, dict[str, str]]

_RESEND = ".resend"


class Spilled(msgspec.Struct, frozen=True):
    """One spilled publish, as it is written on disk."""

    subject: str
    headers: dict[str, str]
    data: str  # base64 of the payload
    error: str
    ts: int  # ns since epoch when it was spilled

    def item(self) -> Item:
        """Return the publish to re-send."""
        return self.subject, base64.b64decode(self.data), dict(self.headers)


def _lines(items: Iterable[Item], error: str) -> bytes:
    now = time.time_ns()
    enc = msgspec.json.Encoder()
    return b"".join(
        enc.encode(Spilled(s, h, base64.b64encode(d).decode(), error, now)) + b"\n"
        for s, d, h in items
    )


def append_sync(path: Path, items: list[Item], error: str) -> None:
    """Append ``items`` to ``path`` and fsync (blocking: call it from a worker thread)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as fh:
        fh.write(_lines(items, error))
        fh.flush()
        os.fsync(fh.fileno())


async def append(path: Path, items: list[Item], error: str) -> None:
    """Append ``items`` to the spill file ``path`` off the event loop."""
    await anyio.to_thread.run_sync(append_sync, path, items, error)


def read(path: Path) -> list[Spilled]:
    """Return the entries of one spill file; a torn last line (a crash mid-write) is ignored."""
    out = []
    dec = msgspec.json.Decoder(Spilled)
    for line in path.read_bytes().splitlines():
        try:
            out.append(dec.decode(line))
        except msgspec.DecodeError:
            continue
    return out


def pending(path: Path) -> list[Path]:
    """Return ``path`` and any files an interrupted ``resend`` left beside it, oldest first."""
    left = sorted(path.parent.glob(f"{path.name}.*{_RESEND}")) if path.parent.is_dir() else []
    return [*left, path] if path.exists() else left


Publish = Callable[[str, bytes, dict[str, str]], Awaitable[Any]]


def _rewrite_sync(path: Path, items: list[Item], error: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(_lines(items, error))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


async def resend(path: Path, publish: Publish) -> tuple[int, int]:
    """Re-send every message spilled at ``path``, oldest first; return (sent, still spilled).

    Each file is renamed aside (``<name>.<ts>.resend``) before it is read, so a running node
    spills into a fresh file meanwhile. At the first refusal the rest is not tried (it would
    be refused too, and sending it would overtake the refused one): the file moved aside keeps
    what is left, and being older it is re-sent first next time.
    """
    sent = 0
    files = pending(path)
    for n, file in enumerate(files):
        if not file.name.endswith(_RESEND):
            aside = file.with_name(f"{file.name}.{time.time_ns()}{_RESEND}")
            file.rename(aside)
            file = aside
        items = [e.item() for e in await anyio.to_thread.run_sync(read, file)]
        for i, item in enumerate(items):
            try:
                await publish(*item)
            except Exception as exc:  # still refused: keep it and everything after it
                error = f"{type(exc).__name__}: {exc}"
                await anyio.to_thread.run_sync(_rewrite_sync, file, items[i:], error)
                later = sum(len(read(f)) for f in files[n + 1 :])
                return sent, len(items) - i + later
            sent += 1
        file.unlink()
    return sent, 0
