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
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from levibot.config import Config
from levibot.execution import (
    ExchangeAdapter,
    Execution,
    MarketView,
    OrderOutput,
    PaperVenue,
    Portfolio,
    PortfolioState,
    bar_exit,
    refusal,
    tick_exit,
)
from levibot.messages import (
    Alert,
    AlertLevel,
    Bar,
    Fill,
    Message,
    OrderAccepted,
    OrderClosed,
    OrderIntent,
    PortfolioSnapshot,
    Quote,
    Side,
    Tick,
)
from levibot.risk import read_state
from levibot.runtime.actor import Actor, Policy, Supervision
from levibot.runtime.outbox import Outbox
from levibot.settings import with_storage
from levibot.storage.state_writer import StateWriter

PosInt = Annotated[int, Meta(ge=1)]
NOTHING_TO_SELL = "nothing to sell"


class OrderConfig(Config, frozen=True, kw_only=True):
    """The ``[order]`` section."""

    venue: Literal["paper"] = "paper"
    cash: Annotated[float, Meta(gt=0)] = 10_000.0
    fee_bps: Annotated[float, Meta(ge=0)] = 10.0
    slippage_bps: Annotated[float, Meta(ge=0)] = 2.0
    fill: Literal["close", "next_open"] = "next_open"
    snapshot_every_bars: PosInt = 1
    snapshot_every_ticks: PosInt = 100
    equity_curve_max: PosInt = 100_000
    seen_ids_max: PosInt = 100_000
    qty_step: Annotated[float, Meta(gt=0)] = 1e-8
    state_dir: str = ""  # empty: <[storage] data_dir>/state
    persist: bool = True
    fsync: bool = True
    # Durable outputs kept with the state and re-published at start (runtime.outbox).
    outbox_max: PosInt = 64


