"""What the bot knows: read models built from bus messages, queried by the commands.

The bot changes no state of the engine; it only remembers what it saw (the latest portfolio,
recent signals, orders and alerts, the commanded risk state) so ``/portfolio`` or ``/risk``
answer without asking anyone.
"""

from __future__ import annotations

from collections import Counter, deque
from typing import Any

from levibot import valuation
from levibot.messages import (
    Alert,
    Fill,
    Message,
    OrderClosed,
    OrderDenied,
    PortfolioSnapshot,
    RiskStatus,
    SetKillSwitch,
    SetRiskPolicy,
    SetTradingState,
    Signal,
    TradingState,
)

OrderEvent = Fill | OrderDenied | OrderClosed


class RiskView:
    """The risk state: the risk engine's last ``RiskStatus``, or the last command seen (None:
    nothing heard since start)."""

    def __init__(self) -> None:
        self.kill_switch: bool | None = None
        self.trading_state: TradingState | None = None
        self.policy: str | None = None
        self.changed_by: str = ""
        self.changed_ns: int = 0


class ReadModel:
    """Latest portfolio, equity curve, recent signals/orders/alerts and the risk view."""

    def __init__(self, recent: int = 50, equity_points: int = 1000) -> None:
        self.portfolio: PortfolioSnapshot | None = None
        self.equity: deque[tuple[int, float]] = deque(maxlen=equity_points)
        self.peak_equity: float = 0.0
        self.start_equity: float | None = None
        self.signals: deque[Signal] = deque(maxlen=recent)
        self.latest_signal: dict[tuple[str, str], Signal] = {}
        self.orders: deque[OrderEvent] = deque(maxlen=recent)
        self.alerts: deque[Alert] = deque(maxlen=recent)
        self.denials: Counter[str] = Counter()
        self.models: dict[tuple[str, str], int] = {}  # (strategy, model_id) -> last seen ns
        self.risk = RiskView()
        self.risk_status: RiskStatus | None = None
        self.seen: Counter[str] = Counter()

    def apply(self, msg: Message) -> None:
        """Fold one bus message into the read model."""
        self.seen[type(msg).__name__] += 1
        match msg:
            case Signal():
                self.signals.append(msg)
                self.latest_signal[(msg.strategy, msg.symbol)] = msg
                self.models[(msg.strategy, msg.model_id)] = msg.ts_event
            case PortfolioSnapshot():
                self.portfolio = msg
                self.equity.append((msg.ts_event, msg.equity))
                self.peak_equity = max(self.peak_equity, msg.equity)
                if self.start_equity is None:
                    self.start_equity = msg.equity
            case OrderDenied():
                self.orders.append(msg)
                self.denials[msg.code] += 1
            case Fill() | OrderClosed():
                self.orders.append(msg)
            case Alert():
                self.alerts.append(msg)
            case SetKillSwitch():
                self.risk.kill_switch = msg.on
                self._commanded(msg.issued_by, msg.ts_event)
            case SetTradingState():
                self.risk.trading_state = msg.state
                self._commanded(msg.issued_by, msg.ts_event)
            case SetRiskPolicy():
                self.risk.policy = msg.policy
                self._commanded(msg.issued_by, msg.ts_event)
            case RiskStatus():  # the risk engine's own word overrides what was commanded
                self.risk_status = msg
                self.risk.kill_switch = msg.kill_switch
                self.risk.trading_state = msg.trading_state
                self.risk.policy = msg.policy
            case _:
                pass

    def _commanded(self, by: str, ts: int) -> None:
        self.risk.changed_by = by
        self.risk.changed_ns = ts

    @property
    def drawdown(self) -> float:
        """Return the fall of equity from its peak, as a fraction (0.0 at a new high).

        The risk engine's word (``RiskStatus``: its peak is the one the limits are checked
        against); until it has spoken, the same formula over the snapshots seen.
        """
        if self.risk_status is not None:
            return self.risk_status.drawdown
        if self.portfolio is None:
            return 0.0
        return valuation.drawdown(self.peak_equity, self.portfolio.equity)

    @property
    def peak(self) -> float:
        """Return the peak equity :attr:`drawdown` is measured from."""
        if self.risk_status is not None:
            return self.risk_status.peak_equity
        return self.peak_equity

    @property
    def gross_exposure(self) -> float:
        """Return Σ |quantity · mark| over open positions (:mod:`levibot.valuation`)."""
        if self.portfolio is None:
            return 0.0
        return valuation.gross_exposure(
            valuation.Marked(p.quantity, valuation.mark(p.last_price, p.avg_price))
            for p in self.portfolio.positions
        )

    def summary(self) -> dict[str, Any]:
        """Return counters for ``/status``."""
        return {"seen": dict(self.seen), "signals": len(self.signals), "orders": len(self.orders)}
