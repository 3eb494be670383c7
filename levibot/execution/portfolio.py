"""The portfolio: cash, positions, average prices, PnL, fees and the equity curve. One of it.

Conventions:
- spot, long only: a sell never takes a position below zero, a buy never spends more cash
  than there is (both are clamped; see ``apply``);
- the average price excludes fees; the fees paid to open a position (``entry_fees``) are
  charged to the PnL of the sells that close it, pro rata, so a fill's ``realized_pnl`` is net
  of every fee of the round trip and ``equity == initial_cash + realized + unrealized``;
- ``equity = cash + Σ quantity · last price`` (:mod:`levibot.valuation`);
  ``unrealized = Σ quantity · (last - avg) - entry_fees``.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

import msgspec

from levibot import valuation
from levibot.messages import (
    Alert,
    Fill,
    OrderAccepted,
    OrderClosed,
    OrderIntent,
    PortfolioSnapshot,
    Position,
    Side,
)

#: The durable messages the order actor publishes (its outbox holds the last of them).
OrderOutput = OrderAccepted | Fill | OrderClosed | Alert

EPS = 1e-12


class Holding(msgspec.Struct, kw_only=True):
    """One open position and the exits attached to it."""

    symbol: str
    quantity: float
    avg_price: float
    last_price: float
    entry_fees: float = 0.0
    opened_ns: int = 0
    entry_order_id: str = ""
    stop_loss: float = 0.0
    take_profit: float = 0.0
    max_hold_ns: int = 0

    @property
    def unrealized(self) -> float:
        """Return the open PnL net of the fees paid to open it."""
        return self.quantity * (self.last_price - self.avg_price) - self.entry_fees


class PortfolioState(msgspec.Struct, kw_only=True):
    """What the order actor persists so a restart continues where it stopped."""

    version: int = 1
    initial_cash: float = 0.0
    cash: float = 0.0
    realized_pnl: float = 0.0
    fees: float = 0.0
    holdings: dict[str, Holding] = {}
    curve: list[tuple[int, float]] = []
    seen_ids: list[str] = []
    pending: list[OrderIntent] = []
    fills: int = 0
    # The last durable messages published, re-published at start (see runtime.outbox).
    outbox: list[OrderOutput] = []


@dataclass(frozen=True, slots=True)
class Applied:
    """The outcome of one execution on the portfolio."""

    quantity: float
    price: float
    fee: float
    realized_pnl: float
    position_after: float


class Portfolio:
    """Cash and positions, changed only by ``apply`` and marked by ``mark``."""

    def __init__(
        self,
        cash: float,
        *,
        curve_max: int = 100_000,
        seen_max: int = 100_000,
        qty_step: float = 1e-8,
        state: PortfolioState | None = None,
    ) -> None:
        self.state = state or PortfolioState(initial_cash=cash, cash=cash)
        self.curve_max = curve_max
        self.seen_max = seen_max
        self.qty_step = qty_step
        self._seen: OrderedDict[str, None] = OrderedDict.fromkeys(self.state.seen_ids)

    # ---- idempotency -----------------------------------------------------------------------
    def seen(self, client_order_id: str) -> bool:
        """Return True when an order with this id was already taken."""
        return client_order_id in self._seen

    def remember(self, client_order_id: str) -> None:
        """Record an order id; the oldest are forgotten past ``seen_max``."""
        self._seen[client_order_id] = None
        while len(self._seen) > self.seen_max:
            self._seen.popitem(last=False)

    # ---- valuation -------------------------------------------------------------------------
    @property
    def equity(self) -> float:
        """Return cash plus every position at its last price."""
        # A holding's last price is set when it opens: its mark is always its last price.
        return valuation.equity(self.state.cash, self.state.holdings.values())

    @property
    def exposure(self) -> float:
        """Return the gross notional of the open positions at their last prices."""
        return valuation.gross_exposure(self.state.holdings.values())

    @property
    def unrealized(self) -> float:
        """Return the open PnL of every position, net of its entry fees."""
        total = 0  # a loop, as in levibot.valuation: the same bits on every Python
        for h in self.state.holdings.values():
            total += h.unrealized
        return total

    def mark(self, symbol: str, price: float) -> None:
        """Set the last price of ``symbol``'s position (when there is one)."""
        holding = self.state.holdings.get(symbol)
        if holding is not None and math.isfinite(price) and price > 0:
            holding.last_price = price

    def record(self, ts: int) -> float:
        """Append ``(ts, equity)`` to the equity curve (bounded: the oldest half is dropped);
        return the equity."""
        curve = self.state.curve
        equity = self.equity
        if curve and curve[-1][0] == ts:
            curve[-1] = (ts, equity)
        else:
            curve.append((ts, equity))
        if len(curve) > self.curve_max:
            del curve[: len(curve) - self.curve_max]
        return equity

    # ---- executions ------------------------------------------------------------------------
    def apply(
        self,
        symbol: str,
        side: Side,
        quantity: float,
        price: float,
        fee_rate: float,
        ts: int,
        intent: OrderIntent | None = None,
    ) -> Applied | None:
        """Execute ``quantity`` at ``price`` (slippage already in it); None when it clamps to 0.

        A buy is clamped to what the cash pays including its fee, a sell to the position held.
        """
        s = self.state
        holding = s.holdings.get(symbol)
        held = holding.quantity if holding is not None else 0.0
        if side is Side.BUY:
            affordable = s.cash / (price * (1.0 + fee_rate)) if price > 0 else 0.0
            qty = _floor(min(quantity, affordable), self.qty_step)
        else:
            qty = min(quantity, held)
        if not qty > 0:
            return None
        gross = qty * price
        fee = gross * fee_rate
        s.fees += fee
        s.fills += 1
        if side is Side.BUY:
            s.cash -= gross + fee
            if holding is None:
                holding = Holding(
                    symbol=symbol, quantity=0.0, avg_price=price, last_price=price, opened_ns=ts
                )
                s.holdings[symbol] = holding
            holding.avg_price = (holding.quantity * holding.avg_price + gross) / (
                holding.quantity + qty
            )
            holding.quantity += qty
            holding.entry_fees += fee
            holding.last_price = price
            if intent is not None and not intent.reduce_only:
                holding.entry_order_id = intent.client_order_id
                holding.stop_loss = intent.stop_loss or holding.stop_loss
                holding.take_profit = intent.take_profit or holding.take_profit
                holding.max_hold_ns = intent.max_hold_ns or holding.max_hold_ns
            return Applied(qty, price, fee, 0.0, holding.quantity)
        assert holding is not None
        share = qty / holding.quantity
        entry_fees = holding.entry_fees * share
        realized = qty * (price - holding.avg_price) - fee - entry_fees
        s.cash += gross - fee
        s.realized_pnl += realized
        holding.entry_fees -= entry_fees
        holding.quantity -= qty
        holding.last_price = price
        if holding.quantity <= EPS * max(1.0, qty):
            del s.holdings[symbol]
            return Applied(qty, price, fee, realized, 0.0)
        return Applied(qty, price, fee, realized, holding.quantity)

    # ---- views -----------------------------------------------------------------------------
    def snapshot(
        self, ts_event: int, ts_init: int, ts_ingress: int = 0, equity: float | None = None
    ) -> PortfolioSnapshot:
        """Return the portfolio as a ``PortfolioSnapshot`` message (``equity``: as ``record``
        just returned it, nothing having changed since)."""
        s = self.state
        return PortfolioSnapshot(
            ts_event=ts_event,
            ts_init=ts_init,
            ts_ingress=ts_ingress,
            cash=s.cash,
            equity=self.equity if equity is None else equity,
            realized_pnl=s.realized_pnl,
            unrealized_pnl=self.unrealized,
            fees=s.fees,
            positions=tuple(
                Position(
                    symbol=h.symbol,
                    quantity=h.quantity,
                    avg_price=h.avg_price,
                    last_price=h.last_price,
                    unrealized_pnl=h.unrealized,
                )
                for h in sorted(s.holdings.values(), key=_by_symbol)
            )
            if s.holdings
            else (),  # flat: most snapshots of a backtest, one per bar
        )

    def to_state(self, pending: list[OrderIntent]) -> PortfolioState:
        """Return the state to persist, with the venue's pending orders."""
        self.state.seen_ids = list(self._seen)
        self.state.pending = pending
        return self.state


def _by_symbol(h: Holding) -> str:
    return h.symbol


def _floor(quantity: float, step: float) -> float:
    if not (quantity > 0 and math.isfinite(quantity)):
        return 0.0
    return round(math.floor(quantity / step + 1e-6) * step, 12)
