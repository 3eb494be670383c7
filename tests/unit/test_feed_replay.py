"""The replay source: klines → Bars, trades → Ticks, event time drives the clock, pacing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from levibot.actors.feed import FeedActor, FeedConfig
from levibot.clock import ReplayClock
from levibot.config import convert
from levibot.data import KlinesError
from levibot.messages import Bar, Side, Tick
from levibot.testing import RecordingContext

pytestmark = pytest.mark.anyio

S = 1_000_000_000
H = 3600 * S
T0_MS = 1_700_000_000_000 - 1_700_000_000_000 % 3_600_000  # on the hour
REPO_DATA = Path(__file__).resolve().parents[2] / "var" / "data"


async def replay(**cfg: Any) -> tuple[FeedActor, RecordingContext]:
    ctx = RecordingContext("feed", clock=ReplayClock())
    actor = FeedActor(ctx, convert({"source": "replay", **cfg}, FeedConfig))
    await actor.on_start()
    await actor.run()
    await actor.on_stop()
    return actor, ctx


def kline_csv(tmp_path: Path, hours: list[int], extra: str = "") -> Path:
    path = tmp_path / "ETHUSDT-1h.csv"
    rows = "".join(
        f"{T0_MS + h * 3_600_000},{10 + h},{12 + h},{9 + h},{11 + h},{h}\n" for h in hours
    )
    path.write_text("timestamp,open,high,low,close,volume\n" + rows + extra)
    return path


async def test_kline_replay_emits_one_bar_per_row_with_the_timeframe_of_the_data(
    tmp_path: Path,
) -> None:
    _, ctx = await replay(replay={"path": str(kline_csv(tmp_path, [0, 1, 2, 5]))})
    bars = ctx.of_type(Bar)
    assert len(bars) == len(ctx.published) == 4  # the 3-hour gap stays a gap
    first = bars[0]
    assert (first.symbol, first.venue, first.timeframe) == ("ETHUSDT", "BINANCE", "1h")
    assert (first.start, first.ts_event) == (T0_MS * 1_000_000, T0_MS * 1_000_000 + H)
    assert (first.open, first.high, first.low, first.close, first.volume) == (10, 12, 9, 11, 0)
    # Event time drives the clock: a bar is stamped at its close.
    assert all(b.ts_init == b.ts_ingress == b.ts_event for b in bars)
    assert ctx.clock.now_ns() == bars[-1].ts_event


async def test_kline_replay_overrides_symbol_and_timeframe_and_limits(tmp_path: Path) -> None:
    path = kline_csv(tmp_path, [0, 1, 2, 3])
    _, ctx = await replay(
        venue="TESTX", replay={"path": str(path), "symbol": "XBT", "timeframe": "30m", "limit": 2}
    )
    bars = ctx.of_type(Bar)
    assert [(b.symbol, b.venue, b.timeframe) for b in bars] == [("XBT", "TESTX", "30m")] * 2
    assert bars[0].ts_event - bars[0].start == 1800 * S


async def test_kline_replay_drops_bad_rows_and_counts_them(tmp_path: Path) -> None:
    bad = f"{T0_MS + 9 * 3_600_000},nan,1,1,1,1\n{T0_MS + 9 * 3_600_000},1,1,1,1,1\n"
    _, ctx = await replay(replay={"path": str(kline_csv(tmp_path, [0, 1, 2], extra=bad))})
    assert len(ctx.of_type(Bar)) == 4
    assert ctx.metrics.value("levibot_feed_rejected_total", reason="non_finite") == 1


def trades_csv(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "trades.csv"
    path.write_text(body)
    return path


async def test_trades_replay_emits_ticks_with_sides_ids_and_symbols(tmp_path: Path) -> None:
    path = trades_csv(
        tmp_path,
        "timestamp,symbol,price,qty,is_buyer_maker,id\n"
        f"{T0_MS},BTCUSDT,100.5,0.25,false,7\n"
        f"{T0_MS},ETHUSDT,10.25,2,true,8\n"
        f"{T0_MS + 1},BTCUSDT,100.75,1,false,9\n",
    )
    _, ctx = await replay(replay={"path": str(path)})
    ticks = ctx.of_type(Tick)
    assert [(t.symbol, t.price, t.size, t.side, t.trade_id) for t in ticks] == [
        ("BTCUSDT", 100.5, 0.25, Side.BUY, 7),
        ("ETHUSDT", 10.25, 2.0, Side.SELL, 8),
        ("BTCUSDT", 100.75, 1.0, Side.BUY, 9),
    ]
    assert ticks[-1].ts_event == (T0_MS + 1) * 1_000_000 == ctx.clock.now_ns()


async def test_trades_replay_drops_bad_and_out_of_order_rows_without_stopping(
    tmp_path: Path,
) -> None:
    path = trades_csv(
        tmp_path,
        "# trades of BTCUSDT\ntime,price,size,side\n"
        "2023-11-14T22:13:20Z,100,1,buy\n"
        "2023-11-14T22:13:21Z,abc,1,buy\n"  # malformed
        "2023-11-14T22:13:22Z,inf,1,sell\n"  # non_finite
        "2023-11-14T22:13:23Z,-5,1,sell\n"  # negative
        "2023-11-14T22:13:19Z,100,1,sell\n"  # out_of_order
        "2023-11-14T22:13:24Z,101,2,sell\n",
    )
    _, ctx = await replay(replay={"path": str(path), "symbol": "BTCUSDT"}, bars=["1s"])
    ticks = ctx.of_type(Tick)
    assert [(t.price, t.side) for t in ticks] == [(100.0, Side.BUY), (101.0, Side.SELL)]
    for reason in ("malformed", "non_finite", "negative", "out_of_order"):
        assert ctx.metrics.value("levibot_feed_rejected_total", reason=reason) == 1
    bars = ctx.of_type(Bar)  # ticks can be aggregated into bars on the way
    assert [(b.timeframe, b.open, b.trades) for b in bars] == [("1s", 100.0, 1), ("1s", 101.0, 1)]


async def test_missing_replay_file_fails_at_start_with_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(KlinesError, match="replay file not found"):
        await replay(replay={"path": str(tmp_path / "nope.csv")})


async def test_speed_multiple_sleeps_event_time_divided_by_speed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [0.0]
    slept: list[float] = []

    async def fake_sleep(delay: float) -> None:
        slept.append(round(delay, 9))
        now[0] += delay

    monkeypatch.setattr(anyio, "current_time", lambda: now[0])
    monkeypatch.setattr(anyio, "sleep", fake_sleep)
    path = kline_csv(tmp_path, [0, 1, 3])  # bar closes 1 h, then 2 h apart
    await replay(replay={"path": str(path), "speed": 3600.0})
    assert slept == [1.0, 2.0]  # 1 h and 2 h of event time at 3600× real time


@pytest.mark.integration
async def test_default_config_replays_the_real_btcusdt_data_deterministically() -> None:
    _, ctx = await replay(replay={"data_dir": str(REPO_DATA)})
    assert FeedConfig().replay.path == "" and FeedConfig().replay.speed == 0.0
    bars = ctx.of_type(Bar)
    assert len(bars) == 55_765 and {b.symbol for b in bars} == {"BTCUSDT"}
    assert (bars[0].start, bars[0].open, bars[-1].close) == (1_502_942_400 * S, 4261.48, 44179.55)
    assert {b.timeframe for b in bars} == {"1h"}
    _, again = await replay(replay={"data_dir": str(REPO_DATA), "limit": 1000})
    assert again.published == ctx.published[:1000]  # bit for bit


async def test_a_single_bar_file_needs_its_timeframe_set(tmp_path: Path) -> None:
    path = kline_csv(tmp_path, [0])
    with pytest.raises(KlinesError, match=r"set feed\.replay\.timeframe"):
        await replay(replay={"path": str(path)})
    _, ctx = await replay(replay={"path": str(path), "timeframe": "1h"})
    assert len(ctx.of_type(Bar)) == 1


async def test_a_binary_file_is_refused_at_start(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes(b"\xff\xfe\x00\x01garbage")
    with pytest.raises(KlinesError, match=r"x\.csv:1: a trades CSV needs timestamp"):
        await replay(replay={"path": str(path)})


async def test_undecodable_bytes_in_a_trades_file_drop_only_their_row(tmp_path: Path) -> None:
    path = tmp_path / "trades.csv"
    path.write_bytes(
        b"timestamp,price,size\n1700000000000,1.5,1\n17000\xff0000001,2,1\n1700000000002,2.5,1\n"
    )
    _, ctx = await replay(replay={"path": str(path), "symbol": "X"})
    assert [t.price for t in ctx.of_type(Tick)] == [1.5, 2.5]
    assert ctx.metrics.value("levibot_feed_rejected_total", reason="malformed") == 1
