"""Signals, orders, fills and the portfolio: scoring → risk → order → everyone."""

from __future__ import annotations

import enum
import re
from typing import ClassVar

import msgspec

from levibot.messages._base import Message, Overflow, SymbolMessage
from levibot.messages.market import Side


class SignalSide(enum.Enum):
    """What a strategy wants to hold."""

    LONG = "long"
    SHORT = "short"
    FLAT = "flat"


class Signal(SymbolMessage, frozen=True, kw_only=True):
    """A strategy's view of one symbol. ``confidence`` is ``|probability - 0.5| * 2``."""

    strategy: str
    side: SignalSide
    probability: float
    confidence: float
    price: float
    atr: float = 0.0
    spread_bps: float = 0.0
    model_id: str = ""

    overflow: ClassVar[Overflow] = Overflow.CONFLATE
    subject_root: ClassVar[str] = "lb.signal"

    def subject(self) -> str:
        return f"lb.signal.{self.strategy}.{self.symbol}"

    def conflation_key(self) -> object:
        return (Signal, self.strategy, self.symbol)


#: What a client order id may look like where a person types or sends one (REST, Telegram):
#: ours are ``<strategy>-<SYMBOL>-<ns>`` or ``manual-<hex>``, an exit's adds ``:<rule>``, and an
#: order adopted from the venue keeps the venue's id (Binance allows ``/`` too). Use fullmatch.
CLIENT_ORDER_ID = re.compile(r"[A-Za-z0-9._:/-]{1,128}")


class OrderIntent(SymbolMessage, frozen=True, kw_only=True):
    """A sized order the risk engine approved; the order actor executes it exactly once."""

    client_order_id: str
    strategy: str
    side: Side
    quantity: float
    price: float  # reference price the order was sized at
    stop_loss: float = 0.0  # 0.0: none
    take_profit: float = 0.0
    max_hold_ns: int = 0  # time exit; 0: none
    reduce_only: bool = False
    reason: str = "signal"  # "signal" | "manual" | "exit"
    # A manual order's limit: a buy executes at no more, a sell at no less; 0.0: at market.
    limit_price: float = 0.0
    # The most the venue may execute at its fill price (quantity x price): the approved
    # notional limit widened by the allowed price move; 0.0: no bound (exits, no limit).
    max_notional: float = 0.0

    durable: ClassVar[bool] = True
    subject_root: ClassVar[str] = "lb.order.intent"

    def subject(self) -> str:
        return f"lb.order.intent.{self.symbol}"

    def dedup_id(self) -> str:
        return f"intent:{self.client_order_id}"


class OrderDenied(SymbolMessage, frozen=True, kw_only=True):
    """A signal or manual order the risk engine refused, with a stable code."""

    client_order_id: str
    strategy: str
    code: str
    reason: str

    durable: ClassVar[bool] = True
    subject_root: ClassVar[str] = "lb.order.denied"

    def subject(self) -> str:
        return f"lb.order.denied.{self.symbol}"

    def dedup_id(self) -> str:
        return f"denied:{self.client_order_id}"


class OrderAccepted(SymbolMessage, frozen=True, kw_only=True):
    """The venue took an order and will fill it."""

    client_order_id: str
    side: Side
    quantity: float

    durable: ClassVar[bool] = True
    subject_root: ClassVar[str] = "lb.order.event"

    def subject(self) -> str:
        return f"lb.order.event.{self.symbol}"

    def dedup_id(self) -> str:
        return f"accepted:{self.client_order_id}"


class Fill(SymbolMessage, frozen=True, kw_only=True):
    """An execution. ``realized_pnl`` is the PnL this fill closed, net of its fee."""

    fill_id: str
    client_order_id: str
    side: Side
    quantity: float
    price: float
    fee: float
    realized_pnl: float = 0.0
    reason: str = "signal"  # "signal" | "manual" | "stop_loss" | "take_profit" | "time_exit"
    position_after: float = 0.0

    durable: ClassVar[bool] = True
    subject_root: ClassVar[str] = "lb.order.event"

    def subject(self) -> str:
        return f"lb.order.event.{self.symbol}"

    def dedup_id(self) -> str:
        return f"fill:{self.fill_id}"


class OrderClosed(SymbolMessage, frozen=True, kw_only=True):
    """A position was closed by an exit rule (stop-loss, take-profit, time)."""

    client_order_id: str
    reason: str
    exit_price: float
    realized_pnl: float

    durable: ClassVar[bool] = True
    subject_root: ClassVar[str] = "lb.order.event"

    def subject(self) -> str:
        return f"lb.order.event.{self.symbol}"

    def dedup_id(self) -> str:
        return f"closed:{self.client_order_id}"


class Position(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One open position inside a portfolio snapshot."""

    symbol: str
    quantity: float
    avg_price: float
    last_price: float
    unrealized_pnl: float


class PortfolioSnapshot(Message, frozen=True, kw_only=True):
    """The whole portfolio at one moment; the order actor is its only author."""

    cash: float
    equity: float
    realized_pnl: float
    unrealized_pnl: float
    fees: float
    positions: tuple[Position, ...] = ()

    overflow: ClassVar[Overflow] = Overflow.CONFLATE
    subject_root: ClassVar[str] = "lb.portfolio"

    def conflation_key(self) -> object:
        return PortfolioSnapshot
