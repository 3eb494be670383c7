"""The replay scheduler: a replay node with no NATS runs every handler from the settling task.

It must give what the receive loops (one task per actor) give, to the byte, and still handle
what is published without a settle (a source that never settles, more than a mailbox holds),
a crashing actor, and a handler that really waits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from levibot.backtest import BacktestSpec
from levibot.backtest.runner import backtest_settings
from levibot.bus import MailboxClosed
from levibot.bus._mailbox import TapMailbox
from levibot.runtime.node import EXIT_CRASH, EXIT_OK, Node
from levibot.settings import load_settings
from levibot.testing import write_real_bars
from tests.pipeline import GROUPS, Num

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
    loops, looping = await recorded(spec, csv_path, direct=False)
    direct, node = await recorded(spec, csv_path, direct=True)
    assert len(loops) > 100_000  # bars, signals, fills and a snapshot per bar
    assert direct == loops
    # The scheduler observes no message's time (the sources did): the clock ends where the
    # receive loops', which observe every message, leave it.
    assert node.clock.now_ns() == looping.clock.now_ns() > 0
    assert node.replay is not None and node.replay.drains >= 3 * 1500  # no receive loop ran
    assert not any(r.looping for r in node.runners if r.mailbox is not None)
    recorder = next(r for r in node.runners if r.name == "recorder")
    assert isinstance(recorder.mailbox, TapMailbox)  # recorded as published


async def test_order_before_risk_saves_a_drain_per_bar_and_changes_no_byte(csv_path: Path) -> None:
    # The backtest group lists order before risk: a bar's fill and snapshot then reach risk in
    # the drain that also takes the bar and the signal. decide_after_portfolio makes risk's
    # decisions independent of that order, so listing risk first gives the same bytes, with
    # one more drain per bar.
    spec = BacktestSpec(data=str(csv_path), strategy="ema_cross", fill="next_open")
    settings = backtest_settings(spec, csv_path)
    group = list(settings.groups["backtest"])
    o, r = group.index("order"), group.index("risk")
    assert o < r
    group[o], group[r] = "risk", "order"
    groups = {**settings.groups, "backtest": tuple(group)}
    swapped = msgspec.structs.replace(settings, groups=groups)
    runs = []
    for s in (settings, swapped):
        node = Node(s)
        assert await node.run(handle_signals=False) == EXIT_OK
        assert node.replay is not None
        runs.append((node.actors["recorder"].encoded(), node.replay.drains))
    (ours, drains), (theirs, swapped_drains) = runs
    assert ours == theirs
    assert drains < swapped_drains - 1400  # about one drain less per bar, 1,500 bars


async def test_a_tap_mailbox_hands_each_message_over_at_once_until_closed() -> None:
    got: list[Any] = []
    done: list[int] = []
    tap = TapMailbox("rec", got.append)
    first, second = (Num(ts_event=i, ts_init=i, symbol="A", value=i) for i in range(2))
    assert tap.try_put(first, lambda: done.append(1))
    await tap.put(second)
    assert got == [first, second] and done == [1] and len(tap) == 0
    tap.close()
    assert not tap.try_put(first) and not tap.offer(first) and tap.dropped == 1
    with pytest.raises(MailboxClosed):
        await tap.put(first)
    assert got == [first, second]


async def test_a_model_backtest_with_features_records_the_same_bytes(tmp_path: Path) -> None:
    # feed → feature → scoring (an ONNX model, batched Features) → risk → order: the scoring
    # mailbox gets the bar from the feed and the features from the feature actor in one settle.
    from levibot.features import SCHEMA
    from levibot.ml.registry import ModelRegistry
    from levibot.ml.testing import make_model

    used = ("close_ema_12_ratio", "rsi_14", "bb_pctb", "ret_1")
    reg = ModelRegistry(tmp_path / "models", schema_hash=SCHEMA.hash)
    make_model(
        tmp_path / "A", model_id="A", schema_hash=SCHEMA.hash, schema_size=len(SCHEMA.names),
        columns=tuple(SCHEMA.index(n) for n in used), names=used, sign=1.0,
        created_at_ns=1_700_000_000_000_000_000,
    )  # fmt: skip
    reg.register(tmp_path / "A")
    reg.activate("A")
    csv = write_real_bars(tmp_path / "BTCUSDT-1h.csv", 600)
    spec = BacktestSpec(
        data=str(csv), strategy="onnx",
        params={"registry_dir": str(tmp_path / "models"), "model_id": "A",
                "long_threshold": "0.5", "short_threshold": "0.5"},
    )  # fmt: skip
    loops, _ = await recorded(spec, csv, direct=False)
    direct, node = await recorded(spec, csv, direct=True)
    assert "feature" in node.actors
    assert direct == loops
    kinds = [m["type"] for m in msgspec.msgpack.decode(direct)]
    assert kinds.count("levibot.Signal") > 100 and "levibot.Fill" in kinds, "a run that trades"


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


def test_direct_replay_beside_a_nats_mirror_is_refused(csv_path: Path) -> None:
    settings = backtest_settings(BacktestSpec(data=str(csv_path)), csv_path)
    mirrored = msgspec.structs.replace(
        settings, nats=msgspec.structs.replace(settings.nats, url="nats://127.0.0.1:4222")
    )
    with pytest.raises(ValueError, match="without a NATS mirror"):
        Node(mirrored, direct_replay=True)
    assert Node(mirrored).replay is None  # by default such a node keeps its receive loops
