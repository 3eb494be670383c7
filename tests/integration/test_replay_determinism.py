"""Replay determinism: the same input gives the same orders and fills, bit for bit, in one process.

Every run replays real BTCUSDT 1h bars through the real actors under the replay clock; what the
recorder kept is encoded with msgpack and the bytes are compared.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from levibot.backtest import BacktestSpec, replay_settings, run_backtest, run_node
from levibot.messages import (
    Bar,
    Features,
    Fill,
    OrderClosed,
    OrderDenied,
    OrderIntent,
    PortfolioSnapshot,
    Signal,
)
from levibot.settings import load_settings
from levibot.storage.journal import Journal
from levibot.testing import write_real_bars

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

TRADING = (Signal, OrderIntent, OrderDenied, Fill, OrderClosed, PortfolioSnapshot)
BARS = 4000


@pytest.fixture(scope="module")
def csv_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A slice of the real data: 4000 bars from mid-2021 (a volatile stretch)."""
    return write_real_bars(tmp_path_factory.mktemp("data") / "BTCUSDT-1h.csv", BARS)


@pytest.mark.parametrize(
    "spec_kw",
    [
        # ATR stop-loss / take-profit on, slippage, next-open fills, ATR-risk sizing.
        {
            "strategy": "ema_cross",
            "fill": "next_open",
            "slippage_bps": 2.0,
            "sizing": "atr_risk",
            "params": {
                "fast": "9",
                "slow": "21",
                "risk.atr_exits": "true",
                "risk.risk_fraction": "0.02",
            },
        },
        # Risk limits on (the denials must repeat too: a day's cooldown after a loss), close fills.
        {
            "strategy": "rsi_macd",
            "fill": "close",
            "sizing": "fixed_notional",
            "params": {
                "risk.preset": "safe",
                "risk.notional": "400",
                "risk.cooldown_loss_s": "86400",
            },
        },
    ],
    ids=["ema_cross-atr_exits", "rsi_macd-safe_preset"],
)
async def test_backtest_gives_the_same_orders_and_fills_bit_for_bit_run_after_run(
    csv_path: Path, spec_kw: dict[str, object]
) -> None:
    spec = BacktestSpec(data=str(csv_path), **spec_kw)  # type: ignore[arg-type]
    first = await run_backtest(spec)
    fills = first.recorder.of_type(Fill)
    assert len(fills) > 10
    baseline = first.recorder.encoded(*TRADING)
    for _ in range(2):
        again = await run_backtest(spec)
        assert again.recorder.encoded(*TRADING) == baseline
    if spec.strategy == "ema_cross":
        reasons = {f.reason for f in fills}
        assert {"stop_loss", "take_profit"} & reasons  # the exit paths ran, and repeated
    else:
        assert {d.code for d in first.recorder.of_type(OrderDenied)}  # limits denied entries


CONFIG = """
[scoring]
strategies = ["ema_cross"]
ema_cross = { fast = 12, slow = 26 }
[risk]
preset = "off"
sizing = "all_in"
atr_exits = true
[order]
fill = "next_open"
slippage_bps = 1.0
"""


async def _journal_of(csv_path: Path, journal_dir: Path) -> None:
    """Write a store journal the way production does: feed + feature + store in one node."""
    settings = load_settings(
        None,
        environ={},
        overrides={
            "node": {"groups": ["rec"], "replay": True, "stop_when_sources_done": True,
                     "http_port": -1},
            "groups": {"rec": ["feed", "feature", "store"]},
            "feed": {"replay": {"path": str(csv_path), "symbol": "BTCUSDT"}},
            "store": {"journal_dir": str(journal_dir), "fsync": "never"},
        },
    )  # fmt: skip
    from levibot.runtime.node import Node

    assert await Node(settings).run(handle_signals=False) == 0


async def test_journal_replay_repeats_bit_for_bit_and_matches_the_csv_replay(
    csv_path: Path, tmp_path: Path
) -> None:
    journal = tmp_path / "journal"
    await _journal_of(csv_path, journal)
    stored = list(Journal.read(journal))
    assert sum(isinstance(m, Bar) for m in stored) == BARS
    assert any(isinstance(m, Features) for m in stored)  # not market data: must be skipped
    config = tmp_path / "config.toml"
    config.write_text(CONFIG)

    settings = replay_settings(journal=str(journal), config=str(config))
    runs = [await run_node(settings) for _ in range(2)]
    from_journal = [r.recorder.encoded(*TRADING) for r in runs]
    assert from_journal[0] == from_journal[1]
    assert len(runs[0].recorder.of_type(Fill)) > 10
    assert len(runs[0].recorder.of_type(Bar)) == BARS

    from_csv = await run_node(replay_settings(data=str(csv_path), config=str(config)))
    assert from_csv.recorder.encoded(*TRADING) == from_journal[0]
