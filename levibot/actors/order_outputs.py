"""What the order actor publishes about an order: fills, closes, rejections and alerts.

One place builds each of these messages, for the paper venue and a live venue alike, so a
``Fill`` or an ``OrderClosed`` means the same whichever venue executed the order.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from levibot.execution.portfolio import Applied
from levibot.messages import (
    Alert,
    AlertLevel,
    Fill,
    Message,
    OrderAccepted,
    OrderClosed,
    OrderIntent,
    Side,
)

NOTHING_TO_SELL = "nothing to sell"
#: The exit rules' reasons: their fills also close the entry order they exit.
EXIT_REASONS = ("stop_loss", "take_profit", "time_exit")


class OrderOutputs:
    """Publishes the order actor's messages through ``publish`` (which keeps the outbox)."""

    def __init__(
        self, publish: Callable[[Message], Awaitable[None]], *, log: Any, fills: Any
    ) -> None:
        self.publish = publish
        self.log = log
        self.m_fills = fills  # the fills counter

    async def accepted(self, intent: OrderIntent, now: int) -> None:
        """The venue took ``intent``."""
        await self.publish(
            OrderAccepted(
                ts_event=intent.ts_event,
                ts_init=now,
                ts_ingress=intent.ts_ingress,
                symbol=intent.symbol,
                client_order_id=intent.client_order_id,
                side=intent.side,
                quantity=intent.quantity,
            )
        )

    async def fill(
        self, i: OrderIntent, applied: Applied, *, fill_id: str, side: Side, ts: int, now: int
    ) -> None:
        """A part (or all) of ``i`` executed and ``applied`` to the portfolio."""
        self.m_fills.inc()
        await self.publish(
            Fill(
                ts_event=ts,
                ts_init=now,
                ts_ingress=i.ts_ingress,
                symbol=i.symbol,
                fill_id=fill_id,
                client_order_id=i.client_order_id,
                side=side,
                quantity=applied.quantity,
                price=applied.price,
                fee=applied.fee,
                realized_pnl=applied.realized_pnl,
                reason=i.reason if i.reason != "exit" else "signal",
                position_after=applied.position_after,
            )
        )

    async def exited(
        self, i: OrderIntent, *, exit_price: float, realized: float, ts: int, now: int
    ) -> None:
        """An exit rule's order (``i.reason`` in ``EXIT_REASONS``) filled: close its entry."""
        await self.publish(
            OrderClosed(
                ts_event=ts,
                ts_init=now,
                ts_ingress=i.ts_ingress,
                symbol=i.symbol,
                client_order_id=i.client_order_id.rsplit(":", 1)[0],
                reason=i.reason,
                exit_price=exit_price,
                realized_pnl=realized,
            )
        )

    async def closed(
        self, i: OrderIntent, reason: str, *, realized: float, now: int, why: str = ""
    ) -> None:
        """An open order ended unfilled or part-filled (canceled, expired, …)."""
        self.log.info("order.closed", coid=i.client_order_id, reason=reason, why=why)
        await self.publish(
            OrderClosed(
                ts_event=now,
                ts_init=now,
                ts_ingress=i.ts_ingress,
                symbol=i.symbol,
                client_order_id=i.client_order_id,
                reason=reason,
                exit_price=0.0,
                realized_pnl=realized,
            )
        )

    async def rejected(self, intent: OrderIntent, now: int, why: str) -> None:
        """``intent`` could not be executed: close it, and alert unless it is routine."""
        # A reduce-only order that finds the position already gone (an exit rule closed it
        # first) is routine, not an alert: the order is closed and the risk engine told.
        routine = intent.reduce_only and intent.side is Side.SELL and why == NOTHING_TO_SELL
        log = self.log.info if routine else self.log.warning
        log("order.rejected", coid=intent.client_order_id, why=why)
        await self.publish(
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
        if not routine:
            await self.alert(
                f"order-rejected-{intent.client_order_id}",
                f"order {intent.client_order_id} rejected: {why}",
                code="ORDER_REJECTED",
                ts=intent.ts_event,
                now=now,
                ts_ingress=intent.ts_ingress,
            )

    async def alert(
        self,
        alert_id: str,
        text: str,
        *,
        code: str,
        ts: int,
        now: int,
        level: AlertLevel = AlertLevel.WARNING,
        ts_ingress: int = 0,
    ) -> None:
        """Raise an alert from the order actor."""
        await self.publish(
            Alert(
                ts_event=ts,
                ts_init=now,
                ts_ingress=ts_ingress,
                alert_id=alert_id,
                level=level,
                source="order",
                text=text,
                code=code,
            )
        )
