"""The risk actor: signals and manual orders in, sized ``OrderIntent``s or coded denials out.

All decisions are ``levibot.risk.RiskEngine``'s (pure, unit-tested); this actor feeds it
messages and the clock, publishes what it decides, and persists its state to
``<state_dir>/risk.json`` (atomic write) after every change that matters, loading it back in
``on_start``: kill switch, trading state, policy, daily counters, cooldowns and the equity peak
survive a restart. The write and its fsync run in a worker thread (the event loop never waits
for the disk), but ``handle`` awaits it: a decision is on disk before the transport acks the
message that caused it, and before the decision itself is published (persist, then publish).
The persisted policy and trading state win over the config's on restart.

Equity and positions come only from the order actor (``PortfolioSnapshot`` and ``Fill``):
there is one portfolio, and it is not here. A drawdown or daily-loss breach publishes a
CRITICAL ``Alert`` and moves trading to HALTED, which persists until an operator's
``SetTradingState``.

Time: ``ctx.clock`` live; in replay the event time of the message being handled (cooldowns,
rate window, UTC day, ``ts_init``), so a replay is repeatable bit for bit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from levibot.config import Config
from levibot.execution.costs import FEE_BPS, QTY_STEP
from levibot.messages import (
    Alert,
    AlertLevel,
    Bar,
    Fill,
    Message,
    OrderClosed,
    OrderDenied,
    OrderIntent,
    PortfolioSnapshot,
    RiskStatus,
    SetKillSwitch,
    SetRiskPolicy,
    SetTradingState,
    Signal,
    SubmitOrder,
    TradingState,
)
from levibot.risk import (
    EXIT_POLICIES,
    Breach,
    RiskEngine,
    RiskLimits,
    RiskState,
    SizingMode,
    SizingParams,
    read_state,
    resolve_limits,
    sane_fill,
)
from levibot.runtime.actor import Actor, Policy, Supervision
from levibot.runtime.outbox import Outbox
from levibot.settings import with_storage
from levibot.storage.state_writer import StateWriter

NonNeg = Annotated[float, Meta(ge=0)]
NonNegInt = Annotated[int, Meta(ge=0)]
Fraction = Annotated[float, Meta(ge=0, le=1)]


class RiskConfig(Config, frozen=True, kw_only=True):
    """The ``[risk]`` section. A limit left unset takes the preset's value; 0 disables it."""

    preset: Literal["safe", "normal", "aggressive", "off"] = "normal"
    min_confidence: Fraction | None = None
    max_orders_per_window: NonNegInt | None = None
    rate_window_s: Annotated[float, Meta(gt=0)] | None = None
    max_order_notional: NonNeg | None = None
    min_order_notional: NonNeg | None = None
    max_position_notional: NonNeg | None = None
    max_exposure_pct: NonNeg | None = None
    max_open_positions: NonNegInt | None = None
    max_trades_per_day: NonNegInt | None = None
    max_daily_loss_pct: Fraction | None = None
    max_drawdown_pct: Fraction | None = None
    cooldown_loss_s: NonNeg | None = None
    cooldown_loss_global_s: NonNeg | None = None
    cooldown_stop_loss_s: NonNeg | None = None
    cooldown_stop_loss_global_s: NonNeg | None = None
    min_time_between_trades_s: NonNeg | None = None
    max_spread_bps: NonNeg | None = None
    max_price_deviation_pct: Fraction | None = None
    # A manual order needs a market price no older than this (clock time); 0: any age.
    max_price_age_s: NonNeg = 0.0
    # sizing
    sizing: SizingMode = "fixed_notional"
    notional: Annotated[float, Meta(gt=0)] = 1_000.0
    equity_fraction: Annotated[float, Meta(gt=0, le=1)] = 1.0
    risk_fraction: Annotated[float, Meta(gt=0, le=1)] = 0.01
    kelly_fraction: Annotated[float, Meta(gt=0, le=1)] = 0.5
    vol_target: Annotated[float, Meta(gt=0)] = 0.02
    max_leverage: Annotated[float, Meta(gt=0)] = 1.0
    # The venue's: None takes [order]'s (levibot.settings.SHARED); outside a node, the defaults.
    fee_bps: NonNeg | None = None
    qty_step: Annotated[float, Meta(gt=0)] | None = None
    # exits
    policy: Literal["conservative", "moderate", "aggressive"] = "moderate"
    atr_exits: bool = True  # False: intents carry no ATR stop-loss / take-profit
    max_hold_s: NonNeg = 0.0
    # state
    initial_equity: Annotated[float, Meta(gt=0)] = 10_000.0  # until the first snapshot
    halt_on_breach: bool = True
    pending_timeout_s: NonNeg = 86_400.0  # forget an approved order unfilled this long; 0: never
    state_dir: str = ""  # empty: <[storage] data_dir>/state
    persist: bool = True
    fsync: bool = True
    # Durable outputs kept with the state and re-published at start (runtime.outbox).
    outbox_max: Annotated[int, Meta(ge=1)] = 64
    # Hold each signal until the order actor's portfolio snapshot of its bar has arrived, so
    # a bar's exits and fills always precede its signals whatever the transport's timing.
    # Needed for bit-for-bit replay split across processes; the order actor must send a
    # snapshot every bar (``[order] snapshot_every_bars = 1``, the default).
    decide_after_portfolio: bool = False

    def limits(self) -> RiskLimits:
        """Return the preset's limits with this section's explicit values applied."""
        overrides = {f: getattr(self, f) for f in RiskLimits.__struct_fields__}
        return resolve_limits(self.preset, overrides)

    def sizing_params(self) -> SizingParams:
        """Return the sizing parameters."""
        return SizingParams(
            mode=self.sizing,
            notional=self.notional,
            equity_fraction=self.equity_fraction,
            risk_fraction=self.risk_fraction,
            kelly_fraction=self.kelly_fraction,
            vol_target=self.vol_target,
            max_leverage=self.max_leverage,
            fee_bps=FEE_BPS if self.fee_bps is None else self.fee_bps,
            qty_step=QTY_STEP if self.qty_step is None else self.qty_step,
        )


