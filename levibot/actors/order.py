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

Live venue (``venue = "binance"``, see ``levibot.execution.binance``): an intent is sent as a
market order (a limit order when it has a ``limit_price``); ``OrderAccepted`` when the venue
takes it, a ``Fill`` per venue trade (``fill_id`` ``f"{client_order_id}:f{n}"``, n counting the
order's trades, so one full fill is ``:f1`` as on paper), the fee the venue charged, converted
to the quote asset. Trades come from the order's answer (a market order's fills come with it)
and from the user-data stream (a resting order's); a trade reported by both counts once.
The orders open at the venue are persisted with the portfolio, written before each is sent.
At start and after every reconnect of the user stream, the venue's open orders, the trades
of ours and the balances are reconciled: the venue's truth is adopted (a missed trade
applied, an order closed meanwhile closed, an unknown open order adopted, a balance that
differs taken as a transfer), and each difference is logged and alerted. A resting order older
than ``order_timeout_s`` is cancelled. Exits are market sells.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
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
    bar_exit,
    refusal,
    tick_exit,
)
from levibot.execution.binance import (
    BinanceConfig,
    BinanceVenue,
    Ended,
    Placed,
    Refused,
    Traded,
    VenueEvent,
    credentials,
    is_live,
    venue_order_id,
)
from levibot.execution.costs import FEE_BPS, QTY_STEP
from levibot.execution.orders import OrderState, VenueOrder
from levibot.execution.portfolio import Holding
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
from levibot.runtime.actor import Actor, Policy, Supervision
from levibot.runtime.outbox import Outbox
from levibot.settings import with_storage
from levibot.storage.state_writer import StateWriter

