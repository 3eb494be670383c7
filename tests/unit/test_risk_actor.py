"""The risk actor on a recording context: decisions, commands, alerts, restart persistence."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, cast

import msgspec
import pytest

from levibot.actors.order import OrderActor, OrderConfig
from levibot.actors.risk import RiskActor, RiskConfig
from levibot.clock import LiveClock, ReplayClock
from levibot.config import convert
from levibot.errors import ConfigError
from levibot.messages import (
    Alert,
    AlertLevel,
    Bar,
    Fill,
    OrderClosed,
    OrderDenied,
    OrderIntent,
    PortfolioSnapshot,
    Position,
    RiskStatus,
    SetKillSwitch,
    SetRiskPolicy,
    SetTradingState,
    Side,
    Signal,
    SignalSide,
    SubmitOrder,
    TradingState,
)
from levibot.risk import PRESETS, StateFileError
from levibot.runtime import Policy
from levibot.testing import RecordingContext

S = 1_000_000_000
H = 3_600 * S
T0 = 1_700_006_400 * S


class Harness:
    def __init__(self, tmp: Path, clock: ReplayClock | None = None, **cfg: Any) -> None:
        self.clock = clock or ReplayClock()
        self.ctx = RecordingContext("risk", clock=self.clock)
        cfg.setdefault("state_dir", str(tmp))
        cfg.setdefault("fsync", False)
        self.actor = RiskActor(self.ctx, RiskConfig(**cfg))

    async def send(self, msg: Any) -> None:
        self.clock.observe(msg.ts_event)
        await self.actor.handle(msg)

    def of(self, t: type[Any]) -> list[Any]:
        return self.ctx.of_type(t)


async def started(tmp: Path, **cfg: Any) -> Harness:
    h = Harness(tmp, **cfg)
    await h.actor.on_start()
    return h


def sig(ts: int, side: SignalSide = SignalSide.LONG, symbol: str = "BTCUSDT") -> Signal:
    return Signal(
        ts_event=ts,
        ts_init=ts,
        ts_ingress=ts - 11,
        symbol=symbol,
        strategy="ema",
        side=side,
        probability=0.8,
        confidence=0.6,
        price=100.0,
        atr=2.0,
        spread_bps=1.0,
    )


def cmd(t: type[Any], ts: int, **kw: Any) -> Any:
    return t(ts_event=ts, ts_init=ts, command_id=f"{t.__name__}-{ts}", issued_by="op", **kw)


def test_actor_metadata() -> None:
    assert RiskActor.name == "risk" and RiskActor.supervision.policy is Policy.CRASH
    assert RiskActor.config_type is RiskConfig
    assert set(RiskActor.emits) == {OrderIntent, OrderDenied, Alert, RiskStatus}
    assert {Signal, Fill, OrderClosed, PortfolioSnapshot, SubmitOrder} <= set(RiskActor.consumes)


def test_presets_set_defaults_and_explicit_fields_override() -> None:
    assert RiskConfig(preset="safe").limits() == PRESETS["safe"]
    limits = convert({"preset": "aggressive", "max_drawdown_pct": 0.05}, RiskConfig).limits()
    assert limits.max_drawdown_pct == 0.05
    assert limits.max_order_notional == PRESETS["aggressive"].max_order_notional
    with pytest.raises(ConfigError, match=r"max_drawdown_pct"):
        convert({"max_drawdown_pct": 2.0}, RiskConfig)
    with pytest.raises(ConfigError):
        convert({"preset": "yolo"}, RiskConfig)


@pytest.mark.anyio
async def test_signal_becomes_an_intent_with_latency_stamps(tmp_path: Path) -> None:
    h = await started(tmp_path, preset="off")
    h.clock.observe(T0 + 50)  # the shared replay clock ran ahead: decisions ignore it
    await h.actor.handle(sig(T0))
    [i] = h.of(OrderIntent)
    assert (i.client_order_id, i.ts_event, i.ts_init, i.ts_ingress) == (
        f"ema-BTCUSDT-{T0}",
        T0,
        T0,
        T0 - 11,
    )
    assert h.ctx.metrics.value("levibot_risk_intents_total") == 1


@pytest.mark.anyio
async def test_a_live_clock_stamps_ts_init_with_wall_time(tmp_path: Path) -> None:
    h = Harness(tmp_path, clock=cast(Any, LiveClock()), preset="off")
    await h.actor.on_start()
    before = time.time_ns()
    await h.actor.handle(sig(T0))
    [i] = h.of(OrderIntent)
    assert i.ts_init >= before > T0


@pytest.mark.anyio
async def test_kill_switch_denies_manual_and_signal_orders(tmp_path: Path) -> None:
    h = await started(tmp_path, preset="off")
    await h.send(cmd(SetKillSwitch, T0, on=True))
    await h.send(sig(T0 + 1))
    await h.send(cmd(SubmitOrder, T0 + 2, symbol="BTCUSDT", side="buy", quantity=1.0, price=100.0))
    assert [d.code for d in h.of(OrderDenied)] == ["KILL_SWITCH", "KILL_SWITCH"]
    assert h.of(Alert)[0].level is AlertLevel.CRITICAL
    assert h.ctx.metrics.value("levibot_risk_denied_total", code="KILL_SWITCH") == 2


@pytest.mark.anyio
async def test_an_unknown_policy_is_an_alert_not_a_crash(tmp_path: Path) -> None:
    h = await started(tmp_path, preset="off")
    await h.send(cmd(SetRiskPolicy, T0, policy="yolo"))
    assert h.of(Alert)[0].code == "BAD_POLICY"
    assert h.actor.engine.state.policy == "moderate"


@pytest.mark.anyio
async def test_state_survives_a_restart(tmp_path: Path) -> None:
    h = await started(tmp_path, preset="normal")
    await h.send(cmd(SetKillSwitch, T0, on=True))
    await h.send(cmd(SetRiskPolicy, T0, policy="aggressive"))
    await h.send(cmd(SetTradingState, T0, state=TradingState.REDUCING))
    eth = Position(
        symbol="ETHUSDT", quantity=1.0, avg_price=60.0, last_price=60.0, unrealized_pnl=0.0
    )
    snap = PortfolioSnapshot(
        ts_event=T0 + 1,
        ts_init=T0 + 1,
        cash=11_940.0,
        equity=12_000.0,
        realized_pnl=2_000.0,
        unrealized_pnl=0.0,
        fees=0.0,
        positions=(eth,),
    )
    await h.send(snap)
    loss = Fill(
        ts_event=T0 + 2,
        ts_init=T0 + 2,
        symbol="ETHUSDT",
        fill_id="x:f1",
        client_order_id="x",
        side=Side.SELL,
        quantity=1.0,
        price=10.0,
        fee=0.0,
        realized_pnl=-50.0,
        reason="stop_loss",
        position_after=0.0,
    )
    await h.send(loss)
    # killed: no on_stop. The restarted actor reads the same file.
    r = await started(tmp_path, preset="normal", policy="conservative")
    st = r.actor.engine.state
    assert st.kill_switch is True and st.trading_state is TradingState.REDUCING
    assert st.policy == "aggressive" and st.peak_equity == 12_000.0
    assert st.day == T0 // (86_400 * S) and st.day_realized == -50.0
    assert st.last_stop_ns["ETHUSDT"] == T0 + 2 and st.last_loss_global_ns == T0 + 2
    await r.send(loss)  # a re-delivered fill is not counted twice
    assert r.actor.engine.state.day_realized == -50.0
    await r.send(cmd(SetKillSwitch, T0 + 3, on=False))
    await r.send(cmd(SetTradingState, T0 + 3, state=TradingState.ACTIVE))
    await r.send(sig(T0 + 4, symbol="ETHUSDT"))
    assert [d.code for d in r.of(OrderDenied)] == ["COOLDOWN_LOSS"]  # checked before the SL one


@pytest.mark.anyio
async def test_daily_counters_and_pending_orders_survive_a_restart(tmp_path: Path) -> None:
    h = await started(tmp_path, preset="off", max_trades_per_day=1)
    await h.send(sig(T0 + 1))
    assert len(h.of(OrderIntent)) == 1
    r = await started(tmp_path, preset="off", max_trades_per_day=1)
    assert r.of(OrderIntent) == h.of(OrderIntent)  # the outbox, re-published at start
    r.ctx.published.clear()
    await r.send(sig(T0 + 2))  # long is pending: nothing to do
    await r.send(sig(T0 + 3, symbol="ETHUSDT"))
    assert r.of(OrderIntent) == [] and [d.code for d in r.of(OrderDenied)] == ["MAX_TRADES_PER_DAY"]
    await r.send(sig(T0 + 1))  # the same signal again: already decided before the restart
    assert len(r.of(OrderDenied)) == 1


@pytest.mark.anyio
async def test_a_drawdown_breach_alerts_and_halts_and_the_halt_persists(tmp_path: Path) -> None:
    h = await started(tmp_path, preset="off", max_drawdown_pct=0.1)
    for ts, eq in ((T0, 11_000.0), (T0 + 1, 9_800.0)):
        await h.send(
            PortfolioSnapshot(
                ts_event=ts,
                ts_init=ts,
                cash=eq,
                equity=eq,
                realized_pnl=0.0,
                unrealized_pnl=0.0,
                fees=0.0,
            )
        )
    [alert] = h.of(Alert)
    assert (alert.level, alert.code) == (AlertLevel.CRITICAL, "MAX_DRAWDOWN")
    assert "HALTED" in alert.text
    r = await started(tmp_path, preset="off", max_drawdown_pct=0.1)
    assert r.actor.engine.state.trading_state is TradingState.HALTED
    await r.send(sig(T0 + 2))
    assert [d.code for d in r.of(OrderDenied)] == ["TRADING_HALTED"]


@pytest.mark.anyio
async def test_a_corrupt_state_file_refuses_to_start(tmp_path: Path) -> None:
    (tmp_path / "risk.json").write_text('{"kill_switch": "maybe"}')
    with pytest.raises(StateFileError, match="risk"):
        await started(tmp_path)


@pytest.mark.anyio
async def test_risk_and_order_actors_trade_a_round_trip_together(tmp_path: Path) -> None:
    """Signal → intent → fill → snapshot → risk's book, then an exit, with real actors."""
    clock = ReplayClock()
    risk = Harness(tmp_path, clock=clock, preset="off", sizing="all_in", fee_bps=10.0)
    octx = RecordingContext("order", clock=clock)
    order = OrderActor(
        octx,
        OrderConfig(
            state_dir=str(tmp_path), fsync=False, fill="close", fee_bps=10.0, slippage_bps=0.0
        ),
    )
    await risk.actor.on_start()
    await order.on_start()

    async def pump() -> None:
        # deliver what each published to the other, in order, until quiet
        done_r = done_o = 0
        while done_r < len(risk.ctx.published) or done_o < len(octx.published):
            for m in risk.ctx.published[done_r:]:
                done_r += 1
                if isinstance(m, OrderIntent):
                    await order.handle(m)
            for m in octx.published[done_o:]:
                done_o += 1
                if type(m) in RiskActor.consumes:
                    await risk.actor.handle(cast(Any, m))

    b = Bar(
        ts_event=T0 + H,
        ts_init=0,
        symbol="BTCUSDT",
        venue="b",
        timeframe="1h",
        start=T0,
        open=100.0,
        high=100.0,
        low=100.0,
        close=100.0,
        volume=1.0,
    )
    clock.observe(b.ts_event)
    await order.handle(b)
    await risk.send(sig(T0 + H))
    await pump()
    [f] = octx.of_type(Fill)
    assert f.quantity == 99.9000999  # all in: 10_000 / (100 * 1.001), floored to 1e-8
    eng = risk.actor.engine
    assert eng.state.positions["BTCUSDT"].quantity == f.quantity
    assert eng.equity == pytest.approx(order.portfolio.equity)
    assert eng.state.pending == {}
    await risk.send(sig(T0 + 2 * H, SignalSide.FLAT))
    await pump()
    exit_fill = octx.of_type(Fill)[-1]
    assert exit_fill.side is Side.SELL and exit_fill.position_after == 0.0
    assert (
        eng.equity
        == pytest.approx(order.portfolio.equity)
        == pytest.approx(10_000 + exit_fill.realized_pnl)
    )
    assert eng.state.positions == {}


