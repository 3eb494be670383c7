"""Time travel: ``levibot events replay --until T`` equals the state that was live at ``T``.

A replay run of real BTCUSDT 1h bars goes through the real actors (rule strategy, risk with ATR
exits and a loss cooldown, paper order actor) with the store writing the event log to a real
PostgreSQL database. After every bar has been handled to the end (the replay source settles the
pipeline), the probe copies the order actor's portfolio and the risk actor's state. Then, for
several of those instants, the state rebuilt from the event log alone must equal the copy.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import anyio
import asyncpg
import msgspec
import pytest
import structlog

from levibot.actors.feed import FeedActor
from levibot.actors.store import StoreConfig
from levibot.clock import LiveClock
from levibot.commands.events import PortfolioAt, portfolio_at, rebuild, risk_at
from levibot.messages import Bar, Fill, OrderClosed, OrderDenied, OrderIntent, Signal, SignalSide
from levibot.metrics import Metrics
from levibot.registry import register
from levibot.risk import RiskState
from levibot.runtime.node import Node
from levibot.settings import Settings, load_settings
from levibot.storage.sink import PgSink
from levibot.storage.testing import temp_database
from levibot.testenv import PG_DSN
from levibot.testing import write_config, write_real_bars

pytestmark = [pytest.mark.anyio, pytest.mark.integration, pytest.mark.slow]

BARS = 600

RISK: dict[str, Any] = {
    "preset": "normal", "min_confidence": 0.0, "sizing": "atr_risk", "risk_fraction": 0.02,
    "atr_exits": True, "policy": "aggressive", "cooldown_loss_s": 86_400.0,
    "initial_equity": 10_000.0, "decide_after_portfolio": True, "persist": False,
}  # fmt: skip
ORDER: dict[str, Any] = {
    "cash": 10_000.0, "fee_bps": 10.0, "slippage_bps": 2.0, "fill": "next_open",
    "snapshot_every_bars": 1, "persist": False,
}  # fmt: skip


class Snap(msgspec.Struct):
    """The live state right after the pipeline settled on one bar."""

    instant: int
    portfolio: PortfolioAt
    risk: RiskState


class ProbeFeed(FeedActor):
    """The real feed; after each settled bar it copies the live portfolio and risk state."""

    name = "probe_feed"
    node: ClassVar[Node | None] = None
    snaps: ClassVar[list[Snap]] = []

    async def _emit(self, msg: Any) -> None:
        await super()._emit(msg)  # publishes, then waits until everything downstream is done
        node = ProbeFeed.node
        assert node is not None and isinstance(msg, Bar)
        order, risk = node.actors["order"], node.actors["risk"]
        ProbeFeed.snaps.append(
            Snap(msg.ts_event, portfolio_at(order.portfolio), risk_at(risk.engine.state))  # type: ignore[attr-defined]
        )


register("probe_feed", f"{__name__}:ProbeFeed")


@pytest.fixture(scope="module")
def csv_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A slice of the real data from mid-2021 (volatile: stops, take-profits and losses)."""
    return write_real_bars(tmp_path_factory.mktemp("data") / "BTCUSDT-1h.csv", BARS)


@pytest.fixture
async def dsn() -> AsyncIterator[str]:
    async with temp_database() as url:
        yield url


def run_settings(csv: Path, dsn: str, tmp: Path, *, market_data: bool) -> Settings:
    feed = {"source": "replay", "replay": {"path": str(csv), "symbol": "BTCUSDT"}}
    return load_settings(
        None,
        environ={},
        overrides={
            "node": {
                "name": "timetravel", "groups": ["run"], "replay": True,
                "stop_when_sources_done": True, "http_port": -1, "plugins": [],
            },
            "nats": {"url": ""},
            "storage": {"data_dir": str(tmp)},
            "groups": {"run": ["probe_feed", "scoring", "risk", "order", "store"]},
            "probe_feed": feed,
            "scoring": {"strategies": ["ema_cross"], "postgres_dsn": "",
                        "ema_cross": {"fast": "9", "slow": "21"}},
            "risk": RISK,
            "order": ORDER,
            "store": {"journal": False, "postgres_dsn": dsn, "events_market_data": market_data},
        },
    )  # fmt: skip


async def live_run(settings: Settings) -> list[Snap]:
    ProbeFeed.snaps = []
    node = Node(settings)
    ProbeFeed.node = node
    try:
        assert await node.run(handle_signals=False) == 0
    finally:
        ProbeFeed.node = None
    return list(ProbeFeed.snaps)