RiskIn = (
    Bar
    | Signal
    | Fill
    | OrderClosed
    | PortfolioSnapshot
    | SetKillSwitch
    | SetTradingState
    | SetRiskPolicy
    | SubmitOrder
)


class RiskActor(Actor[RiskConfig]):
    """Run the risk engine on the bus and keep its state on disk."""

    name = "risk"
    consumes = (
        Bar,
        Signal,
        Fill,
        OrderClosed,
        PortfolioSnapshot,
        SetKillSwitch,
        SetTradingState,
        SetRiskPolicy,
        SubmitOrder,
    )
    emits = (OrderIntent, OrderDenied, Alert, RiskStatus)
    config_type = RiskConfig
    tick_interval_s = 5.0  # re-announce RiskStatus for sidecars that joined later
    supervision = Supervision(policy=Policy.CRASH)

    engine: RiskEngine

    @property
    def state_path(self) -> Path:
        """Return the state file's path."""
        config = with_storage(self.config, self.ctx.storage, state_dir="state")
        return Path(config.state_dir) / "risk.json"

    async def on_start(self) -> None:
        """Load the persisted state (a corrupt file refuses to start) and build the engine."""
        cfg = self.config
        self._writer = StateWriter(self.state_path, fsync=cfg.fsync)
        state = read_state(self.state_path, RiskState) if cfg.persist else None
        if state is not None and state.policy not in EXIT_POLICIES:
            state.policy = cfg.policy
        if state is None:
            state = RiskState(
                policy=cfg.policy, cash=cfg.initial_equity, peak_equity=cfg.initial_equity
            )
        self.engine = RiskEngine(
            cfg.limits(),
            cfg.sizing_params(),
            initial_equity=cfg.initial_equity,
            state=state,
            max_hold_s=cfg.max_hold_s,
            halt_on_breach=cfg.halt_on_breach,
            pending_timeout_s=cfg.pending_timeout_s,
            atr_exits=cfg.atr_exits,
            max_price_age_s=cfg.max_price_age_s,
        )
        # With persistence, what handling publishes goes out once its save is on disk.
        self.outbox: Outbox[OrderIntent | OrderDenied | Alert] = Outbox(
            cfg.outbox_max, state.outbox, hold=cfg.persist
        )
        m = self.ctx.metrics
        self._intents = m.counter("levibot_risk_intents_total", "Order intents approved")
        self._register_gauges()
        self._denied: dict[str, Any] = {}
        self._denied_family = m
        self._announced: tuple[object, ...] = ()
        await self._announce(self.ctx.clock.now_ns())
        # Outputs the last process saved but may have died before NATS confirmed.
        resent = await self.outbox.replay(self.ctx.publish)
        self.ctx.log.info(
            "risk.started",
            resent=resent,
            kill_switch=state.kill_switch,
            trading_state=state.trading_state.value,
            policy=state.policy,
            peak_equity=state.peak_equity,
        )

    def _register_gauges(self) -> None:
        """Export the controls and the drawdown, read from the engine at scrape time."""
        m, eng = self.ctx.metrics, self.engine
        m.gauge("levibot_risk_kill_switch", "1 while the kill switch is on",
                fn=lambda: float(eng.state.kill_switch))  # fmt: skip
        for state in TradingState:
            m.gauge(
                "levibot_risk_trading_state", "1 for the current trading state, else 0",
                fn=lambda s=state: float(eng.state.trading_state is s), state=state.value,
            )  # fmt: skip
        m.gauge("levibot_risk_drawdown", "Drawdown from the equity peak (a fraction)",
                fn=lambda: eng.drawdown)  # fmt: skip
        m.gauge("levibot_risk_drawdown_limit", "Drawdown that halts trading (0: no limit)",
                fn=lambda: eng.limits.max_drawdown_pct)  # fmt: skip

    async def handle(self, msg: RiskIn) -> None:
        """Decide, follow the portfolio, or obey a command; persist what changed."""
        clock = self.ctx.clock
        # Replay decides on the message's own event time, so a run does not depend on how far
        # a shared replay clock has been pushed by other actors: bit-for-bit repeatable.
        now = msg.ts_event if clock.is_replay else clock.now_ns()
        eng = self.engine
        match msg:  # the per-bar cases first: every case tried is an isinstance
            case Bar():
                eng.on_bar(msg, now)  # the market price; saved with the next real change
                if not (eng.dirty or self.outbox.unsent):
                    return  # and a bar moves no control: nothing to save, nothing to announce
            case PortfolioSnapshot():
                breaches = eng.on_snapshot(msg, now)
                if breaches is None:
                    self.ctx.log.warning("risk.bad_input", type="PortfolioSnapshot")
                else:
                    if breaches:
                        await self._alert_breaches(breaches, msg, now)
                    if eng.state.held:
                        await self._release_held()
            case Signal() if (
                self.config.decide_after_portfolio and msg.ts_event > eng.state.snapshot_ts
            ):
                eng.state.held.append(msg)
                eng.dirty = True
            case Signal():
                await self._emit(eng.decide_signal(msg, now))
            case SubmitOrder():
                await self._emit(eng.decide_manual(msg, now))
            case Fill() if not sane_fill(msg):
                self.ctx.log.warning("risk.bad_input", type="Fill", fill_id=msg.fill_id)
            case Fill():
                await self._alert_breaches(eng.on_fill(msg, now), msg, now)
            case OrderClosed():
                eng.on_closed(msg)
            case SetKillSwitch():
                eng.set_kill_switch(msg.on)
                self.ctx.log.warning("risk.kill_switch", on=msg.on, by=msg.issued_by)
                level = AlertLevel.CRITICAL if msg.on else AlertLevel.WARNING
                text = f"kill switch {'ON' if msg.on else 'off'} (by {msg.issued_by})"
                await self._alert(msg, now, level, text, "KILL_SWITCH", msg.command_id)
            case SetTradingState():
                eng.set_trading_state(msg.state)
                self.ctx.log.warning("risk.trading_state", state=msg.state.value)
                text = f"trading state {msg.state.value} (by {msg.issued_by})"
                await self._alert(
                    msg, now, AlertLevel.WARNING, text, "TRADING_STATE", msg.command_id
                )
            case SetRiskPolicy():
                if eng.set_policy(msg.policy):
                    self.ctx.log.info("risk.policy", policy=msg.policy)
                else:
                    text = f"unknown risk policy {msg.policy!r}; one of {sorted(EXIT_POLICIES)}"
                    self.ctx.log.warning("risk.bad_policy", policy=msg.policy)
                    await self._alert(
                        msg, now, AlertLevel.WARNING, text, "BAD_POLICY", msg.command_id
                    )
            case _:
                self.ctx.log.warning("risk.unexpected", type=type(msg).__name__)
        if eng.dirty or self.outbox.unsent:  # an output is a change too: the outbox holds it
            await self.save()
            await self.outbox.release(self.ctx.publish)  # persist, then publish
        if self._controls() != self._announced:
            await self._announce(now)

    async def on_tick(self) -> None:
        """Re-announce the status, so a gateway or bot that started later knows it."""
        await self._announce(self.ctx.clock.now_ns())

    def _controls(self) -> tuple[object, ...]:
        s = self.engine.state
        return (s.kill_switch, s.trading_state, s.policy)

    async def _announce(self, now: int) -> None:
        """Publish ``RiskStatus`` (``handle`` does when a control changed).

        At once, even in ``handle`` (after its save): a status is not durable, and the next
        one corrects it.
        """
        s = self.engine.state
        self._announced = self._controls()
        await self.ctx.publish(
            RiskStatus(
                ts_event=now, ts_init=self.ctx.clock.now_ns(), kill_switch=s.kill_switch,
                trading_state=s.trading_state, policy=s.policy, equity=self.engine.equity,
                peak_equity=s.peak_equity, drawdown=self.engine.drawdown,
                day_trades=s.day_trades, day_realized_pnl=s.day_realized,
            )
        )  # fmt: skip

    async def _release_held(self) -> None:
        """Decide the held signals the portfolio has now caught up with, in arrival order."""
        state = self.engine.state
        if not state.held:
            return
        ready = [s for s in state.held if s.ts_event <= state.snapshot_ts]
        state.held = [s for s in state.held if s.ts_event > state.snapshot_ts]
        self.engine.dirty = True
        for signal in ready:
            now = signal.ts_event if self.ctx.clock.is_replay else self.ctx.clock.now_ns()
            await self._emit(self.engine.decide_signal(signal, now))

    async def save(self) -> None:
        """Write the state file when persistence is on; return once it is on disk.

        The state is encoded now, on the loop, so the file holds it as of this call; the
        atomic write and its fsync run in the writer's worker thread.
        """
        self.engine.dirty = False
        if self.config.persist:
            self.engine.state.outbox = self.outbox.to_list()
            await self._writer.save(msgspec.json.encode(self.engine.state))

    async def _publish(self, msg: OrderIntent | OrderDenied | Alert) -> None:
        """Publish a decision, or with persistence hold it until ``handle`` has saved the state
        that made it (``levibot.runtime.outbox``). A save that raised sends nothing: the
        runtime applies the policy to the failed input. A local one (signal, snapshot) crashes
        the node, whose ``on_stop`` saves once more for the next start to re-publish; a durable
        one (fill, command) is redelivered and changes nothing new (a seen fill, a decided order
        id, the same control set again), but its handling saves because outputs are waiting,
        then sends them."""
        if not self.outbox.hold(msg):
            await self.ctx.publish(msg)

    async def on_stop(self) -> None:
        """Write the state one last time (the book marks may have moved)."""
        if hasattr(self, "engine"):
            await self.save()

    async def _emit(self, out: OrderIntent | OrderDenied | None) -> None:
        if out is None:
            return
        if isinstance(out, OrderIntent):
            self._intents.inc()
            self.ctx.log.info(
                "order.intent", coid=out.client_order_id, side=out.side.value, qty=out.quantity
            )
        else:
            counter = self._denied.get(out.code)
            if counter is None:
                counter = self._denied_family.counter(
                    "levibot_risk_denied_total", "Orders denied, by code", code=out.code
                )
                self._denied[out.code] = counter
            counter.inc()
            self.ctx.log.debug("order.denied", coid=out.client_order_id, code=out.code)
        await self._publish(out)

    async def _alert_breaches(self, breaches: list[Breach], cause: Message, now: int) -> None:
        for b in breaches:
            self.ctx.log.error("risk.breach", code=b.code.value, text=b.text)
            await self._alert(
                cause,
                now,
                AlertLevel.CRITICAL,
                f"{b.text}; trading HALTED",
                b.code.value,
                str(cause.ts_event),
            )

    async def _alert(
        self, cause: Message, now: int, level: AlertLevel, text: str, code: str, key: str
    ) -> None:
        await self._publish(
            Alert(
                ts_event=cause.ts_event,
                ts_init=now,
                ts_ingress=cause.ts_ingress,
                alert_id=f"risk-{code}-{key}",
                level=level,
                source="risk",
                text=text,
                code=code,
            )
        )
