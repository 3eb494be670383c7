"""The audit log: who did what, with which arguments, when.

The store writes one row per command it sees on the bus (``command_id`` makes a redelivered
command a no-op). ``AuditLog`` lets code outside the bus (the gateway's login, key creation)
write and read rows directly through an asyncpg pool.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from levibot.messages import Command
from levibot.storage.rows import command_args, ns_to_dt

_json = msgspec.json.Encoder()
_decode = msgspec.json.Decoder(dict[str, Any])


class AuditRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One audit row."""

    actor: str
    action: str
    args: dict[str, Any] = {}
    ts: datetime | None = None
    ts_event: int = 0
    command_id: str | None = None


def record_of(cmd: Command) -> AuditRecord:
    """Return the audit record of a bus command."""
    return AuditRecord(
        actor=cmd.issued_by,
        action=type(cmd).__name__,
        args=command_args(cmd),
        ts=ns_to_dt(cmd.ts_event),
        ts_event=cmd.ts_event,
        command_id=cmd.command_id,
    )


class AuditLog:
    """Read and write ``audit_log`` through an asyncpg pool (or connection)."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool

    async def record(
        self,
        actor: str,
        action: str,
        args: dict[str, Any] | None = None,
        *,
        command_id: str | None = None,
    ) -> bool:
        """Append one row; return False when ``command_id`` was already recorded."""
        status: str = await self.pool.execute(
            "INSERT INTO audit_log (actor, action, args, command_id) VALUES ($1, $2, $3, $4) "
            "ON CONFLICT DO NOTHING",
            actor,
            action,
            _json.encode(args or {}).decode(),
            command_id,
        )
        return status.endswith(" 1")

    async def recent(self, limit: int = 50, *, actor: str | None = None) -> list[AuditRecord]:
        """Return the latest rows, newest first (only ``actor``'s when given)."""
        rows = await self.pool.fetch(
            "SELECT actor, action, args, ts, ts_event, command_id FROM audit_log "
            "WHERE $1::text IS NULL OR actor = $1 ORDER BY id DESC LIMIT $2",
            actor,
            limit,
        )
        return [
            AuditRecord(
                actor=r["actor"],
                action=r["action"],
                args=_decode.decode(r["args"]),
                ts=r["ts"],
                ts_event=r["ts_event"],
                command_id=r["command_id"],
            )
            for r in rows
        ]
