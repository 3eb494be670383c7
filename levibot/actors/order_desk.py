"""The orders open at a live venue: send, apply the venue's events, cancel, expire, reconcile.

The order actor holds one ``LiveDesk`` when it trades on a live venue (``venue = "binance"``)
and calls it under its own lock, so the desk, the user stream and the timers take turns.

- An intent is sent as a market order (a limit order when it has a ``limit_price``);
  ``OrderAccepted`` when the venue takes it, a ``Fill`` per venue trade (``fill_id``
  ``f"{client_order_id}:f{n}"``, n counting the order's trades, so one full fill is ``:f1`` as
  on paper), with the fee the venue charged converted to the quote asset. A trade reported
  twice (the order's answer, the user stream, a reconciliation) counts once.
- The open orders are persisted with the portfolio, each written before it is sent.
- Reconciliation (at start and after every reconnect of the user stream) adopts the venue's
  truth: a missed trade is applied, an order closed meanwhile is closed, an unknown open order
  is adopted, a balance that differs is taken as a transfer; each difference is logged and
  alerted (``VENUE_RECONCILED``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

from levibot.actors.order_outputs import EXIT_REASONS, OrderOutputs
from levibot.execution import MarketView, Portfolio
from levibot.execution.binance import (
    BinanceVenue,
    Ended,
    Placed,
    Refused,
    Traded,
    VenueEvent,
    venue_order_id,
)
from levibot.execution.orders import VenueOrder
from levibot.execution.portfolio import Holding
from levibot.messages import AlertLevel, OrderIntent, Side

Step = Callable[[], Awaitable[None]]


class LiveDesk:
    """The orders open at ``venue``, kept in ``orders`` (by venue id, persisted by the actor)."""

    def __init__(
        self,
        venue: BinanceVenue,
        portfolio: Portfolio,
        orders: dict[str, VenueOrder],
        out: OrderOutputs,
        *,
        market: dict[str, MarketView],
        now: Callable[[], int],
        save: Step,
        snapshot: Step,
        log: Any,
    ) -> None:
        self.venue = venue
        self.portfolio = portfolio
        self.orders = orders
        self.out = out
        self.market = market
        self.now = now
        self.save = save  # persist the actor's state (the portfolio and these orders)
        self.snapshot = snapshot  # publish a portfolio snapshot now
        self.log = log
        self.reconciles = 0

    # ---- orders out --------------------------------------------------------------------
    async def send(self, intent: OrderIntent) -> bool:
        """Send ``intent`` and apply the venue's answer; return True if it filled."""
        vid = venue_order_id(intent.client_order_id)
        self.orders[vid] = VenueOrder(
            intent=intent, venue_id=vid, status="SENT", placed_ns=self.now()
        )
        # Written before it is sent: a crash in between finds the order at the next start.
        await self.save()
        try:
            events = await self.venue.submit(intent, vid)
        except Exception as exc:
            # No answer (timeout, rate limit outlasted): the order may or may not be at the
            # venue. It stays open here; the next reconciliation asks the venue.
            self.log.warning("order.send_failed", coid=intent.client_order_id, error=str(exc))
            return False
        return await self.apply(events)

    def find(self, client_order_id: str, symbol: str = "") -> VenueOrder | None:
        """Return the open order placed with ``client_order_id`` (and ``symbol``, if given)."""
        vo = self.orders.get(venue_order_id(client_order_id)) or self.orders.get(client_order_id)
        if vo is None or (symbol and symbol != vo.intent.symbol):
            return None
        return vo

    async def cancel(self, vo: VenueOrder) -> bool:
        """Cancel one open order and apply the answer; return True if a last trade filled.

        A venue that does not answer is alerted, not a crash: the order stays open here, and
        the next reconciliation or try settles it.
        """
        try:
            events = await self.venue.cancel(vo.intent.symbol, vo.venue_id)
        except Exception as exc:
            coid = vo.intent.client_order_id
            self.log.warning("order.cancel_failed", coid=coid, error=str(exc))
            now = self.now()
            await self.out.alert(
                f"order-cancel-failed-{coid}-{time.time_ns()}",
                f"cancel of {coid} failed at the venue: {exc}",
                code="CANCEL_FAILED",
                ts=now,
                now=now,
                level=AlertLevel.CRITICAL,
            )
            return False
        return await self.apply(events)

    async def cancel_all(self) -> bool:
        """Cancel every open order (the kill switch); return True if a last trade filled."""
        filled = False
        for vo in list(self.orders.values()):
            filled |= await self.cancel(vo)
        return filled

    async def expire(self, timeout_s: float) -> bool:
        """Cancel the orders resting longer than ``timeout_s``; True if a last trade filled."""
        if timeout_s <= 0:
            return False
        now, age = self.now(), timeout_s * 1e9
        due = [v for v in self.orders.values() if v.status != "SENT" and now - v.placed_ns >= age]
        filled = False
        for vo in due:
            self.log.info("order.timeout", coid=vo.intent.client_order_id, after_s=timeout_s)
            filled |= await self.cancel(vo)
        return filled

    # ---- the venue's events ------------------------------------------------------------
    async def apply(self, events: list[VenueEvent]) -> bool:
        """Apply the venue's events to the open orders and the portfolio; True if any filled."""
        filled = False
        for ev in events:
            vo = self.orders.get(ev.venue_id)
            if vo is None:
                # Not ours, or closed already: reconciliation adopts what is really open.
                self.log.info("order.venue_event_unknown", kind=type(ev).__name__,
                              venue_id=ev.venue_id)  # fmt: skip
                continue
            match ev:
                case Placed():
                    vo.order_id = vo.order_id or ev.order_id
                    if vo.status == "SENT":
                        await self.out.accepted(vo.intent, self.now())
                    vo.status = ev.status if vo.status != "FILLED" else vo.status
                case Traded():
                    filled |= await self._traded(vo, ev)
                case Ended():
                    await self.close(vo, ev.status.lower(), ev.why)
                case Refused():
                    del self.orders[vo.venue_id]
                    await self.out.rejected(vo.intent, self.now(), f"venue refused: {ev.why}")
        return filled

    async def _traded(self, vo: VenueOrder, ev: Traded) -> bool:
        if ev.trade_id in vo.trades:
            return False  # reported twice: REST answer, stream, reconciliation
        vo.trades.append(ev.trade_id)
        i, now = vo.intent, self.now()
        gross = ev.quantity * ev.price
        fee_rate = ev.fee / gross if gross > 0 else 0.0
        applied = self.portfolio.apply(i.symbol, ev.side, ev.quantity, ev.price, fee_rate, now,
                                       intent=i)  # fmt: skip
        if applied is None:
            self.log.warning("order.venue_trade_unapplied", coid=i.client_order_id,
                             trade=ev.trade_id, quantity=ev.quantity)  # fmt: skip
            return False
        vo.executed += applied.quantity
        vo.realized += applied.realized_pnl
        fill_id = f"{i.client_order_id}:f{len(vo.trades)}"
        await self.out.fill(i, applied, fill_id=fill_id, side=ev.side, ts=now, now=now)
        self.portfolio.record(now)
        if ev.done:
            await self._ended_filled(vo, applied.price)
        return True

    async def _ended_filled(self, vo: VenueOrder, price: float) -> None:
        """``vo`` is FILLED at the venue: forget it; an exit closes its entry, and an order none
        of whose trades reached the portfolio is closed (no fill told risk it ended)."""
        vo.status = "FILLED"
        self.orders.pop(vo.venue_id, None)
        i, now = vo.intent, self.now()
        if i.reason in EXIT_REASONS:
            await self.out.exited(i, exit_price=price, realized=vo.realized, ts=now, now=now)
        elif vo.executed <= 0:
            why = "filled at the venue; its trades could not be applied here"
            await self.out.closed(i, "filled", realized=vo.realized, now=now, why=why)

    async def close(self, vo: VenueOrder, reason: str, why: str = "") -> None:
        """``vo`` ended unfilled or part-filled at the venue: tell risk and everyone."""
        self.orders.pop(vo.venue_id, None)
        await self.out.closed(vo.intent, reason, realized=vo.realized, now=self.now(), why=why)

    # ---- reconciliation ----------------------------------------------------------------
    async def reconcile(self, why: str) -> None:
        """Adopt the venue's truth about our orders, its open orders and the balances."""
        venue = self.venue
        self.reconciles += 1
        diffs: list[str] = []
        filled = False
        venue_open = {o["clientOrderId"]: o for o in await venue.open_orders()}
        for vid, vo in list(self.orders.items()):
            symbol = vo.intent.symbol
            order = venue_open.get(vid) or await venue.status(symbol, vid)
            if order is None:  # never reached the venue (lost before it was taken)
                diffs.append(f"{vo.intent.client_order_id}: not at the venue, closed")
                await self.close(vo, "rejected", "not at the venue")
                continue
            events = venue.order_events(order)
            executed = float(order.get("executedQty") or 0.0)
            trades = await venue.trades(symbol, vid, int(order["orderId"])) if executed else []
            missed = [t for t in trades if t.trade_id not in vo.trades]
            if missed:
                diffs.append(f"{vo.intent.client_order_id}: {len(missed)} trade(s) applied")
            done = order.get("status") == "FILLED"
            if missed and done:
                missed[-1] = _done(missed[-1])
            filled |= await self.apply([e for e in events if isinstance(e, Placed)] + missed)
            if done and vid in self.orders:
                # FILLED at the venue, but no trade here said so (every trade was known before,
                # or one could not be applied): end it as its last trade would have.
                diffs.append(f"{vo.intent.client_order_id}: FILLED at the venue, ended here")
                await self._ended_filled(vo, _average_price(order, vo.intent.price))
            if vid in self.orders and order.get("status") not in ("NEW", "PARTIALLY_FILLED"):
                diffs.append(f"{vo.intent.client_order_id}: {order.get('status')} at the venue")
                await self.apply([e for e in events if isinstance(e, Ended)])
        for vid, order in venue_open.items():
            if vid not in self.orders:
                self.orders[vid] = _adopt(order, self.now())
                diffs.append(f"{vid}: open at the venue, adopted")
        diffs += await self._reconcile_balances()
        if filled:
            await self.snapshot()
        await self.save()
        self.log.info("order.reconciled", why=why, differences=len(diffs))
        if diffs:
            self.log.warning("order.reconcile_adopted", why=why, differences=diffs)
            now = self.now()
            await self.out.alert(
                # Wall time: a restart's reconciliation must not reuse an earlier id.
                f"order-reconcile-{time.time_ns()}-{self.reconciles}",
                f"reconciliation ({why}) adopted the venue's state: " + "; ".join(diffs),
                code="VENUE_RECONCILED",
                ts=now,
                now=now,
            )

    async def _reconcile_balances(self) -> list[str]:
        """Take the venue's balances of the traded symbols' assets as the truth.

        A difference is booked as a transfer (``initial_cash`` moves with it), so the PnL
        stays what was traded. One quote asset is the cash.
        """
        venue = self.venue
        s = self.portfolio.state
        symbols = (
            set(venue.cfg.symbols)
            | set(s.holdings)
            | {o.intent.symbol for o in self.orders.values()}
        )
        if not symbols:
            return []
        rules = [await venue.rules_of(sym) for sym in sorted(symbols)]
        balances = await venue.balances()
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
                                               last_price=price, opened_ns=self.now())  # fmt: skip
            else:
                h.quantity = held
        return diffs


def _average_price(order: dict, default: float) -> float:
    """Return an order's average fill price from the venue's answer (``default`` if none)."""
    qty = float(order.get("executedQty") or 0.0)
    quote = float(order.get("cummulativeQuoteQty") or 0.0)  # Binance's spelling
    return quote / qty if qty > 0 and quote > 0 else default


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
