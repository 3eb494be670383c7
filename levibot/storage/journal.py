"""An append-only msgpack journal on local disk: framed, checksummed, rotated, replayable.

A journal is a directory of segment files named ``<creation ns>-<random>.lbj`` (lexical order
is chronological order). A segment is a sequence of frames::

    magic (2 bytes, b"\\xb1\\x0b") | length (u32 LE) | crc32 of length+payload (u32 LE) | payload

The payload is one message encoded by ``levibot.messages.Codec``. The magic lets a reader find
the next frame after a corrupt one; the CRC covers the length, so a torn or garbled length is
caught rather than trusted. Opening a journal for append truncates a torn tail (whatever follows
the last valid frame of the last segment), so a crash mid-write never stops the next start.

Appending only encodes and frames (no I/O); the disk work (write, fsync, rotation) happens in
``flush``. ``detach`` and ``write_frames`` split a flush in two, so an asyncio caller can run
the disk half in a worker thread (``levibot.storage.journal_writer``) while it goes on
appending.
"""

from __future__ import annotations

import os
import secrets
import struct
import threading
import time
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Literal

import msgspec

from levibot.errors import DecodeError, LevibotError
from levibot.messages import CORE_TYPES, Codec, Message
from levibot.storage.atomic import fsync_dir

MAGIC = b"\xb1\x0b"
HEADER = struct.Struct("<2sII")  # magic, length, crc
SUFFIX = ".lbj"
MAX_RECORD = 64 * 1024 * 1024  # a length above this is garbage, not a record

FsyncPolicy = Literal["always", "batch", "never"]

_codec: Codec | None = None


def default_codec() -> Codec:
    """Return the shared codec of levibot's core message types."""
    global _codec
    if _codec is None:
        _codec = Codec(CORE_TYPES)
    return _codec


class JournalError(LevibotError):
    """A journal cannot be opened or written (bad path, bad policy)."""


class BadRecord(msgspec.Struct, frozen=True):
    """A record the reader skipped: where it was and why."""

    path: str
    offset: int
    reason: str


def frame(payload: bytes) -> bytes:
    """Return ``payload`` wrapped in a journal frame."""
    length = struct.pack("<I", len(payload))
    crc = zlib.crc32(payload, zlib.crc32(length))
    return MAGIC + length + struct.pack("<I", crc) + payload


def scan(data: bytes | memoryview) -> Iterator[tuple[int, bytes | None, str]]:
    """Yield ``(offset, payload, "")`` per valid frame and ``(offset, None, reason)`` per gap.

    A gap is a run of bytes that is not a valid frame; scanning resumes at the next magic that
    starts a valid frame. A gap yielded last is the segment's torn tail.
    """
    buf = bytes(data)
    size = len(buf)
    pos = 0
    while pos < size:
        reason = _check(buf, pos, size)
        if not reason:
            length = struct.unpack_from("<I", buf, pos + 2)[0]
            start = pos + HEADER.size
            yield pos, buf[start : start + length], ""
            pos = start + length
            continue
        nxt = pos + 1
        while True:
            nxt = buf.find(MAGIC, nxt)
            if nxt < 0 or not _check(buf, nxt, size):
                break
            nxt += 1
        yield pos, None, reason
        if nxt < 0:
            return
        pos = nxt


def _check(buf: bytes, pos: int, size: int) -> str:
    if size - pos < HEADER.size:
        return "short"
    magic, length, crc = HEADER.unpack_from(buf, pos)
    if magic != MAGIC:
        return "bad magic"
    if length > MAX_RECORD:
        return "bad length"
    end = pos + HEADER.size + length
    if end > size:
        return "torn"
    if zlib.crc32(buf[pos + HEADER.size : end], zlib.crc32(buf[pos + 2 : pos + 6])) != crc:
        return "bad crc"
    return ""


def segments(path: str | Path) -> list[Path]:
    """Return the segment files of a journal directory (or ``[path]`` for a file), in order."""
    p = Path(path)
    if p.is_dir():
        return sorted(q for q in p.iterdir() if q.suffix == SUFFIX and q.is_file())
    if p.is_file():
        return [p]
    raise JournalError(f"no journal at {p}")