@pytest.mark.anyio
async def test_garbage_fills_and_snapshots_are_dropped_not_applied(tmp_path: Path) -> None:
    h = await started(tmp_path, preset="off")
    nan = float("nan")
    await h.send(
        PortfolioSnapshot(
            ts_event=T0,
            ts_init=T0,
            cash=nan,
            equity=nan,
            realized_pnl=0.0,
            unrealized_pnl=0.0,
            fees=0.0,
        )
    )
    await h.send(
        Fill(
            ts_event=T0,
            ts_init=T0,
            symbol="BTCUSDT",
            fill_id="g:f1",
            client_order_id="g",
            side=Side.BUY,
            quantity=nan,
            price=100.0,
            fee=0.0,
        )
    )
    assert h.actor.engine.equity == 10_000.0
    await h.send(sig(T0 + 1, SignalSide.LONG))
    [i] = h.of(OrderIntent)
    assert i.quantity == 10.0  # fixed notional 1_000 at 100: the book is intact


async def _held_signal_scenario() -> list[str]:
    """A LONG signal for bar t arrives before the portfolio snapshot of bar t."""
    from levibot.actors.risk import RiskActor, RiskConfig
    from levibot.clock import ReplayClock
    from levibot.messages import OrderIntent, PortfolioSnapshot, Signal, SignalSide
    from levibot.testing import RecordingContext

    ctx = RecordingContext("risk", clock=ReplayClock())
    actor = RiskActor(ctx, RiskConfig(preset="off", persist=False, decide_after_portfolio=True))
    await actor.on_start()
    t = 1_700_000_000_000_000_000
    snap = PortfolioSnapshot(
        ts_event=t - 1, ts_init=t - 1, cash=10_000.0, equity=10_000.0, realized_pnl=0.0,
        unrealized_pnl=0.0, fees=0.0,
    )  # fmt: skip
    await actor.handle(snap)
    signal = Signal(
        ts_event=t, ts_init=t, symbol="BTCUSDT", strategy="s", side=SignalSide.LONG,
        probability=0.9, confidence=0.8, price=100.0, atr=1.0,
    )  # fmt: skip
    await actor.handle(signal)
    held = [m.client_order_id for m in ctx.of_type(OrderIntent)]
    await actor.handle(msgspec.structs.replace(snap, ts_event=t, ts_init=t))
    return [*held, "|", *(m.client_order_id for m in ctx.of_type(OrderIntent))]


