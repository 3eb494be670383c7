"""Where orders execute: the ``ExchangeAdapter`` interface and the ``PaperVenue``.

Paper fill rules (``fill`` is ``"close"`` or ``"next_open"``):
- a symbol fed by ticks fills pending orders at the next tick's price;
- a symbol fed by bars fills at the signal bar's close (``close``: at once, at the intent's
  reference price, which is that close) or at the next bar's open (``next_open``). If the
  next bar already went by when the intent arrives, it fills at that bar's open at once, so the
  outcome does not depend on which message won a race;
- a buy pays ``price · (1 + slippage)``, a sell gets ``price · (1 - slippage)``; the fee is
  ``notional · fee_bps / 1e4`` (applied by the portfolio).

Exits (``bar_exit`` / ``tick_exit``): a tick at or through the stop-loss / take-profit exits at
that tick's price. A bar whose low reaches the stop-loss exits at the stop (or at the open when
the bar opened through it); whose high reaches the take-profit exits at the take-profit (or the
open). When one bar touches both, the stop-loss wins: the bar does not say which came first, and
assuming the worse one is the conservative choice. A position held ``max_hold_ns`` or longer
exits at the tick price / bar close (after SL/TP had their chance on that bar).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from levibot.execution.portfolio import Holding
from levibot.messages import Bar, OrderIntent, Side, Tick

FillMode = Literal["close", "next_open"]


@dataclass(frozen=True, slots=True)
class Execution:
    """A venue's report that (part of) an order traded at ``price`` (slippage included)."""

    intent: OrderIntent
    price: float
    ts: int


@dataclass(slots=True)
class MarketView:
    """What the order actor last saw of one symbol."""

    kind: str = ""  # "tick" | "bar" | "" (nothing yet)
    last_price: float = 0.0
    last_bar: Bar | None = None


class ExchangeAdapter(Protocol):
    """A venue. ``PaperVenue`` implements it; a real exchange adapter would too.

    It reports ``Execution``s (what traded, at what price) rather than ``Fill`` messages: the
    portfolio turns them into fills, because only it knows the PnL and position they leave.
    """

    fee_rate: float

    def submit(self, intent: OrderIntent, market: MarketView) -> list[Execution]:
        """Take an order; return what executed at once (the rest stays pending)."""
        ...

    def on_market(self, msg: Tick | Bar) -> list[Execution]:
        """Return the pending orders of ``msg.symbol`` that execute on this market data."""
        ...

    def exit(self, intent: OrderIntent, raw_price: float, ts: int) -> list[Execution]:
        """Execute an exit rule's order now, at the market (``raw_price`` before slippage)."""
        ...

    def pending(self) -> list[OrderIntent]:
        """Return the accepted orders not yet executed, oldest first."""
        ...

    def restore(self, pending: Sequence[OrderIntent]) -> None:
        """Take back the pending orders persisted before a restart."""
        ...


