"""The replay scheduler: a replay node with no NATS runs every handler from the settling task.

It must give what the receive loops (one task per actor) give, to the byte, and still handle
what is published without a settle (a source that never settles, more than a mailbox holds),
a crashing actor, and a handler that really waits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from levibot.backtest import BacktestSpec
from levibot.backtest.runner import backtest_settings
from levibot.runtime.node import EXIT_CRASH, EXIT_OK, Node
from levibot.settings import load_settings
from levibot.testing import write_real_bars
from tests.pipeline import GROUPS

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def csv_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_real_bars(tmp_path_factory.mktemp("data") / "BTCUSDT-1h.csv", 1500)


async def recorded(spec: BacktestSpec, path: Path, *, direct: bool) -> tuple[bytes, Node]:
    node = Node(backtest_settings(spec, path), direct_replay=direct)
    assert (node.replay is not None) is direct
    assert await node.run(handle_signals=False) == EXIT_OK
    return node.actors["recorder"].encoded(), node


@pytest.mark.parametrize(
    "spec_kw",
    [
        {"strategy": "ema_cross", "fill": "next_open"},
        {
            "strategy": "rsi_macd", "fill": "close", "slippage_bps": 3.0,
            "params": {"risk.atr_exits": "true", "risk.max_drawdown_pct": "0.1"},
        },
    ],
)  # fmt: skip
async def test_direct_replay_records_the_same_bytes_as_the_receive_loops(
    csv_path: Path, spec_kw: dict[str, Any]
) -> None:
    spec = BacktestSpec(data=str(csv_path), **spec_kw)
    loops, _ = await recorded(spec, csv_path, direct=False)
    direct, node = await recorded(spec, csv_path, direct=True)
    assert len(loops) > 100_000  # bars, signals, fills and a snapshot per bar
    assert direct == loops
    assert node.replay is not None and node.replay.drains >= 3 * 1500  # no receive loop ran
    assert not any(r.looping for r in node.runners if r.mailbox is not None)


def chain(count: int, **extra: Any) -> Any:
    return load_settings(
        None,
        environ={},
        overrides={
            "groups": {"all": ("counter", "square", "sink"), **GROUPS},
            "node": {
                "groups": ["all"], "http_port": -1, "replay": True,
                "stop_when_sources_done": True,
            },
            "counter": {"count": count},
            **extra,
        },
    )  # fmt: skip


async def test_a_source_that_never_settles_overflowing_mailboxes_is_handled_in_order() -> None:
    # 10 000 messages with no settle and no yield: more than a mailbox holds (4096), so the
    # publisher's put relieves the mailbox by draining it, instead of waiting for a reader.
    node = Node(chain(10_000))
    assert node.replay is not None
    assert await node.run(handle_signals=False) == EXIT_OK
    assert [m.value for m in node.actors["sink"].seen] == list(range(10_000))
    assert max(len(r.mailbox) for r in node.runners if r.mailbox is not None) == 0


async def test_a_crashing_actor_stops_the_direct_replay_non_zero() -> None:
    settings = chain(
        2_000,
        groups={"all": ("counter", "square", "fatal_sink"), **GROUPS},
        fatal_sink={"fail_on": [500]},
    )
    node = Node(settings)
    with anyio.fail_after(30):
        code = await node.run(handle_signals=False)
    assert code == EXIT_CRASH
    assert [m.value for m in node.actors["fatal_sink"].seen] == list(range(500))


async def test_a_handler_that_waits_suspends_the_settle_and_keeps_the_order() -> None:
    node = Node(chain(300, sink={"delay_s": 0.0005}))
    with anyio.fail_after(30):
        assert await node.run(handle_signals=False) == EXIT_OK
    assert [m.value for m in node.actors["sink"].seen] == list(range(300))
