"""The order actor: executes ``OrderIntent``s (paper by default) and keeps THE portfolio.

- Idempotent: an intent whose client order id was seen before is dropped, never filled twice;
  the seen ids are persisted with the portfolio, so a restart does not refill either.
- Fill ids are ``f"{client_order_id}:f1"`` (paper fills an order in one execution); an exit
  rule's order id is ``f"{entry_order_id}:{reason}"``.
- Publishes ``OrderAccepted`` then ``Fill``; ``OrderClosed`` for exits (reason ``stop_loss``,
  ``take_profit``, ``time_exit``, keyed by the entry's order id) and for an accepted order the
  portfolio could not execute (reason ``rejected``: no cash, or nothing to sell; an ``Alert``
  too, except for a reduce-only sell that found the position already closed by an exit); a
  ``PortfolioSnapshot`` after every message that filled and every ``snapshot_every_bars`` bars /
  ``snapshot_every_ticks`` ticks. The equity curve gets a point per bar and per fill.
- Portfolio, pending orders and seen ids go to ``<state_dir>/portfolio.json`` (atomic write)
  after every message that accepted or filled an order, and in ``on_stop``. The write and its
  fsync run in a worker thread (the event loop never waits for the disk), but ``handle``
  awaits it: the state a message produced is on disk before the transport acks that message.
- Quotes only mark positions (at the mid); they fill nothing.
- ``CancelOrder`` cancels an open order (a paper order waiting for its bar, or one resting at
  the venue): ``OrderClosed`` reason ``canceled``; an unknown id gets an ``Alert``. The kill
  switch (``RiskStatus.kill_switch`` turning on) cancels every open order.

Live venue (``venue = "binance"``, see ``levibot.execution.binance``): the orders open there
are the ``LiveDesk``'s (``levibot.actors.order_desk``); exits are market sells, and a resting
order older than ``order_timeout_s`` is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from levibot.actors.order_desk import LiveDesk
from levibot.actors.order_outputs import EXIT_REASONS, NOTHING_TO_SELL, OrderOutputs
from levibot.config import Config
from levibot.execution import (
    ExchangeAdapter,
    Execution,
    MarketView,
    OrderOutput,
    PaperVenue,
    Portfolio,
    bar_exit,
    refusal,
    tick_exit,
)
from levibot.execution.binance import BinanceConfig, BinanceVenue, credentials, is_live
from levibot.execution.costs import FEE_BPS, QTY_STEP
from levibot.execution.orders import OrderState, VenueOrder
from levibot.messages import (
    Alert,
    AlertLevel,
    Bar,
    CancelOrder,
    Fill,
    Message,
    OrderAccepted,
    OrderClosed,
    OrderIntent,
    PortfolioSnapshot,
    Quote,
    RiskStatus,
    Side,
    Tick,
)
from levibot.risk import read_state
from levibot.runtime.actor import Actor, ActorContext, Policy, Supervision
from levibot.runtime.outbox import Outbox
from levibot.settings import with_storage
from levibot.storage.state_writer import StateWriter

__all__ = ["NOTHING_TO_SELL", "OrderActor", "OrderConfig"]

PosInt = Annotated[int, Meta(ge=1)]


class OrderConfig(Config, frozen=True, kw_only=True):
    """The ``[order]`` section."""

    venue: Literal["paper", "binance"] = "paper"
    # Trading on the real exchange (a binance base_url other than the testnet) needs this too.
    live: bool = False
    binance: BinanceConfig = BinanceConfig()
    # A live order still resting this long is cancelled; 0: never.
    order_timeout_s: Annotated[float, Meta(ge=0)] = 0.0
    cash: Annotated[float, Meta(gt=0)] = 10_000.0
    # The venue's fee and quantity step; [risk] sizes with these too (levibot.settings.SHARED).
    fee_bps: Annotated[float, Meta(ge=0)] = FEE_BPS
    slippage_bps: Annotated[float, Meta(ge=0)] = 2.0
    fill: Literal["close", "next_open"] = "next_open"
    snapshot_every_bars: PosInt = 1
    snapshot_every_ticks: PosInt = 100
    equity_curve_max: PosInt = 100_000
    seen_ids_max: PosInt = 100_000
    qty_step: Annotated[float, Meta(gt=0)] = QTY_STEP
    state_dir: str = ""  # empty: <[storage] data_dir>/state
    persist: bool = True
    fsync: bool = True
    # Durable outputs kept with the state and re-published at start (runtime.outbox).
    outbox_max: PosInt = 64

    def __post_init__(self) -> None:
        if self.venue == "binance" and is_live(self.binance.base_url) and not self.live:
            raise ValueError(
                f"binance base_url {self.binance.base_url!r} is the live exchange: "
                "set [order] live = true to trade real money, or use the testnet URL"
            )


class OrderActor(Actor[OrderConfig]):
    """Execute intents against the venue, run exits, keep and publish the portfolio."""

    name = "order"
    consumes = (OrderIntent, Tick, Bar, Quote, CancelOrder, RiskStatus)
    emits = (OrderAccepted, Fill, OrderClosed, PortfolioSnapshot, Alert)
    config_type = OrderConfig
    supervision = Supervision(policy=Policy.CRASH)
    tick_interval_s = 1.0  # live venue: order timeouts

    portfolio: Portfolio
    venue: ExchangeAdapter
    desk: LiveDesk | None = None

    @property
    def state_path(self) -> Path:
        """Return the portfolio file's path."""
        config = with_storage(self.config, self.ctx.storage, state_dir="state")
        return Path(config.state_dir) / "portfolio.json"

    @property
    def live(self) -> BinanceVenue | None:
        """Return the live venue (None: paper)."""
        return self.desk.venue if self.desk is not None else None

    def __init__(self, ctx: ActorContext, config: OrderConfig) -> None:
        super().__init__(ctx, config)
        if config.venue != "binance" and not config.persist:
            # A replay, a backtest or unsaved paper trading: no venue stream or timer takes
            # turns with ``handle`` and nothing is saved, so a message goes straight to its case
            # (a coroutine less per message of every backtest). Chosen here, not in
            # ``on_start``: the tracer wraps whatever ``handle`` is once the actor is built.
            self.handle = self._dispatch  # type: ignore[method-assign]

    async def on_start(self) -> None:
        """Load the persisted portfolio (a corrupt file refuses to start) and the venue."""
        cfg = self.config
        self._writer = StateWriter(self.state_path, fsync=cfg.fsync)
        state = read_state(self.state_path, OrderState) if cfg.persist else None
        self.portfolio = Portfolio(
            cfg.cash,
            curve_max=cfg.equity_curve_max,
            seen_max=cfg.seen_ids_max,
            qty_step=cfg.qty_step,
            state=state or OrderState(initial_cash=cfg.cash, cash=cfg.cash),
        )
        self.venue = PaperVenue(fee_bps=cfg.fee_bps, slippage_bps=cfg.slippage_bps, fill=cfg.fill)
        if state is not None:
            self.venue.restore(state.pending)
        # The orders open at the live venue, by venue id (saved with the portfolio).
        self.orders: dict[str, VenueOrder] = (
            {o.venue_id: o for o in state.venue_orders} if (state is not None) else {}
        )
        self.outbox: Outbox[OrderOutput] = Outbox(
            cfg.outbox_max, state.outbox if state else (), hold=cfg.persist
        )
        self.market: dict[str, MarketView] = {}
        self._bars = self._ticks = 0
        self._now = 0
        self._lock = asyncio.Lock()  # handle, the user stream and timers take turns
        self._kill = False
        m = self.ctx.metrics
        fills = m.counter("levibot_order_fills_total", "Fills executed")
        # Persist, then publish (``levibot.runtime.outbox``). With nothing saved the outbox
        # would hold nothing and record what is never read back: publish straight away.
        self._publish = self._hold_or_publish if cfg.persist else self.ctx.publish
        self.out = OrderOutputs(self._publish, log=self.ctx.log, fills=fills)
        self._dupes = m.counter("levibot_order_duplicates_total", "Duplicate intents dropped")
        m.gauge("levibot_portfolio_equity", "Portfolio equity", fn=lambda: self.portfolio.equity)
        m.gauge(
            "levibot_portfolio_open_positions",
            "Symbols with an open position",
            fn=lambda: len(self.portfolio.state.holdings),
        )
        m.gauge(
            "levibot_portfolio_exposure",
            "Gross notional of the open positions at their last prices",
            fn=lambda: self.portfolio.exposure,
        )
        if state is not None and state.curve:
            # A restarted process tells risk the portfolio it restored: a fill whose message
            # died with the previous process (persisted here, never published) is then known.
            ts = state.curve[-1][0]  # (a state already on disk: nothing to hold it for)
            await self.ctx.publish(self.portfolio.snapshot(ts, ts, 0))
        # Outputs the last process saved but may have died before NATS confirmed.
        resent = await self.outbox.replay(self.ctx.publish)
        if cfg.venue == "binance":
            await self._start_live()
        self.ctx.log.info(
            "order.started",
            venue=cfg.venue,
            resent=resent,
            cash=self.portfolio.state.cash,
            equity=self.portfolio.equity,
            positions=len(self.portfolio.state.holdings),
            pending=len(self.venue.pending()) + len(self.orders),
        )

    async def _start_live(self) -> None:
        """Connect to the venue and reconcile before the first intent (see the desk's doc)."""
        cfg = self.config.binance
        key, secret = credentials(cfg)
        venue = BinanceVenue(cfg, key, secret, log=self.ctx.log)
        await venue.start()
        self.desk = LiveDesk(
            venue,
            self.portfolio,
            self.orders,
            self.out,
            market=self.market,
            now=lambda: self._now,
            save=self.save,
            snapshot=self._snapshot_now,
            log=self.ctx.log,
        )
        self._connected = asyncio.Event()
        self._stream = asyncio.create_task(venue.run_stream(self._on_stream, self._on_connect))
        try:
            await asyncio.wait_for(self._connected.wait(), cfg.timeout_s)
        except TimeoutError:
            # No stream yet (it keeps trying): reconcile by REST now, again once it connects.
            self.ctx.log.warning("order.stream_not_connected", after_s=cfg.timeout_s)
            async with self._turn():
                await self.desk.reconcile("start")

    async def handle(
        self, msg: OrderIntent | Tick | Bar | Quote | CancelOrder | RiskStatus
    ) -> None:
        """Take an intent, or move the market: fill pending orders, run exits, mark."""
        async with self._turn():
            await self._dispatch(msg)

    @contextlib.asynccontextmanager
    async def _turn(self) -> AsyncIterator[None]:
        """One turn at the state: handle, the live venue's stream and the timers take turns, and
        what a turn publishes goes out once the state it changed is saved (persist, then
        publish: ``levibot.runtime.outbox``). Every turn that fills or closes something saves.

        A turn that raised (its save failed: a full disk) publishes nothing: what it held stays
        in the outbox and goes out after the next turn, which saves first.
        """
        async with self._lock:
            left_over = bool(self.outbox.unsent)
            yield
            if left_over:  # this turn may have saved nothing: the failed turn's outputs must be
                await self.save()
            await self.outbox.release(self.ctx.publish)

    async def _dispatch(
        self, msg: OrderIntent | Tick | Bar | Quote | CancelOrder | RiskStatus
    ) -> None:
        clock = self.ctx.clock
        # Replay stamps with the message's own event time: repeatable whatever the clock saw.
        self._now = msg.ts_event if clock.is_replay else clock.now_ns()
        match msg:  # market data first: every case tried is an isinstance
            case Bar():
                await self._on_market(msg, msg.close, msg.ts_event, "bar")
            case Tick():
                await self._on_market(msg, msg.price, msg.ts_event, "tick")
            case OrderIntent():
                await self._on_intent(msg)
            case Quote():
                mid = (msg.bid + msg.ask) / 2.0
                self.portfolio.mark(msg.symbol, mid)
            case CancelOrder():
                await self._on_cancel(msg)
            case RiskStatus():
                if msg.kill_switch and not self._kill:
                    await self._cancel_all("kill switch")
                self._kill = msg.kill_switch
            case _:
                self.ctx.log.warning("order.unexpected", type=type(msg).__name__)

    async def _on_intent(self, intent: OrderIntent) -> None:
        p = self.portfolio
        if p.seen(intent.client_order_id):
            self._dupes.inc()
            self.ctx.log.info("order.duplicate", coid=intent.client_order_id)
            return
        p.remember(intent.client_order_id)
        now = self._now
        qty, px = intent.quantity, intent.price
        if not (qty > 0 and math.isfinite(qty) and px > 0 and math.isfinite(px)) or not (
            intent.symbol
        ):
            await self.out.rejected(intent, now, f"bad quantity {qty!r} or price {px!r}")
            await self.save()
            return
        if self.desk is not None:
            if await self.desk.send(intent):
                await self._snapshot(intent)
            await self.save()
            return
        await self.out.accepted(intent, now)
        view = self.market.get(intent.symbol) or MarketView()
        filled = await self._execute(self.venue.submit(intent, view))
        if filled:
            await self._snapshot(intent)
        await self.save()

    async def _on_market(self, msg: Tick | Bar, last: float, ts: int, kind: str) -> None:
        if not (math.isfinite(last) and last > 0):
            self.ctx.log.warning("order.bad_price", symbol=msg.symbol, price=last)
            return
        bar = msg if isinstance(msg, Bar) else None
        view = self.market.get(msg.symbol)
        if view is None:  # not setdefault: it would build a view per message (the hot path)
            view = self.market[msg.symbol] = MarketView()
        view.kind, view.last_price = kind, last
        if bar is not None:
            view.last_bar = bar
        executions = self.venue.on_market(msg)
        filled = await self._execute(executions) if executions else False
        if self.desk is not None:
            self.desk.venue.mark(msg.symbol, last)
            filled |= await self.desk.expire(self.config.order_timeout_s)
        holding = self.portfolio.state.holdings.get(msg.symbol)
        if holding is not None:
            hit = bar_exit(holding, bar) if bar is not None else tick_exit(holding, last, ts)
            if hit is not None:
                filled |= await self._exit(holding.entry_order_id, msg, hit[0], hit[1])
            self.portfolio.mark(msg.symbol, last)
        due, equity = False, None
        if bar is not None:
            self._bars += 1
            equity = self.portfolio.record(ts)
            due = self._bars % self.config.snapshot_every_bars == 0
        else:
            self._ticks += 1
            due = self._ticks % self.config.snapshot_every_ticks == 0
            if due:
                equity = self.portfolio.record(ts)
        if filled or due:  # ``_snapshot`` written out: a coroutine less per bar
            await self._publish(self.portfolio.snapshot(ts, self._now, msg.ts_ingress, equity))
        if filled:
            await self.save()

    async def _exit(self, entry_id: str, cause: Tick | Bar, reason: str, raw: float) -> bool:
        holding = self.portfolio.state.holdings[cause.symbol]
        intent = OrderIntent(
            ts_event=cause.ts_event,
            ts_init=self._now,
            ts_ingress=cause.ts_ingress,
            symbol=cause.symbol,
            client_order_id=f"{entry_id}:{reason}",
            strategy="exit",
            side=Side.SELL,
            quantity=holding.quantity,
            price=raw,
            reduce_only=True,
            reason=reason,
        )
        if self.desk is not None:
            # One exit order per entry and rule: a refused one (dust below the venue's
            # minimum) is not resent every bar.
            if self.portfolio.seen(intent.client_order_id):
                return False
            self.portfolio.remember(intent.client_order_id)
            done = await self.desk.send(intent)
        else:
            done = await self._execute(self.venue.exit(intent, raw, cause.ts_event))
        if done:
            self.ctx.log.info("order.exit", symbol=cause.symbol, reason=reason, price=raw)
        return done

    async def _execute(self, executions: list[Execution]) -> bool:
        """Apply paper executions to the portfolio and publish their fills; True if any."""
        any_filled = False
        for ex in executions:
            i = ex.intent
            now = self._now
            why = refusal(i, ex.price)
            if why is not None:
                await self.out.rejected(i, now, why)
                continue
            applied = self.portfolio.apply(
                i.symbol, i.side, i.quantity, ex.price, self.venue.fee_rate, ex.ts, intent=i
            )
            if applied is None:
                why = "no cash to buy" if i.side is Side.BUY else NOTHING_TO_SELL
                await self.out.rejected(i, now, why)
                continue
            any_filled = True
            fill_id = f"{i.client_order_id}:f1"
            await self.out.fill(i, applied, fill_id=fill_id, side=i.side, ts=ex.ts, now=now)
            if i.reason in EXIT_REASONS:
                await self.out.exited(i, exit_price=applied.price, realized=applied.realized_pnl,
                                      ts=ex.ts, now=now)  # fmt: skip
            self.portfolio.record(ex.ts)
        return any_filled

    # ---- the live venue's own events, cancels and timers ----------------------------------
    def _stamp(self) -> None:
        """Time for what the venue sends on its own (stream, timers): the clock, or in replay
        the last message's event time."""
        if not self.ctx.clock.is_replay:
            self._now = self.ctx.clock.now_ns()

    async def _on_stream(self, events: list) -> None:  # type: ignore[type-arg]
        assert self.desk is not None
        async with self._turn():
            self._stamp()
            if await self.desk.apply(events):
                await self._snapshot_now()
            await self.save()

    async def _on_connect(self) -> None:
        assert self.desk is not None
        async with self._turn():
            self._stamp()
            await self.desk.reconcile("start" if self.desk.reconciles == 0 else "reconnect")
        self._connected.set()

    async def _on_cancel(self, cmd: CancelOrder) -> None:
        coid = cmd.client_order_id
        vo = self.desk.find(coid, cmd.symbol) if self.desk is not None else None
        if vo is not None and self.desk is not None:
            self.ctx.log.info("order.cancel", coid=coid, by=cmd.issued_by)
            if await self.desk.cancel(vo):
                await self._snapshot_now()
            await self.save()
            return
        paper = self.venue.cancel(coid) if isinstance(self.venue, PaperVenue) else None
        if paper is not None and (not cmd.symbol or cmd.symbol == paper.symbol):
            self.ctx.log.info("order.cancel", coid=coid, by=cmd.issued_by)
            await self.out.closed(paper, "canceled", realized=0.0, now=self._now)
            await self.save()
            return
        if paper is not None:  # the wrong symbol: put it back
            self.venue.restore([paper])
        self.ctx.log.warning("order.cancel_unknown", coid=coid, symbol=cmd.symbol)
        await self.out.alert(
            f"order-cancel-unknown-{cmd.command_id}",
            f"cancel {coid}: no open order with that id"
            + (f" for {cmd.symbol}" if cmd.symbol else ""),
            code="CANCEL_UNKNOWN",
            ts=cmd.ts_event,
            now=self._now,
            level=AlertLevel.INFO,
        )

    async def _cancel_all(self, why: str) -> None:
        """Cancel every open order, live and paper (the kill switch)."""
        self.ctx.log.warning("order.cancel_all", why=why, open=len(self.orders))
        filled = await self.desk.cancel_all() if self.desk is not None else False
        if isinstance(self.venue, PaperVenue):
            for intent in self.venue.pending():
                self.venue.cancel(intent.client_order_id)
                await self.out.closed(intent, "canceled", realized=0.0, now=self._now, why=why)
        if filled:
            await self._snapshot_now()
        await self.save()

    async def on_tick(self) -> None:
        """Cancel timed-out live orders (the clock moves even when the market is quiet)."""
        if self.desk is None or self.ctx.clock.is_replay or not self.orders:
            return
        async with self._turn():
            self._stamp()
            if await self.desk.expire(self.config.order_timeout_s):
                await self._snapshot_now()
            await self.save()

    # ---- state and snapshots -------------------------------------------------------------
    async def _snapshot_now(self) -> None:
        await self._publish(self.portfolio.snapshot(self._now, self._now, 0))

    async def _snapshot(self, cause: Message, equity: float | None = None) -> None:
        snap: PortfolioSnapshot = self.portfolio.snapshot(
            cause.ts_event, self._now, cause.ts_ingress, equity
        )
        await self._publish(snap)

    async def save(self) -> None:
        """Write the portfolio, pending orders and seen ids; return once they are on disk.

        The state is encoded now, on the loop, so the file holds it as of this call; the
        atomic write and its fsync run in the writer's worker thread.
        """
        if self.config.persist:
            state = self.portfolio.to_state(self.venue.pending())
            state.outbox = self.outbox.to_list()
            if isinstance(state, OrderState):
                state.venue_orders = list(self.orders.values())
            await self._writer.save(msgspec.json.encode(state))

    async def _hold_or_publish(self, msg: Message) -> None:
        if not self.outbox.hold(msg):  # held: out at the turn's end, after its save (``_turn``)
            await self.ctx.publish(msg)

    async def on_stop(self) -> None:
        """Persist the portfolio one last time (marks and the equity curve moved since)."""
        if self.desk is not None:
            self._stream.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):  # stopping anyway
                await self._stream
            await self.desk.venue.close()
        if hasattr(self, "portfolio"):
            await self.save()
