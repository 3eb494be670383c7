"""A restarted gateway shows what it showed before: its read side is rebuilt from PostgreSQL.

Real processes (``levibot run``), real NATS and PostgreSQL: an engine node (feed replaying real
BTCUSDT bars, scoring, risk, order, store) trades while a gateway node reads the bus. Once the
engine is done, the gateway's order states, portfolio and equity history are read over REST;
the gateway is stopped and a new one started on the same database: it answers the same, and
also for the orders and equity points the first one never heard.
"""

from __future__ import annotations

import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import asyncpg
import pytest

from levibot.storage.testing import temp_database
from levibot.testenv import NATS_URL
from levibot.testing import NodeProcess, free_port, write_config, write_real_bars
from sidecars.gateway.auth import new_key
from sidecars.gateway.auth.keys_pg import PostgresKeyStore

pytestmark = [pytest.mark.anyio, pytest.mark.integration, pytest.mark.slow]

BARS = 400
SECRET = "readside-secret-0123456789abcdef0123456789"


@pytest.fixture
async def dsn() -> AsyncIterator[str]:
    async with temp_database(migrated=True) as url:
        yield url


def real_bars(path: Path) -> Path:
    return write_real_bars(path, BARS)


def configs(tmp: Path, dsn: str, ns: str) -> tuple[Path, Path]:
    shared: dict[str, dict[str, Any]] = {
        "nats": {"url": NATS_URL, "namespace": ns, "stream": ns.upper()},
        "log": {"level": "info", "format": "json"},
    }
    bars = real_bars(tmp / "BTCUSDT-1h.csv")
    engine = write_config(
        tmp / "engine.toml",
        {
            **shared,
            "node": {"groups": ["ingest", "scoring", "execution", "store"],
                     "stop_when_sources_done": True},
            "storage": {"data_dir": str(tmp / "engine"), "postgres_dsn": dsn},
            "feed": {"source": "replay"},
            # 10 ms a bar: each is traded on before the next comes, as live.
            "feed.replay": {"path": str(bars), "symbol": "BTCUSDT", "speed": 360_000.0},
            "scoring": {"strategies": ["ema_cross"]},
            "scoring.ema_cross": {"fast": 9, "slow": 21},
            # No limit on time (this live-clocked run replays 400 hours in seconds); ATR exits.
            "risk": {"preset": "off", "notional": 3_000.0, "atr_exits": True,
                     "policy": "aggressive", "persist": False},
            "order": {"fill": "next_open", "snapshot_every_bars": 1, "persist": False},
            "store": {"journal": False, "flush_interval_s": 0.05},
        },
    )  # fmt: skip
    gateway = write_config(
        tmp / "gateway.toml",
        {
            **shared,
            "node": {"groups": ["gateway"]},
            "storage": {"data_dir": str(tmp / "gateway"), "postgres_dsn": dsn},
            "gateway": {"port": free_port(), "jwt_secret": SECRET, "heartbeat_s": 0.0},
        },
    )  # fmt: skip
    return engine, gateway


async def in_thread(fn: Any, *args: Any) -> Any:
    """Run a blocking process helper off the event loop."""
    return await anyio.to_thread.run_sync(fn, *args)


async def read_key(dsn: str) -> str:
    store = await PostgresKeyStore.connect(dsn)
    try:
        plain, record = new_key("readside", ["read"])
        await store.add(record)
    finally:
        await store.close()
    return plain


class Client:
    def __init__(self, session: aiohttp.ClientSession, port: int, key: str) -> None:
        self.session, self.base, self.headers = (
            session,
            f"http://127.0.0.1:{port}",
            {"X-API-Key": key},
        )

    async def get(self, path: str) -> tuple[int, Any]:
        async with self.session.get(self.base + path, headers=self.headers) as r:
            return r.status, await r.json()


def point(p: Any) -> tuple[int, float]:
    """Return an equity point (``{"ts", "equity"}`` or ``[ts, equity]``) as a pair."""
    return (p["ts"], p["equity"]) if isinstance(p, dict) else (p[0], p[1])


