"""The one atomic file write: a temporary file beside the target, fsync, rename, fsync the dir.

A reader (or a process restarted after a crash) sees either the old file or the new one,
never half of one. With ``fsync`` the new content is on disk when the call returns: the file's
data before the rename, and the directory entry after it (a rename is durable only once its
directory is). Without ``fsync`` the write is still atomic, but a power loss may undo it.

This is blocking I/O: on the event loop, call it through ``StateWriter`` (a worker thread).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["fsync_dir", "write_atomic_bytes"]


def write_atomic_bytes(
    path: str | Path, data: bytes, *, fsync: bool = True, mode: int = 0o644
) -> None:
    """Replace ``path`` with ``data`` atomically (and durably when ``fsync``).

    The parent directory is created when missing. The temporary file has a unique name, so two
    writers of the same path never tear each other's file (the last rename wins); a crash
    between the write and the rename leaves only a ``.<name>.*.tmp`` file behind.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fchmod(fh.fileno(), mode)  # mkstemp creates 0600
            if fsync:
                os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if fsync:
        fsync_dir(target.parent)


def fsync_dir(directory: str | Path) -> None:
    """Make the directory's entries durable (a created, renamed or deleted file's name)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # not a directory we can open (some platforms): nothing more to be done
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
