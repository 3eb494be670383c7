"""``JournalWriter``: a ``Journal`` whose disk writes and fsyncs run off the event loop.

``append_many`` only encodes and frames, on the loop (cheap, and the GIL would serialise it
anyway). ``flush`` takes what is buffered and writes it (rotation and fsync included) in a
worker thread, one flush at a time per journal: the buffer is taken inside the lock, so what
reaches the disk is in append order whoever flushes, and appends go on meanwhile.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from levibot.messages import Message
from levibot.storage.journal import BadRecord, Journal

__all__ = ["JournalWriter"]

T = TypeVar("T")


class JournalWriter:
    """Append on the loop, write and fsync in a worker thread, in order."""

    def __init__(self, journal: Journal, *, flush_bytes: int = 1 << 20) -> None:
        self.journal = journal
        self.flush_bytes = flush_bytes
        self._lock = anyio.Lock()
        self._limiter = anyio.CapacityLimiter(1)

    @classmethod
    async def open(
        cls, directory: str | Path, *, flush_bytes: int = 1 << 20, **kwargs: Any
    ) -> JournalWriter:
        """Open (or create) the journal in a worker thread: opening may cut a torn tail."""
        journal = await anyio.to_thread.run_sync(functools.partial(Journal, directory, **kwargs))
        return cls(journal, flush_bytes=flush_bytes)

    @property
    def truncated(self) -> list[BadRecord]:
        """Return the torn tails cut when the journal was opened."""
        return self.journal.truncated

    @property
    def pending_bytes(self) -> int:
        """Return the bytes appended and not yet taken by a flush."""
        return self.journal.pending_bytes

    @property
    def flush_due(self) -> bool:
        """Return True when the buffer should go out now.

        With ``fsync = "always"`` (every append on disk before the caller goes on), from
        ``flush_bytes`` buffered, and when the buffer no longer fits the current segment (a
        segment reaches the disk as soon as it is full, as when the journal wrote inline).
        """
        j = self.journal
        pending = j.pending_bytes
        if not pending:
            return False
        return j.fsync == "always" or pending >= self.flush_bytes or j.segment_full

    def append_many(self, msgs: Iterable[Message]) -> None:
        """Add messages in order (no I/O: they reach the disk at the next ``flush``)."""
        self.journal.stage(msgs)

    async def flush(self) -> None:
        """Write and fsync (per the policy) everything appended so far, in a worker thread.

        A failed write raises here and its frames go back in front of the buffer, so the next
        flush tries them again.
        """
        async with self._lock:
            frames = self.journal.detach()
            if not frames:
                return
            try:
                await self._run(self.journal.write_frames, frames)
            except BaseException:
                self.journal.restore(frames)
                raise

    async def close(self) -> None:
        """Flush what is pending and close the segment (in a worker thread)."""
        await self.flush()
        await self.run(self.journal.close_file)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a disk operation on this journal in the worker thread, after earlier flushes.

        ``fn`` must not touch the buffer (``append``, ``detach``, ``flush``): that belongs to
        the loop.
        """
        async with self._lock:
            return await self._run(fn, *args)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        # Shielded: a write that started finishes and counts as done; a cancellation lands
        # at the caller's next checkpoint instead of making us write the frames twice.
        with anyio.CancelScope(shield=True):
            result = await anyio.to_thread.run_sync(fn, *args, limiter=self._limiter)
        return result
