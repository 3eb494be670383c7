"""Commands to the actor that owns a piece of state, alerts and heartbeats."""

from __future__ import annotations

import enum
from typing import ClassVar

from levibot.messages._base import Message, Overflow


class Command(Message, frozen=True, kw_only=True):
    """Base of every command: carried over JetStream, deduplicated by ``command_id``."""

    command_id: str
    issued_by: str = "system"

    durable: ClassVar[bool] = True
    subject_root: ClassVar[str] = "lb.ctl"
    target: ClassVar[str] = ""

    def subject(self) -> str:
        return f"lb.ctl.{self.target}"

    def dedup_id(self) -> str:
        return f"cmd:{self.command_id}"


class TradingState(enum.Enum):
    """ACTIVE trades; REDUCING only lets exposure shrink; HALTED trades nothing."""

    ACTIVE = "active"
    REDUCING = "reducing"
    HALTED = "halted"


class SetKillSwitch(Command, frozen=True, kw_only=True):
    """Turn the one kill switch on or off."""

    on: bool
    target: ClassVar[str] = "risk"


class SetTradingState(Command, frozen=True, kw_only=True):
    """Move the risk engine to a trading state."""

    state: TradingState
    target: ClassVar[str] = "risk"


class SetRiskPolicy(Command, frozen=True, kw_only=True):
    """Switch the exit policy (conservative, moderate, aggressive) at run time."""

    policy: str
    target: ClassVar[str] = "risk"


class StartStrategy(Command, frozen=True, kw_only=True):
    """Start a strategy in the scoring actor."""

    strategy: str
    # A rule strategy's parameters ({"fast": 10, "slow": 30}); empty: as configured.
    params: dict[str, float] = {}
    target: ClassVar[str] = "scoring"


class StopStrategy(Command, frozen=True, kw_only=True):
    """Stop a strategy in the scoring actor."""

    strategy: str
    target: ClassVar[str] = "scoring"


class ActivateModel(Command, frozen=True, kw_only=True):
    """Swap the scoring actor's active model (``role="active"``), shadow or canary."""

    model_id: str
    role: str = "active"  # "active" | "shadow" | "canary"
    target: ClassVar[str] = "scoring"


class SubmitOrder(Command, frozen=True, kw_only=True):
    """A manual order; it goes through the risk engine like any signal."""

    symbol: str
    side: str  # "buy" | "sell"
    quantity: float = 0.0  # 0.0: let the risk engine size it
    # A limit price, never a sizing price: the risk engine sizes and checks at the market
    # price it knows, refuses a limit too far from it, and the venue honours the limit.
    # 0.0: at market.
    price: float = 0.0
    target: ClassVar[str] = "risk"


class CancelOrder(Command, frozen=True, kw_only=True):
    """Cancel an open order by the client order id it was placed with (``OrderIntent``'s).

    The order actor cancels it at the venue and publishes ``OrderClosed`` (reason
    ``canceled``); an order it does not hold open gets an ``Alert`` saying so.
    """

    client_order_id: str
    symbol: str = ""  # optional: only checked against the order's when given
    target: ClassVar[str] = "order"


class RiskStatus(Message, frozen=True, kw_only=True):
    """The risk engine's state, published on every change and periodically: the one truth
    about the kill switch, the trading state and the exit policy."""

    kill_switch: bool
    trading_state: TradingState
    policy: str
    equity: float
    peak_equity: float
    drawdown: float  # (peak - equity) / peak; profits are never drawdown
    day_trades: int
    day_realized_pnl: float

    overflow: ClassVar[Overflow] = Overflow.CONFLATE
    subject_root: ClassVar[str] = "lb.risk"

    def subject(self) -> str:
        return "lb.risk.status"

    def conflation_key(self) -> object:
        return RiskStatus


class AlertLevel(enum.Enum):
    """How loud an alert is."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class Alert(Message, frozen=True, kw_only=True):
    """Something a human should hear about."""

    alert_id: str
    level: AlertLevel
    source: str
    text: str
    code: str = ""

    durable: ClassVar[bool] = True
    subject_root: ClassVar[str] = "lb.alert"

    def subject(self) -> str:
        return f"lb.alert.{self.level.value}"

    def dedup_id(self) -> str:
        return f"alert:{self.alert_id}"


class Heartbeat(Message, frozen=True, kw_only=True):
    """A node's liveness, published periodically on ``lb.health.<node>``."""

    node: str
    groups: tuple[str, ...]
    ready: bool

    overflow: ClassVar[Overflow] = Overflow.CONFLATE
    subject_root: ClassVar[str] = "lb.health"

    def subject(self) -> str:
        return f"lb.health.{self.node}"

    def conflation_key(self) -> object:
        return (Heartbeat, self.node)