async def views(client: Client, order_ids: list[str]) -> dict[str, Any]:
    """What the gateway shows: every order's state, the portfolio, the equity and candles."""
    orders = {}
    for coid in order_ids:
        status, body = await client.get(f"/orders/{coid}")
        orders[coid] = body if status == 200 else None
    _, portfolio = await client.get("/portfolio/summary")
    _, charts = await client.get("/charts")
    return {
        "orders": orders,
        "portfolio": portfolio,
        "equity": [point(p) for p in charts["equity"]],
        "candles": [(b["start"], b["close"]) for b in charts["bars"]],
    }


async def stored(dsn: str) -> tuple[list[str], int]:
    """Return the order ids PostgreSQL has, and how many portfolio snapshots it logged."""
    conn = await asyncpg.connect(dsn)
    try:
        ids = [r[0] for r in await conn.fetch("SELECT DISTINCT client_order_id FROM orders")]
        snaps = await conn.fetchval(
            "SELECT count(*) FROM events WHERE type = 'levibot.PortfolioSnapshot'"
        )
    finally:
        await conn.close()
    return sorted(ids), int(snaps)


async def test_a_restarted_gateway_shows_the_orders_portfolio_and_equity_history_it_showed(
    tmp_path: Path, dsn: str
) -> None:
    ns = f"rs{uuid.uuid4().hex[:8]}"
    engine_cfg, gateway_cfg = configs(tmp_path, dsn, ns)
    key = await read_key(dsn)
    port = int(gateway_cfg.read_text().split("port = ")[1].split()[0])
    first = NodeProcess(gateway_cfg, log=tmp_path / "gateway1.log")
    try:
        await in_thread(first.wait_ready, 60)
        engine = NodeProcess(engine_cfg, log=tmp_path / "engine.log")
        assert await in_thread(engine.wait, 300) == 0, engine.tail()
        order_ids, snapshots = await stored(dsn)
        assert len(order_ids) >= 5 and snapshots >= BARS
        async with aiohttp.ClientSession() as session:
            client = Client(session, port, key)

            with anyio.fail_after(60):
                while True:  # every order heard (JetStream: none is lost), and a portfolio
                    before = await views(client, order_ids)
                    if all(before["orders"].values()) and before["portfolio"]["snapshot"]:
                        break
                    await anyio.sleep(0.2)
        first.signal(signal.SIGTERM)
        assert await in_thread(first.wait, 60) == 0, first.tail()
    finally:
        first.kill()

    after = await restarted(gateway_cfg, tmp_path / "gateway2.log", port, key, order_ids)
    # Every order the first gateway showed, the same; none missing.
    assert after["orders"] == before["orders"]
    assert sum(1 for o in after["orders"].values() if o["filled_quantity"] > 0) >= 5
    assert any(o["reason"] in ("stop_loss", "take_profit") for o in after["orders"].values())
    assert after["portfolio"] == before["portfolio"]
    # The equity history: all the first one had (the bus may conflate snapshots, the log does
    # not) and the same last point.
    assert set(before["equity"]) <= set(after["equity"])
    assert after["equity"][-1] == before["equity"][-1]
    assert after["equity"][-1][1] == after["portfolio"]["snapshot"]["equity"]
    assert len({equity for _, equity in after["equity"]}) > 10  # a curve, not a line
    assert len(after["equity"]) >= min(BARS, 5000)  # a point per bar at least
    # The candles the chart drew (the newest 300 bars), from the bars table.
    assert after["candles"] == before["candles"] and len(after["candles"]) == 300
    # A gateway whose views hold two orders answers for the others from PostgreSQL, the same.
    small = tmp_path / "small.toml"
    small.write_text(gateway_cfg.read_text().replace("[gateway]\n", "[gateway]\nmax_orders = 2\n"))
    third = await restarted(small, tmp_path / "gateway3.log", port, key, order_ids)
    assert third["orders"] == before["orders"]


async def restarted(
    config: Path, log: Path, port: int, key: str, order_ids: list[str]
) -> dict[str, Any]:
    """Start a gateway on ``config``, return what it shows at once, stop it."""
    node = NodeProcess(config, log=log)
    try:
        await in_thread(node.wait_ready, 60)
        async with aiohttp.ClientSession() as session:
            shown = await views(Client(session, port, key), order_ids)
        node.signal(signal.SIGTERM)
        assert await in_thread(node.wait, 60) == 0, node.tail()
    finally:
        node.kill()
    assert '"event": "gateway.restored"' in node.tail(200_000)
    return shown
