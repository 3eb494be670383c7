"""``StateWriter``: an actor's state file, written off the event loop, newest version last.

An actor that persists its state after a message must not fsync on the event loop: every
actor of the process would wait for the disk. ``StateWriter`` runs ``write_atomic_bytes`` in a
worker thread (a capacity limiter of one per file) while the loop goes on. The bytes are
encoded by the caller on the loop, so the file holds the state exactly as it was when saved,
whatever the actor changes while the write is in flight.

Order: versions are numbered as submitted; only the newest pending version is ever written
(older ones are superseded, never written after it), so the file never goes back in time.
Several saves submitted while a write is in flight coalesce into one write.

Durability: ``save`` returns once the file holds that version or a newer one (fsynced when
``fsync``). An actor that awaits ``save`` inside ``handle`` therefore has its state on disk
before the runtime acknowledges the message to the transport, as when the write was inline.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import anyio.to_thread

from levibot.storage.atomic import write_atomic_bytes

__all__ = ["StateWriter"]


class StateWriter:
    """Write successive versions of one file atomically, in a worker thread, newest last."""

    def __init__(self, path: str | Path, *, fsync: bool = True) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self.writes = 0  # files written; fewer than saves when saves coalesced
        self._pending: bytes | None = None  # the newest version not yet being written
        self._submitted = 0  # number of the newest version submitted
        self._written = 0  # number of the newest version on disk
        # The lock orders the writes (take the newest, write it, record it); the limiter keeps
        # this file's writes to one worker thread at a time, whoever calls.
        self._lock = anyio.Lock()
        self._limiter = anyio.CapacityLimiter(1)

    @property
    def dirty(self) -> bool:
        """Return True while a submitted version is not yet on disk."""
        return self._written < self._submitted

    def submit(self, data: bytes) -> int:
        """Make ``data`` the newest version to write (without waiting); return its number."""
        self._submitted += 1
        self._pending = data
        return self._submitted

    async def flush(self, version: int | None = None) -> None:
        """Return once ``version`` (default: the newest submitted) or a newer one is on disk.

        A failed write raises here, and its version stays pending (unless a newer one came),
        so the next ``flush`` tries again.
        """
        target = self._submitted if version is None else version
        while self._written < target:
            async with self._lock:
                if self._written >= target:
                    return  # another caller's write covered it
                data, number = self._pending, self._submitted
                assert data is not None  # written < submitted and no write in flight
                self._pending = None
                try:
                    # Shielded: a write that started finishes and is recorded as done.
                    with anyio.CancelScope(shield=True):
                        await anyio.to_thread.run_sync(self._write, data, limiter=self._limiter)
                except BaseException:
                    if self._pending is None:  # nothing newer came: this one is still due
                        self._pending = data
                    raise
                self._written = max(self._written, number)

    async def save(self, data: bytes) -> None:
        """Submit ``data`` and return once it (or a newer version) is on disk."""
        await self.flush(self.submit(data))

    def _write(self, data: bytes) -> None:
        write_atomic_bytes(self.path, data, fsync=self.fsync)
        self.writes += 1
