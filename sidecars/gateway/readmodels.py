"""What the gateway knows, built only from bus messages: the read side of the gateway.

Latest portfolio snapshot, a ring of recent signals, order states by client order id, the last
features / tick / bar per symbol, recent alerts and the risk controls this gateway commanded.
Every update is O(1) and every container is bounded.

Applying a message twice changes nothing (a fill or an alert is taken once by its id; an
order's status only moves forward), so the views can be restored from the store's event log at
start (``sidecars.gateway.restore``) while the bus redelivers what the log already holds.
"""

from __future__ import annotations

from collections import OrderedDict, deque

import msgspec

from levibot.messages import (
    Alert,
    Bar,
    Features,
    Fill,
    Message,
    OrderAccepted,
    OrderClosed,
    OrderDenied,
    OrderIntent,
    PortfolioSnapshot,
    RiskStatus,
    Signal,
    SubmitOrder,
    Tick,
)
from sidecars.gateway.charts import ChartHistory


def manual_order_id(cmd: SubmitOrder) -> str:
    """Return the client order id the risk engine gives a manual order (``manual-<command id>``)."""
    return f"manual-{cmd.command_id}"


class OrderState(msgspec.Struct, kw_only=True):
    """The lifecycle of one order as the gateway saw it on the bus."""

    client_order_id: str
    symbol: str
    status: str  # submitted | approved | denied | accepted | filled | closed
    side: str = ""
    quantity: float = 0.0
    filled_quantity: float = 0.0
    avg_fill_price: float = 0.0
    fees: float = 0.0
    realized_pnl: float = 0.0
    strategy: str = ""
    code: str = ""  # denial code
    reason: str = ""
    updated_ns: int = 0


#: How far along its lifecycle each order status is: a late or redelivered message that says
#: less (an ``accepted`` after its ``filled``) does not move an order back.
STATUS_RANK = {
    "submitted": 0, "approved": 1, "denied": 1, "accepted": 2, "filled": 3, "closed": 4,
}  # fmt: skip


class RiskControls(msgspec.Struct, kw_only=True):
    """The risk controls as last commanded (None: not known here): while the gateway runs, by
    its own commands; at start (``restore``), by the newest commands in the store's log,
    whoever sent them (the bot, the CLI, another replica)."""

    kill_switch: bool | None = None
    trading_state: str | None = None
    policy: str | None = None
    updated_ns: int = 0


class ReadModels:
    """The gateway's bounded views of the bus."""

    def __init__(self, *, recent_signals: int = 200, max_orders: int = 10_000) -> None:
        self.portfolio: PortfolioSnapshot | None = None
        self.signals: deque[Signal] = deque(maxlen=recent_signals)
        self.alerts: deque[Alert] = deque(maxlen=100)
        self.orders: OrderedDict[str, OrderState] = OrderedDict()
        self.features: dict[str, Features] = {}
        self.ticks: dict[str, Tick] = {}
        self.bars: dict[str, Bar] = {}
        self.risk = RiskControls()
        self.risk_status: RiskStatus | None = None  # the risk engine's own word, when heard
        self.max_orders = max_orders
        self.messages_seen = 0
        self._fill_ids: OrderedDict[str, None] = OrderedDict()  # fills taken, newest last
        self.charts = ChartHistory()  # bars, fills and equity history for the Mini App's charts

    def _order(self, coid: str, symbol: str, status: str, ts: int) -> OrderState:
        state = self.orders.get(coid)
        if state is None:
            state = OrderState(client_order_id=coid, symbol=symbol, status=status)
            self.orders[coid] = state
            if len(self.orders) > self.max_orders:
                self.orders.popitem(last=False)
        if STATUS_RANK.get(status, 0) >= STATUS_RANK.get(state.status, 0):
            state.status = status
        state.updated_ns = max(state.updated_ns, ts)
        return state

    def _new_fill(self, fill_id: str) -> bool:
        """Return True the first time ``fill_id`` is seen (a fill adds up: take it once)."""
        if fill_id in self._fill_ids:
            return False
        self._fill_ids[fill_id] = None
        if len(self._fill_ids) > 2 * self.max_orders:
            self._fill_ids.popitem(last=False)
        return True

    def submitted(self, cmd: SubmitOrder) -> OrderState:
        """Record a manual order this gateway submitted (before risk has seen it)."""
        state = self._order(manual_order_id(cmd), cmd.symbol, "submitted", cmd.ts_init)
        state.side, state.quantity, state.strategy = cmd.side, cmd.quantity, "manual"
        return state

    def apply(self, msg: Message) -> None:
        """Update the views with one bus message."""
        self.messages_seen += 1
        match msg:
            case Tick():
                self.ticks[msg.symbol] = msg
            case Bar():
                self.bars[msg.symbol] = msg
                self.charts.bar(msg)
            case Features():
                self.features[msg.symbol] = msg
            case Signal() if not (
                self.signals and msg.ts_init <= self.signals[-1].ts_init and msg in self.signals
            ):
                self.signals.append(msg)  # (one already held is a restored one heard again)
            case PortfolioSnapshot():
                self.portfolio = msg
                self.charts.portfolio(msg)
            case Alert() if all(a.alert_id != msg.alert_id for a in self.alerts):
                self.alerts.append(msg)
            case OrderIntent():
                s = self._order(msg.client_order_id, msg.symbol, "approved", msg.ts_init)
                s.side, s.quantity, s.strategy = msg.side.value, msg.quantity, msg.strategy
            case OrderDenied():
                s = self._order(msg.client_order_id, msg.symbol, "denied", msg.ts_init)
                s.code, s.reason, s.strategy = msg.code, msg.reason, msg.strategy
            case OrderAccepted():
                s = self._order(msg.client_order_id, msg.symbol, "accepted", msg.ts_init)
                s.side, s.quantity = msg.side.value, msg.quantity
            case Fill() if not self._new_fill(msg.fill_id):
                pass  # a redelivery, or a fill restored from the log and heard again
            case Fill():
                self.charts.fill(msg)
                s = self._order(msg.client_order_id, msg.symbol, "filled", msg.ts_init)
                total = s.filled_quantity + msg.quantity
                if total > 0:
                    s.avg_fill_price = (
                        s.avg_fill_price * s.filled_quantity + msg.price * msg.quantity
                    ) / total
                s.filled_quantity = total
                s.fees += msg.fee
                s.realized_pnl += msg.realized_pnl
                s.side = s.side or msg.side.value
            case RiskStatus():
                self.risk_status = msg
            case OrderClosed():
                s = self._order(msg.client_order_id, msg.symbol, "closed", msg.ts_init)
                s.reason = msg.reason
                s.realized_pnl = msg.realized_pnl
            case _:
                pass

    def recent_signals(self, limit: int, symbol: str | None = None) -> list[Signal]:
        """Return up to ``limit`` most recent signals, newest last, optionally of one symbol."""
        picked = [s for s in self.signals if symbol is None or s.symbol == symbol]
        return picked[-limit:] if limit > 0 else []
