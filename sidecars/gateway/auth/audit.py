"""The audit log of admin actions: a JSON-lines file in the data dir plus an ``audit.*`` log event.

There is no ``levibot.storage.audit`` module to call; the commands an admin action publishes carry
``issued_by`` and are persisted by the store actor (``audit_log`` by ``command_id``) as well.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import msgspec
import structlog


class AuditEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One admin action: who, from where, what, on what, and how it went."""

    ts: float
    actor: str  # key id, ``tg:<user>`` or ``cookie:<key id>``
    ip: str
    action: str  # dotted: ``killswitch.set``, ``model.activate``, ``key.create``...
    detail: dict[str, Any]
    outcome: str = "ok"


class AuditLog:
    """Append admin actions to ``<data_dir>/audit.jsonl`` (mode 0600) and log them."""

    def __init__(self, path: str | Path, log: Any | None = None) -> None:
        self.path = Path(path)
        self.log = log if log is not None else structlog.get_logger("gateway")
        self._encoder = msgspec.json.Encoder()

    def record(
        self, actor: str, ip: str | None, action: str, outcome: str = "ok", **detail: Any
    ) -> AuditEntry:
        """Write one entry and return it."""
        entry = AuditEntry(
            ts=time.time(), actor=actor, ip=ip or "", action=action, detail=detail, outcome=outcome
        )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One small O_APPEND write per admin action: atomic for lines this size, and rare enough
        # that doing it on the loop is cheaper than a thread hop.
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, self._encoder.encode(entry) + b"\n")
        finally:
            os.close(fd)
        self.log.info(f"audit.{action}", by=actor, ip=entry.ip, outcome=outcome, **detail)
        return entry

    def read(self) -> list[AuditEntry]:
        """Return every entry (for tests and the CLI)."""
        if not self.path.exists():
            return []
        decoder = msgspec.json.Decoder(AuditEntry)
        return [decoder.decode(line) for line in self.path.read_bytes().splitlines() if line]