@pytest.mark.anyio
async def test_a_signal_waits_for_the_portfolio_of_its_bar_when_asked() -> None:
    assert await _held_signal_scenario() == ["|", "s-BTCUSDT-1700000000000000000"]


@pytest.mark.anyio
async def test_risk_announces_its_status_at_start_and_when_a_control_changes() -> None:
    from levibot.actors.risk import RiskActor, RiskConfig
    from levibot.clock import ReplayClock
    from levibot.messages import SetKillSwitch, TradingState
    from levibot.testing import RecordingContext

    ctx = RecordingContext("risk", clock=ReplayClock())
    actor = RiskActor(ctx, RiskConfig(persist=False))
    await actor.on_start()
    await actor.handle(SetKillSwitch(ts_event=5, ts_init=5, command_id="k", on=True))
    await actor.handle(SetKillSwitch(ts_event=6, ts_init=6, command_id="k2", on=True))  # no change
    statuses = ctx.of_type(RiskStatus)
    assert [(m.kill_switch, m.trading_state) for m in statuses] == [
        (False, TradingState.ACTIVE), (True, TradingState.ACTIVE),
    ]  # fmt: skip


@pytest.mark.anyio
async def test_a_held_signal_survives_a_restart(tmp_path: Path) -> None:
    from levibot.actors.risk import RiskActor, RiskConfig
    from levibot.clock import ReplayClock
    from levibot.messages import OrderIntent, PortfolioSnapshot, Signal, SignalSide
    from levibot.testing import RecordingContext

    cfg = RiskConfig(preset="off", state_dir=str(tmp_path), decide_after_portfolio=True)
    t = 1_700_000_000_000_000_000
    snap = PortfolioSnapshot(
        ts_event=t - 1, ts_init=t - 1, cash=10_000.0, equity=10_000.0, realized_pnl=0.0,
        unrealized_pnl=0.0, fees=0.0,
    )  # fmt: skip
    first = RiskActor(RecordingContext("risk", clock=ReplayClock()), cfg)
    await first.on_start()
    await first.handle(snap)
    await first.handle(
        Signal(
            ts_event=t, ts_init=t, symbol="BTCUSDT", strategy="s", side=SignalSide.LONG,
            probability=0.9, confidence=0.8, price=100.0, atr=1.0,
        )
    )  # fmt: skip
    # kill -9 here: no on_stop. A new process loads the state and decides on the snapshot.
    ctx = RecordingContext("risk", clock=ReplayClock())
    second = RiskActor(ctx, cfg)
    await second.on_start()
    await second.handle(msgspec.structs.replace(snap, ts_event=t, ts_init=t))
    assert [m.client_order_id for m in ctx.of_type(OrderIntent)] == ["s-BTCUSDT-" + str(t)]
