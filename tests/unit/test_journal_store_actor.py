"""The store actor with only its embedded journal (no servers)."""

from __future__ import annotations

from pathlib import Path

import pytest

from levibot.actors.store import StoreActor, StoreConfig
from levibot.clock import LiveClock
from levibot.config import convert
from levibot.errors import ConfigError
from levibot.messages import Features, Fill, SetTradingState, Side, Tick, TradingState
from levibot.storage.journal import Journal, segments
from levibot.storage.testing import free_port
from levibot.testing import RecordingContext


def stream(n: int) -> list[object]:
    out: list[object] = []
    for i in range(n):
        out.append(
            Tick(
                ts_event=i,
                ts_init=i,
                symbol="BTCUSDT",
                venue="v",
                price=1.0 + i,
                size=1.0,
                trade_id=i,
            )
        )
        if i % 10 == 0:
            out.append(
                Fill(
                    ts_event=i,
                    ts_init=i,
                    symbol="BTCUSDT",
                    fill_id=f"f{i}",
                    client_order_id=f"o{i}",
                    side=Side.BUY,
                    quantity=1.0,
                    price=1.0,
                    fee=0.0,
                )
            )
    out.append(SetTradingState(ts_event=n, ts_init=n, command_id="c", state=TradingState.HALTED))
    return out


@pytest.mark.anyio
async def test_store_journals_every_consumed_message_in_order(tmp_path: Path) -> None:
    msgs = stream(200)
    actor = StoreActor(RecordingContext("store"), StoreConfig(journal_dir=str(tmp_path / "j")))
    await actor.on_start()
    await actor.handle(msgs[0])
    for i in range(1, len(msgs), 37):
        await actor.handle_batch(msgs[i : i + 37])
    await actor.on_stop()
    assert list(Journal.read(tmp_path / "j")) == msgs
    assert actor.sink is None and actor.features is None


@pytest.mark.anyio
async def test_store_restarts_on_a_journal_with_a_torn_tail(tmp_path: Path) -> None:
    cfg = StoreConfig(journal_dir=str(tmp_path / "j"), fsync="always")
    first = StoreActor(RecordingContext("store"), cfg)
    await first.on_start()
    await first.handle_batch(stream(20))
    await first.on_stop()
    seg = segments(tmp_path / "j")[-1]
    seg.write_bytes(seg.read_bytes()[:-3])  # the crash tore the last record

    second = StoreActor(RecordingContext("store"), cfg)
    await second.on_start()
    await second.handle_batch(stream(5))
    await second.on_stop()
    reader = Journal.read(tmp_path / "j")
    got = list(reader)
    assert got == stream(20)[:-1] + stream(5)
    assert reader.bad == []


@pytest.mark.anyio
async def test_store_with_the_journal_off_keeps_nothing_on_disk(tmp_path: Path) -> None:
    actor = StoreActor(
        RecordingContext("store"), StoreConfig(journal=False, journal_dir=str(tmp_path / "j"))
    )
    await actor.on_start()
    await actor.handle_batch(stream(5))
    await actor.on_tick()
    await actor.on_stop()
    assert not (tmp_path / "j").exists()


def test_store_config_has_safe_defaults_and_rejects_bad_values() -> None:
    cfg = convert({}, StoreConfig)
    assert (cfg.journal, cfg.fsync, cfg.postgres_dsn, cfg.redis_url) == (True, "batch", "", "")
    assert cfg.store_ticks and not cfg.store_features
    with pytest.raises(ConfigError, match=r"\$\.store\.fsync"):
        convert({"fsync": "sometimes"}, StoreConfig, prefix="$.store")
    with pytest.raises(ConfigError, match="batch_size"):
        convert({"batch_size": 0}, StoreConfig)
    with pytest.raises(ConfigError, match="unknown field"):
        convert({"batchsize": 10}, StoreConfig)


@pytest.mark.anyio
async def test_store_starts_and_keeps_running_when_postgres_and_redis_are_unreachable(
    tmp_path: Path,
) -> None:
    port = free_port()  # nothing listens there
    cfg = StoreConfig(
        journal_dir=str(tmp_path / "j"),
        postgres_dsn=f"postgresql://postgres@127.0.0.1:{port}/x",
        redis_url=f"redis://127.0.0.1:{port}/0",
        max_buffer=10,
        flush_interval_s=1e-9,
    )
    ctx = RecordingContext("store", clock=LiveClock())
    actor = StoreActor(ctx, cfg)
    await actor.on_start()
    assert not actor.pg_up
    msgs = [
        *stream(30),
        Features(ts_event=1, ts_init=1, symbol="X", schema_hash="h", values=(1.0,), price=1.0),
    ]
    await actor.handle_batch(msgs)
    await actor.on_tick()
    assert actor.buffered == 10 and actor.spilling
    assert ctx.metrics.value("levibot_store_redis_errors_total") == 1
    await actor.on_stop()
    # Nothing lost: the journal has everything; the spill holds all that PostgreSQL did not get.
    assert list(Journal.read(tmp_path / "j")) == msgs
    pg_bound = [m for m in msgs if not isinstance(m, Features)]
    assert list(Journal.read(tmp_path / "j-spill")) == pg_bound