class OrderActor(Actor[OrderConfig]):
    """Execute intents against the venue, run exits, keep and publish the portfolio."""

    name = "order"
    consumes = (OrderIntent, Tick, Bar, Quote)
    emits = (OrderAccepted, Fill, OrderClosed, PortfolioSnapshot, Alert)
    config_type = OrderConfig
    supervision = Supervision(policy=Policy.CRASH)

    portfolio: Portfolio
    venue: ExchangeAdapter

    @property
    def state_path(self) -> Path:
        """Return the portfolio file's path."""
        config = with_storage(self.config, self.ctx.storage, state_dir="state")
        return Path(config.state_dir) / "portfolio.json"

    async def on_start(self) -> None:
        """Load the persisted portfolio (a corrupt file refuses to start) and the venue."""
        cfg = self.config
        self._writer = StateWriter(self.state_path, fsync=cfg.fsync)
        state = read_state(self.state_path, PortfolioState) if cfg.persist else None
        self.portfolio = Portfolio(
            cfg.cash,
            curve_max=cfg.equity_curve_max,
            seen_max=cfg.seen_ids_max,
            qty_step=cfg.qty_step,
            state=state,
        )
        self.venue = PaperVenue(fee_bps=cfg.fee_bps, slippage_bps=cfg.slippage_bps, fill=cfg.fill)
        if state is not None:
            self.venue.restore(state.pending)
        self.outbox: Outbox[OrderOutput] = Outbox(cfg.outbox_max, state.outbox if state else ())
        self.market: dict[str, MarketView] = {}
        self._bars = self._ticks = 0
        self._now = 0
        m = self.ctx.metrics
        self._fills = m.counter("levibot_order_fills_total", "Fills executed")
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
            ts = state.curve[-1][0]
            await self._publish(self.portfolio.snapshot(ts, ts, 0))
        # Outputs the last process saved but may have died before NATS confirmed.
        resent = await self.outbox.replay(self.ctx.publish)
        self.ctx.log.info(
            "order.started",
            resent=resent,
            cash=self.portfolio.state.cash,
            equity=self.portfolio.equity,
            positions=len(self.portfolio.state.holdings),
            pending=len(self.venue.pending()),
        )

    async def handle(self, msg: OrderIntent | Tick | Bar | Quote) -> None:
        """Take an intent, or move the market: fill pending orders, run exits, mark."""
        clock = self.ctx.clock
        # Replay stamps with the message's own event time: repeatable whatever the clock saw.
        self._now = msg.ts_event if clock.is_replay else clock.now_ns()
        match msg:
            case OrderIntent():
                await self._on_intent(msg)
            case Tick():
                await self._on_market(msg, msg.price, msg.ts_event, "tick")
            case Bar():
                await self._on_market(msg, msg.close, msg.ts_event, "bar")
            case Quote():
                mid = (msg.bid + msg.ask) / 2.0
                self.portfolio.mark(msg.symbol, mid)
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
            await self._reject(intent, now, f"bad quantity {qty!r} or price {px!r}")
            await self.save()
            return
        await self._publish(
            OrderAccepted(
                ts_event=intent.ts_event,
                ts_init=now,
                ts_ingress=intent.ts_ingress,
                symbol=intent.symbol,
                client_order_id=intent.client_order_id,
                side=intent.side,
                quantity=intent.quantity,
            )
        )
        view = self.market.get(intent.symbol) or MarketView()
        filled = await self._execute(self.venue.submit(intent, view), intent)
        if filled:
            await self._snapshot(intent)
        await self.save()

    async def _on_market(self, msg: Tick | Bar, last: float, ts: int, kind: str) -> None:
        if not (math.isfinite(last) and last > 0):
            self.ctx.log.warning("order.bad_price", symbol=msg.symbol, price=last)
            return
        view = self.market.setdefault(msg.symbol, MarketView())
        view.kind, view.last_price = kind, last
        if isinstance(msg, Bar):
            view.last_bar = msg
        filled = await self._execute(self.venue.on_market(msg), msg)
        holding = self.portfolio.state.holdings.get(msg.symbol)
        if holding is not None:
            hit = bar_exit(holding, msg) if isinstance(msg, Bar) else tick_exit(holding, last, ts)
            if hit is not None:
                filled |= await self._exit(holding.entry_order_id, msg, hit[0], hit[1])
        self.portfolio.mark(msg.symbol, last)
        due = False
        if isinstance(msg, Bar):
            self._bars += 1
            self.portfolio.record(ts)
            due = self._bars % self.config.snapshot_every_bars == 0
        else:
            self._ticks += 1
            due = self._ticks % self.config.snapshot_every_ticks == 0
            if due:
                self.portfolio.record(ts)
        if filled or due:
            await self._snapshot(msg)
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
        done = await self._execute(self.venue.exit(intent, raw, cause.ts_event), cause)
        if done:
            self.ctx.log.info("order.exit", symbol=cause.symbol, reason=reason, price=raw)
        return done

    async def _execute(self, executions: list[Execution], cause: Message) -> bool:
        """Apply executions to the portfolio and publish their fills; return True if any."""
        any_filled = False
        for ex in executions:
            i = ex.intent
            now = self._now
            why = refusal(i, ex.price)
            if why is not None:
                await self._reject(i, now, why)
                continue
            applied = self.portfolio.apply(
                i.symbol, i.side, i.quantity, ex.price, self.venue.fee_rate, ex.ts, intent=i
            )
            if applied is None:
                await self._reject(
                    i, now, "no cash to buy" if i.side is Side.BUY else NOTHING_TO_SELL
                )
                continue
            any_filled = True
            self._fills.inc()
            reason = i.reason if i.reason != "exit" else "signal"
            await self._publish(
                Fill(
                    ts_event=ex.ts,
                    ts_init=now,
                    ts_ingress=i.ts_ingress,
                    symbol=i.symbol,
                    fill_id=f"{i.client_order_id}:f1",
                    client_order_id=i.client_order_id,
                    side=i.side,
                    quantity=applied.quantity,
                    price=applied.price,
                    fee=applied.fee,
                    realized_pnl=applied.realized_pnl,
                    reason=reason,
                    position_after=applied.position_after,
                )
            )
            if i.reason in ("stop_loss", "take_profit", "time_exit"):
                entry_id = i.client_order_id.rsplit(":", 1)[0]
                await self._publish(
                    OrderClosed(
                        ts_event=ex.ts,
                        ts_init=now,
                        ts_ingress=i.ts_ingress,
                        symbol=i.symbol,
                        client_order_id=entry_id,
                        reason=i.reason,
                        exit_price=applied.price,
                        realized_pnl=applied.realized_pnl,
                    )
                )
            self.portfolio.record(ex.ts)
        return any_filled

    async def _reject(self, intent: OrderIntent, now: int, why: str) -> None:
        # A reduce-only order that finds the position already gone (an exit rule closed it
        # first) is routine, not an alert: the order is closed and the risk engine told.
        routine = intent.reduce_only and intent.side is Side.SELL and why == NOTHING_TO_SELL
        log = self.ctx.log.info if routine else self.ctx.log.warning
        log("order.rejected", coid=intent.client_order_id, why=why)
        await self._publish(
            OrderClosed(
                ts_event=intent.ts_event,
                ts_init=now,
                ts_ingress=intent.ts_ingress,
                symbol=intent.symbol,
                client_order_id=intent.client_order_id,
                reason="rejected",
                exit_price=0.0,
                realized_pnl=0.0,
            )
        )
        if routine:
            return
        await self._publish(
            Alert(
                ts_event=intent.ts_event,
                ts_init=now,
                ts_ingress=intent.ts_ingress,
                alert_id=f"order-rejected-{intent.client_order_id}",
                level=AlertLevel.WARNING,
                source="order",
                text=f"order {intent.client_order_id} rejected: {why}",
                code="ORDER_REJECTED",
            )
        )

    async def _snapshot(self, cause: Message) -> None:
        snap: PortfolioSnapshot = self.portfolio.snapshot(
            cause.ts_event, self._now, cause.ts_ingress
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
            await self._writer.save(msgspec.json.encode(state))

    async def _publish(self, msg: Message) -> None:
        self.outbox.record(msg)  # type: ignore[arg-type]  # only durable ones are kept
        await self.ctx.publish(msg)

    async def on_stop(self) -> None:
        """Persist the portfolio one last time (marks and the equity curve moved since)."""
        if hasattr(self, "portfolio"):
            await self.save()
