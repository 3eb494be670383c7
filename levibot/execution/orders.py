"""Orders open at a live venue, as the order actor keeps (and persists) them with the portfolio."""

from __future__ import annotations

import msgspec

from levibot.execution.portfolio import PortfolioState
from levibot.messages import OrderIntent

__all__ = ["OrderState", "VenueOrder"]


class VenueOrder(msgspec.Struct, kw_only=True):
    """One order sent to a venue and not yet closed there.

    ``venue_id`` is the id the venue knows it by (derived from the intent's client order id,
    so a resend is the same order); ``trades`` the venue trade ids already applied to the
    portfolio, so a fill reported twice (REST answer, user stream, reconciliation) counts once.
    """

    intent: OrderIntent
    venue_id: str
    order_id: int = 0
    status: str = "NEW"
    executed: float = 0.0
    trades: list[int] = []
    realized: float = 0.0
    placed_ns: int = 0
    adopted: bool = False  # found at the venue, not sent by us


class OrderState(PortfolioState, kw_only=True):
    """What the order actor persists: the portfolio, and the orders open at a live venue."""

    venue_orders: list[VenueOrder] = []