def pick(snaps: list[Snap], count: int) -> list[Snap]:
    """Instants spread over the run, some holding a position, the first pending order and loss."""
    step = max(1, len(snaps) // count)
    chosen = {s.instant: s for s in snaps[step - 1 :: step]}
    holding = [s for s in snaps if s.portfolio.holdings]
    chosen.update((s.instant, s) for s in holding[:: max(1, len(holding) // 6)])
    wants: tuple[Callable[[Snap], object], ...] = (
        lambda s: s.risk.pending, lambda s: s.risk.last_loss_ns, lambda s: s.risk.held,
    )  # fmt: skip
    for want in wants:
        first = next((s for s in snaps if want(s)), None)
        if first is not None:
            chosen[first.instant] = first
    return [chosen[k] for k in sorted(chosen)]


async def logged(dsn: str, type_: type[Any]) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        tag = str(type_.__struct_config__.tag)
        return int(await conn.fetchval("SELECT count(*) FROM events WHERE type = $1", tag))
    finally:
        await conn.close()


@pytest.mark.parametrize("market_data", [True, False], ids=["with-bars", "without-bars"])
async def test_events_replay_until_each_instant_equals_the_live_state_then(
    csv_path: Path, dsn: str, tmp_path: Path, market_data: bool
) -> None:
    settings = run_settings(csv_path, dsn, tmp_path, market_data=market_data)
    snaps = await live_run(settings)
    assert len(snaps) == BARS
    # The run did what makes a state worth travelling to: trades, exits, losses, denials.
    assert await logged(dsn, Fill) >= 10
    assert await logged(dsn, OrderClosed) >= 1
    assert await logged(dsn, OrderDenied) >= 1
    assert await logged(dsn, OrderIntent) >= 10
    assert any(s.risk.last_loss_ns for s in snaps)
    chosen = pick(snaps, 8)
    assert len(chosen) >= 12
    assert sum(1 for s in chosen if s.portfolio.holdings) >= 5
    assert any(s.portfolio.holdings for s in chosen) and any(
        not s.portfolio.holdings for s in chosen
    )
    assert any(s.risk.pending for s in chosen)
    conn = await asyncpg.connect(dsn)
    try:
        for snap in chosen:
            got = await rebuild(conn, settings, snap.instant)
            assert got.diverged == 0, got.divergences
            assert got.bad_rows == 0
            assert got.portfolio == snap.portfolio, snap.instant
            if market_data:
                assert got.risk == snap.risk, snap.instant
            else:
                # Without bars in the log the risk engine's market price follows signals and
                # fills only; everything else is the same.
                strip: dict[str, Any] = {"last_price": {}, "last_price_ns": {}}
                assert msgspec.structs.replace(got.risk, **strip) == msgspec.structs.replace(
                    snap.risk, **strip
                ), snap.instant
        # The end of the run, and an instant before anything happened.
        end = await rebuild(conn, settings, snaps[-1].instant)
        assert end.portfolio == snaps[-1].portfolio
        before = await rebuild(conn, settings, snaps[0].instant - 1)
        assert before.events == 0 and before.portfolio.cash == ORDER["cash"]
    finally:
        await conn.close()


async def test_the_events_replay_command_prints_the_state_at_an_iso_instant(
    csv_path: Path, dsn: str, tmp_path: Path
) -> None:
    snaps = await live_run(run_settings(csv_path, dsn, tmp_path, market_data=True))
    snap = next(s for s in snaps[len(snaps) // 2 :] if s.portfolio.holdings)
    config = write_config(tmp_path / "levibot.toml", {"risk": RISK, "order": ORDER})
    iso = datetime.fromtimestamp(snap.instant / 1e9, UTC).isoformat()  # 1h bars: whole seconds
    out = await anyio.run_process(
        [sys.executable, "-m", "levibot", "events", "replay", "--config", str(config),
         "--dsn", dsn, "--until", iso],
        check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr.decode()
    body = json.loads(out.stdout)
    assert body["until_ns"] == snap.instant
    assert body["diverged"] == 0, body["divergences"]
    assert body["portfolio"] == msgspec.to_builtins(snap.portfolio)
    assert body["risk"] == msgspec.to_builtins(snap.risk)


def test_events_replay_refuses_a_bad_instant_with_one_line() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "levibot", "events", "replay", "--until", "yesterday-ish",
         "--dsn", PG_DSN],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode != 0
    assert "--until 'yesterday-ish': not an instant" in out.stderr
    assert "Traceback" not in out.stderr


async def test_a_flush_cancelled_mid_write_leaves_the_log_whole(dsn: str, tmp_path: Path) -> None:
    """The drain cancels the store's timed flush wherever it is; the stop still writes it all."""
    cfg = StoreConfig(postgres_dsn=dsn, journal_dir=str(tmp_path / "journal"), batch_size=50)
    sink = PgSink(cfg, clock=LiveClock(), log=structlog.get_logger(), metrics=Metrics())
    await sink.connect()
    sink.add(
        [
            Signal(ts_event=i, ts_init=i, symbol="BTCUSDT", strategy="s", side=SignalSide.LONG,
                   probability=0.6, confidence=0.6, price=100.0)
            for i in range(1, 3001)
        ]
    )  # fmt: skip
    with anyio.move_on_after(0.005):  # in the middle of some batch's COPY
        await sink.write(force=True)
    await sink.stop()
    assert not sink.spilling
    assert await logged(dsn, Signal) == 3000
