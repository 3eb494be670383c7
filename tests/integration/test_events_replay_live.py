"""Time travel over the log of a live run split into processes over NATS.

Three ``levibot run`` processes on real NATS and PostgreSQL, under the live (wall) clock:
ingest+scoring (real BTCUSDT bars at 10 ms a bar), execution (risk, order: persisting their
state files) and the store. When it is over, ``events replay`` to now must give the portfolio
the order actor persisted, exactly, and the risk state the risk actor persisted except what the
risk engine stamps with its clock: a rebuild stamps with event time (as a replay does), the live
run stamped with the wall clock (rate window, last trade, pending orders' age, the UTC day and
its counters, when a price was seen).
"""

from __future__ import annotations

import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import msgspec
import pytest

from levibot.commands.events import portfolio_at, rebuild, risk_at
from levibot.execution import Portfolio, PortfolioState
from levibot.risk import RiskState
from levibot.settings import load_settings
from levibot.storage.testing import temp_database
from levibot.testenv import NATS_URL
from levibot.testing import NodeProcess, write_config, write_real_bars

pytestmark = [pytest.mark.anyio, pytest.mark.integration, pytest.mark.slow]

BARS = 300
#: What the risk engine stamps with its clock: wall time live, event time in a rebuild.
CLOCKED = (
    "order_times", "last_trade_ns", "pending", "last_price_ns", "day", "day_trades",
    "day_realized", "day_start_equity",
)  # fmt: skip


@pytest.fixture
async def dsn() -> AsyncIterator[str]:
    async with temp_database(migrated=True) as url:
        yield url


def sections(tmp: Path, dsn: str) -> dict[str, dict[str, Any]]:
    write_real_bars(tmp / "BTCUSDT-1h.csv", BARS)
    ns = f"tt{uuid.uuid4().hex[:8]}"
    return {
        "nats": {"url": NATS_URL, "namespace": ns, "stream": ns.upper()},
        "log": {"level": "info", "format": "json"},
        "storage": {"data_dir": str(tmp / "var"), "postgres_dsn": dsn},
        "feed": {"source": "replay"},
        "feed.replay": {"path": str(tmp / "BTCUSDT-1h.csv"), "symbol": "BTCUSDT",
                        "speed": 360_000.0},
        "scoring": {"strategies": ["ema_cross"]},
        "scoring.ema_cross": {"fast": 9, "slow": 21},
        # No time-based limit: those decide on the clock, which a rebuild reads as event time.
        "risk": {"preset": "off", "notional": 3_000.0, "atr_exits": True, "policy": "aggressive"},
        "order": {"fill": "next_open", "snapshot_every_bars": 1},
        "store": {"journal": False, "events_market_data": True, "flush_interval_s": 0.05},
    }  # fmt: skip


def differing(a: Any, b: Any) -> dict[str, Any]:
    """Return the fields where two structs differ, both values."""
    x, y = msgspec.to_builtins(a), msgspec.to_builtins(b)
    return {k: (x[k], y.get(k)) for k in x if x[k] != y.get(k)}


async def in_thread(fn: Any, *args: Any) -> Any:
    return await anyio.to_thread.run_sync(fn, *args)


async def count(dsn: str, tag: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM events WHERE type = $1", tag))
    finally:
        await conn.close()


async def test_events_replay_of_a_live_split_run_gives_the_state_its_processes_persisted(
    tmp_path: Path, dsn: str
) -> None:
    cfg = sections(tmp_path, dsn)
    config = write_config(tmp_path / "levibot.toml", cfg)
    nodes = {
        group: NodeProcess(config, "--groups", group, log=tmp_path / f"{group}.log")
        for group in ("store", "execution")
    }
    try:
        for node in nodes.values():
            await in_thread(node.wait_ready, 60)
        ingest = NodeProcess(config, "--groups", "ingest,scoring", log=tmp_path / "ingest.log",
                             env={"LEVIBOT__NODE__STOP_WHEN_SOURCES_DONE": "true"})  # fmt: skip
        assert await in_thread(ingest.wait, 300) == 0, ingest.tail()
        for _ in range(600):  # every bar's portfolio snapshot is in the log
            if await count(dsn, "levibot.PortfolioSnapshot") >= BARS:
                break
            await anyio.sleep(0.1)
        else:
            raise AssertionError("the store did not log every bar's snapshot in 60 s")
        for group in ("execution", "store"):  # the state files are written at stop
            nodes[group].signal(signal.SIGTERM)
            assert await in_thread(nodes[group].wait, 60) == 0, nodes[group].tail()
    finally:
        for node in nodes.values():
            node.kill()
    assert await count(dsn, "levibot.Fill") >= 10
    state = tmp_path / "var" / "state"
    live_portfolio = msgspec.json.decode(
        (state / "portfolio.json").read_bytes(), type=PortfolioState
    )
    live_risk = msgspec.json.decode((state / "risk.json").read_bytes(), type=RiskState)
    settings = load_settings(config, environ={})
    conn = await asyncpg.connect(dsn)
    try:
        got = await rebuild(conn, settings, 2**63 - 1)
    finally:
        await conn.close()
    assert got.diverged == 0, got.divergences
    assert got.portfolio == portfolio_at(
        Portfolio(cfg["order"].get("cash", 10_000.0), state=live_portfolio)
    )
    unclocked = {f: getattr(RiskState(), f) for f in CLOCKED}
    rebuilt = msgspec.structs.replace(got.risk, **unclocked)
    persisted = msgspec.structs.replace(risk_at(live_risk), **unclocked)
    assert rebuilt == persisted, differing(rebuilt, persisted)
    assert got.risk.decided and got.risk.seen_fills and got.risk.last_loss_ns  # not vacuous
