"""The risk engine's persisted state, and reading and writing the state files of both actors."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import msgspec

from levibot.errors import LevibotError
from levibot.messages import Alert, OrderDenied, OrderIntent, Signal, TradingState

T = TypeVar("T")

#: How many recent client order ids / fill ids the engine remembers to drop re-deliveries.
RECENT_IDS = 2_048


class StateFileError(LevibotError):
    """A state file exists but cannot be read: refuse to trade on state we cannot trust."""


class BookPosition(msgspec.Struct, kw_only=True):
    """The risk engine's view of one position, copied from the order actor."""

    quantity: float
    last_price: float


class PendingOrder(msgspec.Struct, kw_only=True):
    """An approved order not yet filled; counts as position so a signal is not doubled."""

    symbol: str
    quantity: float  # signed: + buy, - sell
    price: float
    ts: int


class RiskState(msgspec.Struct, kw_only=True):
    """Everything the risk engine must remember across a restart."""

    version: int = 1
    kill_switch: bool = False
    trading_state: TradingState = TradingState.ACTIVE
    policy: str = "moderate"
    day: int = -1  # UTC day number (days since the epoch) the counters below belong to
    day_trades: int = 0
    day_realized: float = 0.0
    day_start_equity: float = 0.0
    peak_equity: float = 0.0
    last_loss_ns: dict[str, int] = {}
    last_loss_global_ns: int = 0
    last_stop_ns: dict[str, int] = {}
    last_stop_global_ns: int = 0
    last_trade_ns: dict[str, int] = {}
    order_times: list[int] = []  # approved-order times inside the rate window
    # The book: the order actor's last PortfolioSnapshot plus the fills seen since.
    cash: float = 0.0
    positions: dict[str, BookPosition] = {}
    snapshot_ts: int = -1
    pending: dict[str, PendingOrder] = {}
    decided: list[str] = []  # recent client order ids already decided (re-delivery guard)
    seen_fills: list[str] = []
    last_price: dict[str, float] = {}  # the market price: last bar close, signal or fill
    last_price_ns: dict[str, int] = {}  # when ``last_price`` was seen (clock time)
    last_atr: dict[str, float] = {}
    # Signals waiting for the portfolio of their bar (``decide_after_portfolio``): persisted,
    # so a signal acked by the transport survives a kill -9 before it was decided.
    held: list[Signal] = []
    # The last durable messages published, re-published at start (see runtime.outbox).
    outbox: list[OrderIntent | OrderDenied | Alert] = []


def read_state(path: Path, type_: type[T]) -> T | None:
    """Return the state in ``path``, None when there is none; a corrupt file raises."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        return msgspec.json.decode(data, type=type_)
    except msgspec.DecodeError as exc:
        raise StateFileError(
            f"state file {path} is unreadable ({exc}); fix or remove it before trading again"
        ) from None