PosInt = Annotated[int, Meta(ge=1)]
NOTHING_TO_SELL = "nothing to sell"


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
    live: BinanceVenue | None = None

    @property
    def state_path(self) -> Path:
        """Return the portfolio file's path."""
        config = with_storage(self.config, self.ctx.storage, state_dir="state")
        return Path(config.state_dir) / "portfolio.json"

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
        self.outbox: Outbox[OrderOutput] = Outbox(cfg.outbox_max, state.outbox if state else ())
        self.market: dict[str, MarketView] = {}
        self._bars = self._ticks = 0
        self._now = 0
        self._lock = asyncio.Lock()  # handle, the user stream and timers take turns
        self._kill = False
        self._reconciles = 0
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
        """Connect to the venue and reconcile before the first intent (see the module doc)."""
        cfg = self.config.binance
        key, secret = credentials(cfg)
        self.live = BinanceVenue(cfg, key, secret, log=self.ctx.log)
        await self.live.start()
        self._connected = asyncio.Event()
        self._stream = asyncio.create_task(self.live.run_stream(self._on_stream, self._on_connect))
        try:
            await asyncio.wait_for(self._connected.wait(), cfg.timeout_s)
        except TimeoutError:
            # No stream yet (it keeps trying): reconcile by REST now, again once it connects.
            self.ctx.log.warning("order.stream_not_connected", after_s=cfg.timeout_s)
            async with self._lock:
                await self._reconcile("start")

    async def handle(
        self, msg: OrderIntent | Tick | Bar | Quote | CancelOrder | RiskStatus
    ) -> None:
        """Take an intent, or move the market: fill pending orders, run exits, mark."""
        clock = self.ctx.clock
        async with self._lock:
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
                case CancelOrder():
                    await self._on_cancel(msg)
                case RiskStatus():
                    if msg.kill_switch and not self._kill:
                        await self._cancel_all(msg, "kill switch")
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
            await self._reject(intent, now, f"bad quantity {qty!r} or price {px!r}")
            await self.save()
            return
        if self.live is None:
            await self._accepted(intent)
        if self.live is not None:
            if await self._send(intent):
                await self._snapshot(intent)
            await self.save()
            return
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
        if self.live is not None:
            self.live.mark(msg.symbol, last)
            filled |= await self._expire(msg)
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
        if self.live is not None:
            # One exit order per entry and rule: a refused one (dust below the venue's
            # minimum) is not resent every bar.
            if self.portfolio.seen(intent.client_order_id):
                return False
            self.portfolio.remember(intent.client_order_id)
            done = await self._send(intent)
        else:
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

    # ---- the live venue --------------------------------------------------------------------
    async def _accepted(self, intent: OrderIntent) -> None:
        await self._publish(
            OrderAccepted(
                ts_event=intent.ts_event,
                ts_init=self._now,
                ts_ingress=intent.ts_ingress,
                symbol=intent.symbol,
                client_order_id=intent.client_order_id,
                side=intent.side,
                quantity=intent.quantity,
            )
        )

    async def _send(self, intent: OrderIntent) -> bool:
        """Send ``intent`` to the live venue and apply its answer; return True if it filled."""
        assert self.live is not None
        vid = venue_order_id(intent.client_order_id)
        self.orders[vid] = VenueOrder(
            intent=intent, venue_id=vid, status="SENT", placed_ns=self._now
        )
        # Written before it is sent: a crash in between finds the order at the next start.
        await self.save()
        try:
            events = await self.live.submit(intent, vid)
        except Exception as exc:
            # No answer (timeout, rate limit outlasted): the order may or may not be at the
            # venue. It stays open here; the next reconciliation asks the venue.
            self.ctx.log.warning("order.send_failed", coid=intent.client_order_id, error=str(exc))
            return False
        return await self._apply(events)

    async def _apply(self, events: list[VenueEvent]) -> bool:
        """Apply the venue's events to the open orders and the portfolio; True if any filled."""
        filled = False
        for ev in events:
            vo = self.orders.get(ev.venue_id)
            if vo is None:
                # Not ours, or closed already: reconciliation adopts what is really open.
                self.ctx.log.info("order.venue_event_unknown", kind=type(ev).__name__,
                                  venue_id=ev.venue_id)  # fmt: skip
                continue
            match ev:
                case Placed():
                    vo.order_id = vo.order_id or ev.order_id
                    if vo.status == "SENT":
                        await self._accepted(vo.intent)
                    vo.status = ev.status if vo.status != "FILLED" else vo.status
                case Traded():
                    filled |= await self._traded(vo, ev)
                case Ended():
                    await self._closed(vo, ev.status.lower(), ev.why)
                case Refused():
                    del self.orders[vo.venue_id]
                    await self._reject(vo.intent, self._now, f"venue refused: {ev.why}")
        return filled

    async def _traded(self, vo: VenueOrder, ev: Traded) -> bool:
        if ev.trade_id in vo.trades:
            return False  # reported twice: REST answer, stream, reconciliation
        vo.trades.append(ev.trade_id)
        i = vo.intent
        gross = ev.quantity * ev.price
        fee_rate = ev.fee / gross if gross > 0 else 0.0
        applied = self.portfolio.apply(
            i.symbol, ev.side, ev.quantity, ev.price, fee_rate, self._now, intent=i
        )
        if applied is None:
            self.ctx.log.warning("order.venue_trade_unapplied", coid=i.client_order_id,
                                 trade=ev.trade_id, quantity=ev.quantity)  # fmt: skip
            return False
        vo.executed += applied.quantity
        vo.realized += applied.realized_pnl
        self._fills.inc()
        await self._publish(
            Fill(
                ts_event=self._now,
                ts_init=self._now,
                ts_ingress=i.ts_ingress,
                symbol=i.symbol,
                fill_id=f"{i.client_order_id}:f{len(vo.trades)}",
                client_order_id=i.client_order_id,
                side=ev.side,
                quantity=applied.quantity,
                price=applied.price,
                fee=applied.fee,
                realized_pnl=applied.realized_pnl,
                reason=i.reason if i.reason != "exit" else "signal",
                position_after=applied.position_after,
            )
        )
        self.portfolio.record(self._now)
        if ev.done:
            vo.status = "FILLED"
            del self.orders[vo.venue_id]
            if i.reason in ("stop_loss", "take_profit", "time_exit"):
                await self._publish(
                    OrderClosed(
                        ts_event=self._now,
                        ts_init=self._now,
                        ts_ingress=i.ts_ingress,
                        symbol=i.symbol,
                        client_order_id=i.client_order_id.rsplit(":", 1)[0],
                        reason=i.reason,
                        exit_price=applied.price,
                        realized_pnl=vo.realized,
                    )
                )
        return True

    async def _closed(self, vo: VenueOrder, reason: str, why: str = "") -> None:
        """An open order ended unfilled or part-filled at the venue: tell risk and everyone."""
        self.orders.pop(vo.venue_id, None)
        i = vo.intent
        self.ctx.log.info("order.closed", coid=i.client_order_id, reason=reason,
                          executed=vo.executed, why=why)  # fmt: skip
        await self._publish(
            OrderClosed(
                ts_event=self._now,
                ts_init=self._now,
                ts_ingress=i.ts_ingress,
                symbol=i.symbol,
                client_order_id=i.client_order_id,
                reason=reason,
                exit_price=0.0,
                realized_pnl=vo.realized,
            )
        )

    def _stamp(self) -> None:
        """Time for what the venue sends on its own (stream, timers): the clock, or in replay
        the last message's event time."""
        if not self.ctx.clock.is_replay:
            self._now = self.ctx.clock.now_ns()

    async def _on_stream(self, events: list[VenueEvent]) -> None:
        async with self._lock:
            self._stamp()
            if await self._apply(events):
                await self._snapshot_now()
            await self.save()

    async def _on_connect(self) -> None:
        async with self._lock:
            self._stamp()
            await self._reconcile("start" if self._reconciles == 0 else "reconnect")
        self._connected.set()

    async def _reconcile(self, why: str) -> None:
        """Adopt the venue's truth about our orders, its open orders and the balances."""
        live = self.live
        assert live is not None
        self._reconciles += 1
        diffs: list[str] = []
        filled = False
        venue_open = {o["clientOrderId"]: o for o in await live.open_orders()}
        for vid, vo in list(self.orders.items()):
            symbol = vo.intent.symbol
            order = venue_open.get(vid) or await live.status(symbol, vid)
            if order is None:  # never reached the venue (lost before it was taken)
                diffs.append(f"{vo.intent.client_order_id}: not at the venue, closed")
                await self._closed(vo, "rejected", "not at the venue")
                continue
            events = live.order_events(order)
            executed = float(order.get("executedQty") or 0.0)
            trades = await live.trades(symbol, vid, int(order["orderId"])) if executed else []
            missed = [t for t in trades if t.trade_id not in vo.trades]
            if missed:
                diffs.append(f"{vo.intent.client_order_id}: {len(missed)} trade(s) applied")
            done = order.get("status") == "FILLED"
            if missed and done:
                missed[-1] = _done(missed[-1])
            filled |= await self._apply([e for e in events if isinstance(e, Placed)] + missed)
            if done and vid in self.orders:  # filled, every trade known before: close it
                self.orders.pop(vid)
            if vid in self.orders and order.get("status") not in ("NEW", "PARTIALLY_FILLED"):
                diffs.append(f"{vo.intent.client_order_id}: {order.get('status')} at the venue")
                await self._apply([e for e in events if isinstance(e, Ended)])
        for vid, order in venue_open.items():
            if vid not in self.orders:
                self.orders[vid] = _adopt(order, self._now)
                diffs.append(f"{vid}: open at the venue, adopted")
        diffs += await self._reconcile_balances()
        if filled:
            await self._snapshot_now()
        await self.save()
        self.ctx.log.info("order.reconciled", why=why, differences=len(diffs))
        if diffs:
            self.ctx.log.warning("order.reconcile_adopted", why=why, differences=diffs)
            await self._publish(
                Alert(
                    ts_event=self._now,
                    ts_init=self._now,
                    # Wall time: a restart's reconciliation must not reuse an earlier id.
                    alert_id=f"order-reconcile-{time.time_ns()}-{self._reconciles}",
                    level=AlertLevel.WARNING,
                    source="order",
                    text=f"reconciliation ({why}) adopted the venue's state: " + "; ".join(diffs),
                    code="VENUE_RECONCILED",
                )
            )

    async def _reconcile_balances(self) -> list[str]:
        """Take the venue's balances of the traded symbols' assets as the truth.

        A difference is booked as a transfer (``initial_cash`` moves with it), so the PnL
        stays what was traded. One quote asset is the cash.
        """
        live = self.live
        assert live is not None
        s = self.portfolio.state
        symbols = (
            set(live.cfg.symbols)
            | set(s.holdings)
            | {o.intent.symbol for o in self.orders.values()}
        )
        if not symbols:
            return []
        rules = [await live.rules_of(sym) for sym in sorted(symbols)]
        balances = await live.balances()
        diffs: list[str] = []
        quote = rules[0].quote_asset
        cash = balances.get(quote, 0.0)
        if not math.isclose(cash, s.cash, rel_tol=1e-9, abs_tol=1e-6):
            diffs.append(f"cash {s.cash:.8g} -> {cash:.8g} {quote}")
            s.initial_cash += cash - s.cash
            s.cash = cash
        for r in rules:
            held = balances.get(r.base_asset, 0.0)
            h = s.holdings.get(r.symbol)
            local = h.quantity if h is not None else 0.0
            tol = max(float(r.step_size), 1e-12)
            if abs(held - local) < tol:
                continue
            diffs.append(f"{r.symbol} position {local:.8g} -> {held:.8g} {r.base_asset}")
            view = self.market.get(r.symbol)
            price = (h.last_price if h is not None else 0.0) or (view.last_price if view else 0.0)
            s.initial_cash += (held - local) * price
            if held <= 0:
                s.holdings.pop(r.symbol, None)
            elif h is None:
                s.holdings[r.symbol] = Holding(symbol=r.symbol, quantity=held, avg_price=price,
                                               last_price=price, opened_ns=self._now)  # fmt: skip
            else:
                h.quantity = held
        return diffs

    async def _on_cancel(self, cmd: CancelOrder) -> None:
        coid = cmd.client_order_id
        vid = venue_order_id(coid)
        vo = self.orders.get(vid) or self.orders.get(coid)
        if vo is not None and (not cmd.symbol or cmd.symbol == vo.intent.symbol):
            assert self.live is not None
            self.ctx.log.info("order.cancel", coid=coid, by=cmd.issued_by)
            if await self._apply(await self._cancel_at_venue(vo)):
                await self._snapshot_now()
            await self.save()
            return
        paper = self.venue.cancel(coid) if isinstance(self.venue, PaperVenue) else None
        if paper is not None and (not cmd.symbol or cmd.symbol == paper.symbol):
            self.ctx.log.info("order.cancel", coid=coid, by=cmd.issued_by)
            await self._closed(VenueOrder(intent=paper, venue_id=coid), "canceled")
            await self.save()
            return
        if paper is not None:  # the wrong symbol: put it back
            self.venue.restore([paper])
        self.ctx.log.warning("order.cancel_unknown", coid=coid, symbol=cmd.symbol)
        await self._publish(
            Alert(
                ts_event=cmd.ts_event,
                ts_init=self._now,
                alert_id=f"order-cancel-unknown-{cmd.command_id}",
                level=AlertLevel.INFO,
                source="order",
                text=f"cancel {coid}: no open order with that id"
                + (f" for {cmd.symbol}" if cmd.symbol else ""),
                code="CANCEL_UNKNOWN",
            )
        )

    async def _cancel_at_venue(self, vo: VenueOrder) -> list[VenueEvent]:
        """Cancel one live order; a venue that does not answer is alerted, not a crash (the
        order stays open here, and the next reconciliation or try settles it)."""
        assert self.live is not None
        try:
            return await self.live.cancel(vo.intent.symbol, vo.venue_id)
        except Exception as exc:
            coid = vo.intent.client_order_id
            self.ctx.log.warning("order.cancel_failed", coid=coid, error=str(exc))
            await self._publish(
                Alert(
                    ts_event=self._now,
                    ts_init=self._now,
                    alert_id=f"order-cancel-failed-{coid}-{time.time_ns()}",
                    level=AlertLevel.CRITICAL,
                    source="order",
                    text=f"cancel of {coid} failed at the venue: {exc}",
                    code="CANCEL_FAILED",
                )
            )
            return []

    async def _cancel_all(self, cause: Message, why: str) -> None:
        """Cancel every open order (the kill switch)."""
        self.ctx.log.warning("order.cancel_all", why=why, open=len(self.orders))
        filled = False
        for vo in list(self.orders.values()):
            assert self.live is not None
            filled |= await self._apply(await self._cancel_at_venue(vo))
        if isinstance(self.venue, PaperVenue):
            for intent in self.venue.pending():
                self.venue.cancel(intent.client_order_id)
                await self._closed(VenueOrder(intent=intent, venue_id=""), "canceled", why)
        if filled:
            await self._snapshot_now()
        await self.save()

    async def _expire(self, cause: Message) -> bool:
        """Cancel the live orders resting longer than ``order_timeout_s``."""
        timeout = self.config.order_timeout_s
        if timeout <= 0 or self.live is None:
            return False
        age = timeout * 1e9
        due = [
            v for v in self.orders.values() if v.status != "SENT" and self._now - v.placed_ns >= age
        ]
        filled = False
        for vo in due:
            self.ctx.log.info("order.timeout", coid=vo.intent.client_order_id, after_s=timeout)
            filled |= await self._apply(await self._cancel_at_venue(vo))
        return filled

    async def on_tick(self) -> None:
        """Cancel timed-out live orders (the clock moves even when the market is quiet)."""
        if self.live is None or self.ctx.clock.is_replay or not self.orders:
            return
        async with self._lock:
            self._stamp()
            if await self._expire(self._tick_cause()):
                await self._snapshot_now()
            await self.save()

    def _tick_cause(self) -> Message:
        return self.portfolio.snapshot(self._now, self._now, 0)

    async def _snapshot_now(self) -> None:
        await self._publish(self.portfolio.snapshot(self._now, self._now, 0))

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
            if isinstance(state, OrderState):
                state.venue_orders = list(self.orders.values())
            await self._writer.save(msgspec.json.encode(state))

    async def _publish(self, msg: Message) -> None:
        self.outbox.record(msg)  # type: ignore[arg-type]  # only durable ones are kept
        await self.ctx.publish(msg)

    async def on_stop(self) -> None:
        """Persist the portfolio one last time (marks and the equity curve moved since)."""
        if self.live is not None:
            self._stream.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):  # stopping anyway
                await self._stream
            await self.live.close()
        if hasattr(self, "portfolio"):
            await self.save()


def _done(t: Traded) -> Traded:
    return Traded(t.venue_id, t.trade_id, t.symbol, t.side, t.quantity, t.price, t.fee,
                  t.fee_amount, t.fee_asset, t.ts_ms, True)  # fmt: skip


def _adopt(order: dict, now: int) -> VenueOrder:
    """Return a venue order we did not send (or forgot) as one of ours, under its venue id."""
    side = Side.BUY if order.get("side") == "BUY" else Side.SELL
    price = float(order.get("price") or 0.0)
    intent = OrderIntent(
        ts_event=now,
        ts_init=now,
        symbol=order["symbol"],
        client_order_id=order["clientOrderId"],
        strategy="venue",
        side=side,
        quantity=float(order["origQty"]),
        price=price,
        reason="manual",
        limit_price=price,
    )
    return VenueOrder(
        intent=intent,
        venue_id=order["clientOrderId"],
        order_id=int(order.get("orderId", 0)),
        status=str(order.get("status", "NEW")),
        executed=float(order.get("executedQty") or 0.0),
        placed_ns=now,
        adopted=True,
    )
