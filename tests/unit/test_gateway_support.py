"""Shared helpers for the gateway tests: a running gateway on an ephemeral port, with keys.

(No tests here; the name only keeps the file inside the gateway's test namespace.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from levibot.clock import LiveClock
from levibot.testing import RecordingContext
from sidecars.gateway.actor import GatewayActor, GatewayConfig
from sidecars.gateway.auth import FileKeyStore, new_key

SECRET = "test-secret-0123456789abcdef0123456789"


@dataclass
class Harness:
    """A started gateway actor, its recording context, an HTTP session and one key per scope."""

    actor: GatewayActor
    ctx: RecordingContext
    session: aiohttp.ClientSession
    keys: dict[str, str] = field(default_factory=dict)  # scope → plaintext key
    key_ids: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.actor.port}"

    @property
    def services(self) -> Any:
        assert self.actor.services is not None
        return self.actor.services

    def h(self, scope: str) -> dict[str, str]:
        """Return headers authenticating with the API key of ``scope``."""
        return {"X-API-Key": self.keys[scope]}

    async def token(self, scope: str) -> dict[str, Any]:
        async with self.session.post(
            f"{self.url}/auth/token", json={"api_key": self.keys[scope]}
        ) as r:
            assert r.status == 200, await r.text()
            body: dict[str, Any] = await r.json()
            return body

    async def bearer(self, scope: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {(await self.token(scope))['access_token']}"}


async def add_keys(data_dir: Path, pepper: str = "") -> tuple[dict[str, str], dict[str, str]]:
    """Create one key per scope in ``data_dir/keys.json``."""
    store = FileKeyStore(data_dir / "keys.json")
    keys, ids = {}, {}
    for scope in ("read", "trade", "admin"):
        plain, record = new_key(f"test-{scope}", [scope], pepper)
        await store.add(record)
        keys[scope], ids[scope] = plain, record.key_id
    return keys, ids


@asynccontextmanager
async def running_gateway(tmp_path: Path, **overrides: Any) -> AsyncIterator[Harness]:
    """Start a gateway on 127.0.0.1:<ephemeral> with keys for read, trade and admin."""
    keys, ids = await add_keys(tmp_path)
    settings: dict[str, Any] = {
        "port": 0,
        "data_dir": str(tmp_path),
        "models_root": str(tmp_path / "models"),
        "jwt_secret": SECRET,
        "heartbeat_s": 0.0,
    }
    settings.update(overrides)
    ctx = RecordingContext("gateway", clock=LiveClock())
    actor = GatewayActor(ctx, GatewayConfig(**settings))
    await actor.on_start()
    try:
        async with aiohttp.ClientSession() as session:
            yield Harness(actor, ctx, session, keys, ids)
    finally:
        await actor.on_stop()