class JournalReader:
    """Iterate the messages of a journal in order; ``bad`` lists what was skipped."""

    def __init__(self, path: str | Path, codec: Codec | None = None) -> None:
        self.path = Path(path)
        self.codec = codec or default_codec()
        self.bad: list[BadRecord] = []
        self.count = 0

    def __iter__(self) -> Iterator[Message]:
        for seg in segments(self.path):
            for _offset, msg in self.records(seg):
                yield msg

    def records(self, seg: Path) -> Iterator[tuple[int, Message]]:
        """Yield ``(offset, message)`` for the valid records of one segment."""
        with open(seg, "rb") as fh:
            data = fh.read()
        for offset, payload, reason in scan(data):
            if payload is None:
                self.bad.append(BadRecord(str(seg), offset, reason))
                continue
            try:
                msg = self.codec.decode(payload)
            except DecodeError as exc:
                self.bad.append(BadRecord(str(seg), offset, f"undecodable: {exc}"))
                continue
            self.count += 1
            yield offset, msg


class Journal:
    """An append-only journal directory; ``append`` buffers, ``flush`` writes (and fsyncs).

    ``fsync``: ``"always"`` writes and fsyncs every append; ``"batch"`` fsyncs once per
    ``flush``; ``"never"`` leaves it to the OS. A segment is closed and a new one started once
    it would exceed ``segment_bytes`` (a single larger record gets a segment of its own).

    Threads: the buffer (``append``, ``stage``, ``detach``) belongs to one thread, the event
    loop's; the disk side (``write_frames`` and what calls it) may run in another, and a lock
    keeps two disk operations from interleaving.
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        segment_bytes: int = 64 * 1024 * 1024,
        fsync: FsyncPolicy = "batch",
        codec: Codec | None = None,
    ) -> None:
        if fsync not in ("always", "batch", "never"):
            raise JournalError(f"fsync must be always, batch or never, not {fsync!r}")
        self.directory = Path(directory)
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self.codec = codec or default_codec()
        self.truncated: list[BadRecord] = []  # torn tails cut on open
        self._frames: list[bytes] = []  # appended, not yet handed to the disk side
        self._pending = 0  # their bytes
        self._io = threading.RLock()  # one disk operation at a time
        self._fd = -1
        self._seg: Path | None = None
        self._size = 0
        self._open()

    # -- lifecycle -------------------------------------------------------------------------
    def _open(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise JournalError(f"cannot create journal directory {self.directory}: {exc}") from exc
        existing = segments(self.directory)
        if existing:
            self._seg = existing[-1]
            self._truncate_torn_tail(self._seg)
            self._fd = os.open(self._seg, os.O_WRONLY | os.O_APPEND)
            self._size = os.fstat(self._fd).st_size

    def _truncate_torn_tail(self, seg: Path) -> None:
        data = seg.read_bytes()
        end = 0
        last_gap: tuple[int, str] | None = None
        for offset, payload, reason in scan(data):
            if payload is None:
                last_gap = (offset, reason)
            else:
                end = offset + HEADER.size + len(payload)
                last_gap = None
        if last_gap is not None and end < len(data):
            self.truncated.append(BadRecord(str(seg), end, f"{last_gap[1]} tail truncated"))
            with open(seg, "r+b") as fh:
                fh.truncate(end)
                os.fsync(fh.fileno())

    def _segment_path(self, stamp: int) -> Path:
        # The random suffix keeps names unique even if a stamp repeats after deletions.
        return self.directory / f"{stamp:020d}-{secrets.token_hex(4)}{SUFFIX}"

    def _new_segment(self) -> None:
        self._close_fd()
        stamp = time.time_ns()
        existing = segments(self.directory)
        if existing:
            stamp = max(stamp, _stamp(existing[-1]) + 1)
        self._seg = self._segment_path(stamp)
        self._fd = os.open(self._seg, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._size = 0
        fsync_dir(self.directory)

    def prepend(self, msgs: Iterable[Message]) -> Path | None:
        """Write ``msgs`` into a new segment ordered before every existing one; return it."""
        data = b"".join(frame(self.codec.encode(m)) for m in msgs)
        if not data:
            return None
        existing = segments(self.directory)
        stamp = _stamp(existing[0]) - 1 if existing else time.time_ns()
        path = self._segment_path(stamp)
        with self._io, open(path, "wb") as fh:
            fh.write(data)
            if self.fsync != "never":
                os.fsync(fh.fileno())
        fsync_dir(self.directory)
        return path

    def _close_fd(self) -> None:
        if self._fd >= 0:
            if self.fsync != "never":
                os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1

    def close(self) -> None:
        """Flush and close the current segment. Idempotent."""
        with self._io:
            self.flush()
            self.close_file()

    def close_file(self) -> None:
        """Close the current segment, leaving the buffer alone (the disk half of ``close``)."""
        with self._io:
            self._close_fd()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing ---------------------------------------------------------------------------
    def append(self, msg: Message) -> None:
        """Add one message; it reaches the disk at the next ``flush`` (at once for always)."""
        self._append_frame(frame(self.codec.encode(msg)))
        if self.fsync == "always":
            self.flush()

    def append_many(self, msgs: Iterable[Message]) -> None:
        """Add several messages in order."""
        self.stage(msgs)
        if self.fsync == "always":
            self.flush()

    def stage(self, msgs: Iterable[Message]) -> None:
        """Add several messages in order, without writing whatever the fsync policy (no I/O)."""
        encode = self.codec.encode
        for msg in msgs:
            self._append_frame(frame(encode(msg)))

    def _append_frame(self, data: bytes) -> None:
        self._frames.append(data)
        self._pending += len(data)

    @property
    def pending_bytes(self) -> int:
        """Return the bytes appended but not yet handed to the disk side."""
        return self._pending

    @property
    def segment_full(self) -> bool:
        """Return True when what is buffered no longer fits the current segment."""
        return self._pending > 0 and self._size + self._pending > self.segment_bytes

    def detach(self) -> list[bytes]:
        """Take the appended frames for ``write_frames`` (in order); the buffer is empty after."""
        frames, self._frames, self._pending = self._frames, [], 0
        return frames

    def restore(self, frames: list[bytes]) -> None:
        """Put frames back in front of the buffer (their ``write_frames`` failed)."""
        self._frames[:0] = frames
        self._pending += sum(len(f) for f in frames)

    def flush(self) -> None:
        """Write what is buffered; fsync unless the policy is ``never``."""
        frames = self.detach()
        try:
            self.write_frames(frames)
        except BaseException:
            self.restore(frames)
            raise

    def write_frames(self, frames: list[bytes]) -> None:
        """Write ``frames`` in order, rotating segments at frame boundaries, then fsync.

        The disk half of ``flush``; safe to call from a worker thread (``detach`` on the
        buffer's thread first).
        """
        if not frames:
            return
        with self._io:
            chunk = bytearray()
            for data in frames:
                # Rotation at frame boundaries: a record never straddles two segments.
                if self._fd < 0 or (
                    self._size + len(chunk) + len(data) > self.segment_bytes
                    and self._size + len(chunk) > 0
                ):
                    self._write_chunk(chunk)
                    chunk.clear()
                    self._new_segment()
                chunk += data
            self._write_chunk(chunk)

    def _write_chunk(self, chunk: bytearray) -> None:
        if not chunk:
            return
        view = memoryview(chunk)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        view.release()
        self._size += len(chunk)
        if self.fsync != "never":
            os.fsync(self._fd)

    def rotate_file(self) -> None:
        """Start a new segment if the current one holds anything; leave the buffer alone.

        The disk half of ``rotate`` (safe from a worker thread): frames still buffered go to
        the new segment, after everything in the closed ones.
        """
        with self._io:
            if self._size > 0:
                self._new_segment()

    def rotate(self) -> None:
        """Close the current segment so every record so far lies in closed segments."""
        with self._io:
            self.flush()
            if self._size > 0:
                self._new_segment()

    def closed_segments(self) -> list[Path]:
        """Return the segments no longer written to, oldest first."""
        return [s for s in segments(self.directory) if s != self._seg]

    @property
    def current_segment(self) -> Path | None:
        """Return the segment being appended to."""
        return self._seg

    @property
    def current_size(self) -> int:
        """Return the bytes written to the current segment (excluding the buffer)."""
        return self._size

    # -- reading ---------------------------------------------------------------------------
    @staticmethod
    def read(path: str | Path, codec: Codec | None = None) -> JournalReader:
        """Return an iterator over the messages of a journal directory or segment, in order."""
        return JournalReader(path, codec)


def _stamp(seg: Path) -> int:
    try:
        return int(seg.stem.split("-", 1)[0])
    except ValueError:
        return 0