class PaperVenue:
    """Simulated fills with fees and slippage in basis points."""

    def __init__(self, *, fee_bps: float, slippage_bps: float, fill: FillMode) -> None:
        self.fee_rate = fee_bps / 1e4
        self.slip = slippage_bps / 1e4
        self.fill = fill
        self._pending: dict[str, list[OrderIntent]] = {}

    def price(self, side: Side, raw: float) -> float:
        """Return ``raw`` moved against the taker by the slippage."""
        return raw * (1.0 + self.slip) if side is Side.BUY else raw * (1.0 - self.slip)

    def submit(self, intent: OrderIntent, market: MarketView) -> list[Execution]:
        """Fill at once where the rules allow, else queue for the next market data."""
        if market.kind == "bar" or (market.kind == "" and self.fill == "close"):
            bar = market.last_bar
            if self.fill == "close":
                return [Execution(intent, self.price(intent.side, intent.price), intent.ts_event)]
            if bar is not None and bar.start >= intent.ts_event:
                return [Execution(intent, self.price(intent.side, bar.open), bar.start)]
        self._pending.setdefault(intent.symbol, []).append(intent)
        return []

    def on_market(self, msg: Tick | Bar) -> list[Execution]:
        """Fill every pending order of the symbol at this tick's price or this bar's open."""
        queue = self._pending.get(msg.symbol)
        if not queue:
            return []
        if isinstance(msg, Tick):
            raw, ts = msg.price, msg.ts_event
        else:
            raw, ts = msg.open, msg.start
        # Only market data from after the order fills it: a late or re-delivered older bar
        # (after a restart, say) must not fill an order at a price from before it existed.
        due = [i for i in queue if ts >= i.ts_event]
        if len(due) == len(queue):
            del self._pending[msg.symbol]
        else:
            self._pending[msg.symbol] = [i for i in queue if ts < i.ts_event]
        return [Execution(i, self.price(i.side, raw), ts) for i in due]

    def exit(self, intent: OrderIntent, raw_price: float, ts: int) -> list[Execution]:
        """Fill an exit at ``raw_price`` moved against the seller by the slippage."""
        return [Execution(intent, self.price(intent.side, raw_price), ts)]

    def pending(self) -> list[OrderIntent]:
        """Return the queued orders, by symbol then age."""
        return [i for queue in self._pending.values() for i in queue]

    def cancel(self, client_order_id: str) -> OrderIntent | None:
        """Drop a pending order; return it, or None when none has that id."""
        for symbol, queue in self._pending.items():
            for k, intent in enumerate(queue):
                if intent.client_order_id == client_order_id:
                    del queue[k]
                    if not queue:
                        del self._pending[symbol]
                    return intent
        return None

    def restore(self, pending: Sequence[OrderIntent]) -> None:
        """Queue the orders persisted before a restart."""
        for intent in pending:
            self._pending.setdefault(intent.symbol, []).append(intent)


def refusal(intent: OrderIntent, price: float) -> str | None:
    """Return why ``intent`` must not execute at ``price`` (slippage included), or None.

    The venue's own re-check of what the risk engine approved, at the price it really fills
    at: a limit order's limit, and the approved notional bound (``max_notional``), which a
    price that moved since the order was sized, or a caller's price, must not get around.
    """
    limit = intent.limit_price
    if limit > 0:
        if intent.side is Side.BUY and price > limit:
            return f"buy limit {limit:g} not reached: the price is {price:g}"
        if intent.side is Side.SELL and price < limit:
            return f"sell limit {limit:g} not reached: the price is {price:g}"
    bound = intent.max_notional
    notional = intent.quantity * price
    if bound > 0 and not notional <= bound * (1 + 1e-9):  # NaN refused too
        return f"notional {notional:.2f} at the fill price exceeds the approved {bound:.2f}"
    return None


def tick_exit(h: Holding, price: float, ts: int) -> tuple[str, float] | None:
    """Return ``(reason, raw price)`` when a tick at ``price`` exits the position."""
    if h.stop_loss > 0 and price <= h.stop_loss:
        return "stop_loss", price
    if h.take_profit > 0 and price >= h.take_profit:
        return "take_profit", price
    if h.max_hold_ns > 0 and ts - h.opened_ns >= h.max_hold_ns:
        return "time_exit", price
    return None


def bar_exit(h: Holding, bar: Bar) -> tuple[str, float] | None:
    """Return ``(reason, raw price)`` when ``bar`` exits the position; stop-loss wins ties."""
    if h.stop_loss > 0 and bar.low <= h.stop_loss:
        return "stop_loss", min(bar.open, h.stop_loss)
    if h.take_profit > 0 and bar.high >= h.take_profit:
        return "take_profit", max(bar.open, h.take_profit)
    if h.max_hold_ns > 0 and bar.ts_event - h.opened_ns >= h.max_hold_ns:
        return "time_exit", bar.close
    return None
